"""Input lists (.txt/.lst/.parquet) and URL folder scans: the same sources, ids, names and bytes as a folder scan;
a shard job reads only its own share of a list, cut at folder boundaries."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lowlight_gpu import imageio, input_lists, manifest, pipeline, sources, storage
from lowlight_gpu.config import ConfigError, load_config
from lowlight_gpu.sources import ScanStats

from conftest import read_jsonl, write_image

pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

# Nested images, a name clash in one folder (x.jpg / x.png), undecodable files, a hidden file, a non-image.
GOOD = ["a.png", "clash/x.jpg", "clash/x.png", "clash/y.png", "sub/b.jpg", "sub/deep/c.png", "sub/d.png", "z.png"]
BAD = {"broken.png": b"\x89PNG\r\n\x1a\n not really", "sub/deep/text.jpg": b"hello"}
OTHER = {".hidden.png": b"x", "notes.md": b"# notes"}


def make_tree(folder):
    """The input folder of this module's runs."""
    folder = Path(folder)
    for i, rel in enumerate(GOOD):
        write_image(folder / rel, 19 + i, 13 + i % 4, seed=i)
    for rel, data in {**BAD, **OTHER}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def every_file(folder):
    """Every file below folder as relative ids, each folder's files together (sorted by folder, then name)."""
    folder = Path(folder)
    ids = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(ids, key=lambda rel: (os.path.dirname(rel), rel))


def dataset_files(root):
    """{relative path: bytes} of an output: images, manifest, errors, dataset.json (parts/ and reports left out)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(("parts/", "report."))}


def config(inp, out, *more):
    return load_config(None, [f"input={inp}", f"output={out}", "backend=numpy", "workers=1", *more])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("lists") / "photos")


@pytest.fixture(scope="module")
def whole(tree, tmp_path_factory):
    """A whole run of the folder: its dataset files."""
    out = tmp_path_factory.mktemp("whole") / "out"
    result = pipeline.run(config(tree, out))
    assert (result.pairs, result.errors) == (len(GOOD), len(BAD))
    files = dataset_files(out)
    assert json.loads(files["dataset.json"])["counts"]["skipped"]["hidden"] == 1
    return files


def write_text_list(path, lines):
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_parquet(path, values, column="path", row_group_size=3):
    pq.write_table(pa.table({column: values, "other": list(range(len(values)))}), path,
                   row_group_size=row_group_size)
    return path


def test_text_list_gives_the_folder_runs_bytes(tree, whole, tmp_path):
    lines = ["# every file of the folder, some written absolute", ""]
    lines += [f"  {tree / rel}  " if i % 2 else rel for i, rel in enumerate(every_file(tree))]
    lst = write_text_list(tree.parent / "photos.lst", lines)  # beside the folder: input_root is given
    out = tmp_path / "out"
    result = pipeline.run(config(lst, out, f"input_root={tree}"))
    assert (result.pairs, result.errors) == (len(GOOD), len(BAD))
    assert dataset_files(out) == whole
    rows = read_jsonl(out / "manifest.jsonl")
    assert [r["source"] for r in rows] == sorted(GOOD)
    assert {r["high"] for r in rows} >= {"high/clash/x.jpg.png", "high/clash/x.png.png"}  # the clash rule held


def test_a_list_of_absolute_paths_elsewhere_is_relative_to_their_common_folder(tree, whole, tmp_path):
    """No input_root: a list whose entries are absolute (or URLs) takes the deepest folder holding its first and
    last entry, which holds every entry of a list kept in order: the folder the same run from a scan reads."""
    lines = [str(tree / rel) for rel in every_file(tree)]
    for name, write in (("far.txt", lambda p: write_text_list(p, lines)),
                        ("far.parquet", lambda p: write_parquet(p, lines))):
        listed = write(tmp_path / "lists" / name) if (tmp_path / "lists").mkdir(exist_ok=True) is None else None
        out = tmp_path / f"out-{name}"
        result = pipeline.run(config(listed, out))
        assert (result.pairs, result.errors) == (len(GOOD), len(BAD))
        assert dataset_files(out) == whole
        assert manifest.read_run(str(out))["input_root"] == str(tree)


def test_verify_finds_a_listed_source_below_input_root(run_cli, tree, tmp_path):
    listed = write_text_list(tmp_path / "v.txt", [str(tree / "a.png"), "sub/b.jpg"])
    io = ["--set", f"input={listed}", "--set", f"input_root={tree}", "--set", f"output={tmp_path / 'out'}"]
    assert run_cli(*io).code == 0
    res = run_cli(*io, "--verify")
    assert res.code == 0, res
    (tmp_path / "out" / "high" / "a.png").write_bytes((tmp_path / "out" / "high" / "sub" / "b.png").read_bytes())
    assert run_cli(*io, "--verify").code == 1  # it really compares


def test_parquet_list_gives_the_folder_runs_bytes(tree, whole, tmp_path):
    listed = tmp_path / "list" / "files.parquet"
    listed.parent.mkdir()
    write_parquet(listed, [str(tree / rel) for rel in every_file(tree)], column="file")
    out = tmp_path / "out"
    pipeline.run(config(listed, out, f"input_root={tree}", "input_column=file"))
    assert dataset_files(out) == whole


@pytest.mark.parametrize("kind", ["txt", "parquet"])
def test_shard_jobs_over_a_list_plus_merge_equal_the_whole_run(tree, whole, tmp_path, kind):
    ids = every_file(tree)
    listed = (write_text_list(tree / "all.txt", ids) if kind == "txt"
              else write_parquet(tree / "all.parquet", ids, row_group_size=2))
    try:
        out = tmp_path / "out"
        conf = config(listed, out)
        owners = {}
        for i in (2, 0, 1):
            pipeline.run(conf, shard=(i, 3))
            for row in manifest.read_rows(out / "parts" / f"{manifest.shard_tag(i, 3)}.jsonl"):
                owners.setdefault(os.path.dirname(row["source"]), set()).add(i)
        assert all(len(jobs) == 1 for jobs in owners.values()), owners  # a folder is made by one job
        assert len(set().union(*owners.values())) > 1  # and the work was really shared
        pipeline.merge(conf)
        assert dataset_files(out) == whole
    finally:
        listed.unlink()


def fake_config(listed, root=None, output="/nowhere/out", column="path"):
    """What scan_list reads of a config."""
    return SimpleNamespace(input=str(listed), input_root=root, input_column=column, output=output,
                           storage_options=None)


def share(conf, shard):
    stats = ScanStats()
    return list(input_lists.scan_list(conf, shard, stats)), stats


def many_ids(n_folders, per_folder, seed=0):
    """Sorted ids of a big list: folders of varying sizes, with clashing names."""
    rng = random.Random(seed)
    ids = []
    for f in range(n_folders):
        k = rng.randint(1, 2 * per_folder)
        ids += [f"d{f:04d}/img{j:03d}.{'jpg' if j % 2 else 'png'}" for j in range(k)]
        ids += [f"d{f:04d}/img000.jpg"]  # clashes with img000.png
    return sorted(set(ids))


@pytest.mark.parametrize("count", [8, 64])
def test_a_jobs_reads_are_its_share_of_a_text_list(tmp_path, count):
    ids = many_ids(400, 25)
    listed = write_text_list(tmp_path / "big.txt", ids)
    size = listed.stat().st_size
    folder_bytes = {}
    for rel in ids:
        folder_bytes[os.path.dirname(rel)] = folder_bytes.get(os.path.dirname(rel), 0) + len(rel) + 1
    slack = 2 * (2 * input_lists._BACK_CHUNK + max(folder_bytes.values()))  # per cut: a look back, one folder
    seen = []
    for i in range(count):
        got, stats = share(fake_config(listed), (i, count))
        seen += [s.rel for s in got]
        assert stats.bytes_read <= size / count + slack, (i, stats.bytes_read)
        assert stats.bytes_read < size / 4
    assert sorted(seen) == ids  # every line once, in exactly one job
    whole, stats = share(fake_config(listed), (0, 1))
    assert stats.bytes_read == size and stats.lines_read == len(ids)


@pytest.mark.parametrize("count", [8, 64])
def test_a_jobs_reads_are_its_share_of_a_parquet_list(tmp_path, count):
    ids = many_ids(400, 25)
    group = 100
    listed = write_parquet(tmp_path / "big.parquet", ids, row_group_size=group)
    seen = []
    for i in range(count):
        got, stats = share(fake_config(listed), (i, count))
        seen += [s.rel for s in got]
        # whole row groups: its share, the groups its two cuts fall in, and one more for a folder past a cut
        assert stats.lines_read <= len(ids) / count + 4 * group, (i, stats.lines_read)
        assert stats.lines_read < len(ids)
    assert sorted(seen) == ids


def test_a_folders_lines_never_split_across_jobs(tmp_path):
    # One big folder in the middle of the list, whose names clash (x.jpg / x.png), cut by every job count.
    ids = sorted([f"a/{j}.png" for j in range(5)] + [f"big/x{j}.jpg" for j in range(40)] +
                 [f"big/x{j}.png" for j in range(40)] + [f"c/{j}.png" for j in range(5)])
    lines = ["# header"] + ids[:10] + ["", "  # a comment inside"] + ids[10:]
    listed = write_text_list(tmp_path / "l.txt", lines)
    parquet = write_parquet(tmp_path / "l.parquet", ids, row_group_size=7)
    whole, _ = share(fake_config(listed), (0, 1))
    for path in (listed, parquet):
        for count in range(1, 9):
            owner, names = {}, {}
            for i in range(count):
                for src in share(fake_config(path), (i, count))[0]:
                    owner.setdefault(os.path.dirname(src.rel), set()).add(i)
                    names[src.rel] = src.out_rel
            assert all(len(jobs) == 1 for jobs in owner.values()), (path.name, count, owner)
            assert names == {s.rel: s.out_rel for s in whole}  # the names of a whole run's scan
            assert len(set(names.values())) == len(names)  # x.jpg and x.png never share a name
    assert {s.out_rel for s in whole} >= {"big/x0.jpg.png", "big/x0.png.png"}


def test_a_cut_is_a_line_start_and_a_folder_boundary():
    ids = [b"a/1.png\n", b"a/2.png\n", b"# c\n", b"a/3.png\n", b"b/1.png\n", b"b/2.png\n"]
    data = b"".join(ids)
    stats = ScanStats()

    class File:
        pos = 0

        def seek(self, pos, whence=0):
            self.pos = pos

        def read(self, n):
            out = data[self.pos:self.pos + n]
            self.pos += len(out)
            return out

        def readline(self):
            end = data.find(b"\n", self.pos)
            end = len(data) if end < 0 else end + 1
            out = data[self.pos:end]
            self.pos = end
            return out

    def key(v):
        return input_lists.folder_key(v, "/r")

    f = input_lists._Counted(File(), stats)
    b_start = data.index(b"b/1.png")
    for pos in range(1, b_start + 1):  # anywhere in folder a (a comment line too): the cut is where b starts
        assert input_lists.text_cut(f, len(data), pos, key) == b_start
    for pos in range(b_start + 1, len(data) + 1):
        assert input_lists.text_cut(f, len(data), pos, key) == len(data)
    assert input_lists.text_cut(f, len(data), 0, key) == 0


def test_lines_outside_input_root_duplicates_and_missing_files(tree, tmp_path):
    elsewhere = write_image(tmp_path / "elsewhere" / "e.png", 9, 9)
    lines = ["a.png", "a.png", str(tree / "a.png"), "./sub/../a.png",  # one source, listed four ways
             "z.png", str(elsewhere), "../escape.png", "s3://bucket/x.jpg", "missing/gone.png"]
    listed = write_text_list(tmp_path / "mixed.txt", lines)
    out = tmp_path / "out"
    result = pipeline.run(config(listed, out, f"input_root={tree}"))
    assert (result.pairs, result.errors) == (2, 4)  # nothing crashed
    assert [r["source"] for r in read_jsonl(out / "manifest.jsonl")] == ["a.png", "z.png"]
    errors = {e["source"]: e["error"] for e in read_jsonl(out / "errors.jsonl")}
    outside = [str(elsewhere), "../escape.png", "s3://bucket/x.jpg"]
    assert set(errors) == {input_lists.outside_id(k) for k in outside} | {"missing/gone.png"}
    for line in outside:
        assert errors[input_lists.outside_id(line)].startswith(f"'{line}': listed path is outside input_root")
    assert errors["missing/gone.png"].startswith("cannot read file")


def test_the_lists_folder_is_the_default_root_and_run_json_records_it(tree, tmp_path):
    listed = write_text_list(tree / "sub" / "here.txt", ["b.jpg", "deep/c.png"])
    try:
        out = tmp_path / "out"
        pipeline.run(config(listed, out))
        assert [r["source"] for r in read_jsonl(out / "manifest.jsonl")] == ["b.jpg", "deep/c.png"]
        assert manifest.read_run(str(out))["input_root"] == str(tree / "sub")
        with pytest.raises(ConfigError, match=r"^input_root: .*relative to '.*sub'"):
            pipeline.run(config(listed, out, f"input_root={tree}"))  # other ids: refused like another input
    finally:
        listed.unlink()


def test_crlf_lines_and_a_byte_order_mark(tmp_path):
    listed = tmp_path / "w.txt"
    listed.write_bytes(b"\xef\xbb\xbfa/x.png\r\n  b/y.jpg \r\n\r\n# c/z.png\r\n")
    assert [s.rel for s in share(fake_config(listed), (0, 1))[0]] == ["a/x.png", "b/y.jpg"]


def test_list_skip_rules(tmp_path):
    listed = write_text_list(tmp_path / "s.txt", ["a.png", ".h.png", "d/.h/x.png", "n.txt", "p.heic", "out/x.png"])
    got, stats = share(fake_config(listed, output=str(tmp_path / "out")), (0, 1))
    heif = imageio.is_image_name("p.heic")  # pillow-heif installed
    assert [s.rel for s in got] == ["a.png"] + (["p.heic"] if heif else [])
    counts = dict(stats.counts)
    assert counts["hidden"] == 2 and counts["not_image"] == 1 and counts["output_folder"] == 1
    assert counts["needs_heif"] == (0 if heif else 1)


def test_parquet_needs_pyarrow_and_a_known_column(tree, tmp_path, monkeypatch):
    listed = write_parquet(tmp_path / "p.parquet", ["a.png"])
    with pytest.raises(ConfigError, match=r"^input_column: 'nope' is not a column"):
        list(input_lists.scan_list(fake_config(listed, str(tree), column="nope")))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"^input: '.*broken.parquet' is not a Parquet file"):
        list(input_lists.scan_list(fake_config(broken, str(tree))))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError) as exc:
        config(listed, tmp_path / "out")
    assert "pip install 'lowlight-gpu[parquet]'" in str(exc.value) and "\n" not in str(exc.value)


def test_list_keys_with_a_folder_input_are_refused(tree, tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'input_root' applies to an input list only"):
        config(tree, tmp_path / "out", f"input_root={tree}")
    with pytest.raises(ConfigError, match=r"^config key 'input_column' applies to an input list only"):
        config(tree, tmp_path / "out", "input_column=file")
    assert config(tree, tmp_path / "out", "input_column=path").input_column == "path"  # the default is fine


def test_a_missing_list_or_another_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^input: list '.*nope.txt' does not exist"):
        config(tmp_path / "nope.txt", tmp_path / "out")
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"^input: .*is a file, not a folder"):
        config(other, tmp_path / "out")


def test_a_shard_of_a_list_removes_nothing_a_whole_run_removes_gone_pairs(tree, tmp_path):
    listed = write_text_list(tmp_path / "r.txt", ["a.png", "z.png", "sub/d.png"])
    conf = config(listed, tmp_path / "sharded", f"input_root={tree}")
    whole = config(listed, tmp_path / "whole", f"input_root={tree}")
    for i in range(2):
        pipeline.run(conf, shard=(i, 2))
    pipeline.merge(conf)
    pipeline.run(whole)
    write_text_list(listed, ["a.png", "sub/d.png"])  # z.png is gone from the list
    for i in range(2):
        assert pipeline.run(conf, shard=(i, 2)).removed == 0
    pipeline.merge(conf)
    assert [r["source"] for r in read_jsonl(tmp_path / "sharded" / "manifest.jsonl")] == ["a.png", "sub/d.png"]
    assert (tmp_path / "sharded" / "high" / "z.png").exists()  # left in place: a shard cannot know it was its own
    assert pipeline.run(whole).removed > 0
    assert not (tmp_path / "whole" / "high" / "z.png").exists()


# ---------------------------------------------------------------- URL folder scans (a fake store)


def fake_store(monkeypatch, root):
    """storage.listing / read_url / stat_url answering for s3://BUCKET/KEY from the local file root/BUCKET/KEY."""
    calls = []

    def local(u):
        return Path(root) / storage.strip(u)

    def listing(u, options=None):
        calls.append(u)
        top = local(u)
        return sorted((p.relative_to(top).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in top.rglob("*") if p.is_file())

    monkeypatch.setattr(storage, "listing", listing)
    monkeypatch.setattr(storage, "read_url", lambda u, options=None: local(u).read_bytes())
    monkeypatch.setattr(storage, "stat_url", lambda u, options=None: (local(u).stat().st_size,
                                                                         local(u).stat().st_mtime_ns))
    return calls


def tricky_tree(folder):
    """A tree with every skip rule an object store can show."""
    folder = make_tree(folder)
    for rel in ("nested/parts/run.json", "nested/high/q.png", ".cache/h.png", "theirs/dataset.json",
                "ours/dataset.json", "ours/high/o.png", "out/high/p.png", "pic.heic", "a/b/c.png", "a-b.png",
                "a.b/x.png", "Clash/X.JPG", "Clash/x.png"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    (folder / "theirs" / "dataset.json").write_text('{"name": "another tool"}')
    (folder / "theirs" / "t.png").write_bytes(b"x")
    (folder / "ours" / "dataset.json").write_text('{"name": "lowlight_gpu dataset"}')
    return folder


def test_a_folder_scan_counts_what_it_read_in_every_shard(tmp_path):
    for rel in ("x.png", "a/y.png", "a/b/z.png", "a/b/n.txt", "c/w.png", ".h/v.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")  # listed, never opened
    for shard in ((0, 1), (1, 4)):
        stats = ScanStats()
        list(sources.scan(str(tmp_path), shard, stats=stats))
        # root, a, a/b, c (the hidden folder is seen, not listed); entries: root 4, a 2, a/b 2, c 1
        assert (stats.folders_listed, stats.entries_seen) == (4, 9)


def test_a_url_scan_equals_the_local_scan(tmp_path, monkeypatch):
    bucket = tmp_path / "bucket"
    tree = tricky_tree(bucket / "photos")
    url = "s3://bucket/photos"
    calls = fake_store(monkeypatch, tmp_path)
    for shard in ((0, 1), (1, 3)):
        local_stats, url_stats = ScanStats(), ScanStats()
        local = list(sources.scan(str(tree), shard, skip=[str(tree / "out")], stats=local_stats))
        remote = list(sources.scan(url, shard, skip=[url + "/out"], stats=url_stats))
        assert [(s.rel, s.out_rel, s.error) for s in remote] == [(s.rel, s.out_rel, s.error) for s in local]
        assert all(s.path == f"{url}/{s.rel}" for s in remote)
        assert [s.stat for s in remote] == [(os.stat(s.path).st_size, os.stat(s.path).st_mtime_ns) for s in local]
        assert url_stats.counts == local_stats.counts and url_stats.found == local_stats.found
        assert url_stats.heif_names == local_stats.heif_names
        assert url_stats.folders_listed == 1 and local_stats.folders_listed > 5
    assert calls == [url, url]  # one listing per scan, no request per object
    assert local_stats.counts["output_folder"] == 3 and local_stats.counts["hidden"] >= 2


def test_a_run_from_a_url_equals_the_local_run(tree, whole, tmp_path, monkeypatch):
    fake_store(monkeypatch, tree.parent.parent)
    url = f"s3://{tree.parent.name}/{tree.name}"
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (_ for _ in ()).throw(AssertionError(p))
                        if str(p).startswith("s3://") else real_stat(p, *a, **k))
    out = tmp_path / "out"
    result = pipeline.run(config(url, out))
    assert (result.pairs, result.errors) == (len(GOOD), len(BAD))
    files = dataset_files(out)
    assert files == whole
    again = pipeline.run(config(url, out))  # resume: the listing's stat matches the rows'
    assert again.skipped == len(GOOD)


def test_a_list_of_urls_equals_the_local_run(tree, whole, tmp_path, monkeypatch):
    fake_store(monkeypatch, tree.parent.parent)
    url = f"s3://{tree.parent.name}/{tree.name}"
    listed = write_text_list(tmp_path / "urls.txt", [f"{url}/{rel}" for rel in every_file(tree)])
    out = tmp_path / "out"
    conf = config(listed, out, f"input_root={url}")
    pipeline.run(conf)
    assert dataset_files(out) == whole
    assert pipeline.run(conf).skipped == len(GOOD)  # resume by stat_url


def test_a_url_source_decodes_from_its_bytes_on_the_gpu_too(tmp_path, monkeypatch):
    import test_decode_gpu  # its stand-in nvImageCodec
    from lowlight_gpu import decode_gpu

    mod = test_decode_gpu._fake_nvimgcodec()
    monkeypatch.setitem(sys.modules, "nvidia", SimpleNamespace(nvimgcodec=mod))
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", mod)
    monkeypatch.setattr(decode_gpu, "_MODULE", [])
    monkeypatch.setattr(decode_gpu, "_LOCAL", type(decode_gpu._LOCAL)())
    jpg = write_image(tmp_path / "b" / "p" / "x.jpg", 12, 9)
    png = write_image(tmp_path / "b" / "p" / "y.png", 12, 9)
    fake_store(monkeypatch, tmp_path)
    gpu = SimpleNamespace(decode=SimpleNamespace(device="gpu", color="convert"), max_pixels=10**8,
                          storage_options=None)
    got = pipeline.decode_source("s3://b/p/x.jpg", gpu)
    assert isinstance(got, decode_gpu.GpuDecoded) and mod.calls == [jpg.stat().st_size]
    assert np.array_equal(got.rgb, decode_gpu.decode(jpg, 10**8).rgb)
    other = pipeline.decode_source("s3://b/p/y.png", gpu)  # not a JPEG: the CPU, as for a local file
    assert not isinstance(other, decode_gpu.GpuDecoded) and np.array_equal(other.rgb, imageio.decode(png, 10**8).rgb)


# ---------------------------------------------------------------- a real S3 server (SeaweedFS, conftest's s3_env)


def upload(folder, url):
    """Put every file below folder at url/REL, one PUT each; returns url."""
    fs = storage.filesystem(url)
    for p in Path(folder).rglob("*"):
        if p.is_file():
            fs.pipe_file(storage.strip(url) + "/" + p.relative_to(folder).as_posix(), p.read_bytes())
    return url


def test_a_bucket_scan_equals_the_local_scan(s3_env, tmp_path):
    tree = tricky_tree(tmp_path / "photos")
    url = upload(tree, f"s3://{s3_env.bucket()}/photos")
    for shard in ((0, 1), (2, 3)):
        local_stats, url_stats = ScanStats(), ScanStats()
        local = list(sources.scan(str(tree), shard, skip=[str(tree / "out")], stats=local_stats))
        remote = list(sources.scan(url, shard, skip=[url + "/out"], stats=url_stats))
        assert [(s.rel, s.out_rel, s.error) for s in remote] == [(s.rel, s.out_rel, s.error) for s in local]
        assert [s.stat[0] for s in remote] == [os.path.getsize(s.path) for s in local]
        assert all(s.stat[1] > 0 for s in remote)  # the store's last-modified time
        assert url_stats.counts == local_stats.counts and url_stats.found == local_stats.found


def test_a_run_from_a_bucket_equals_the_local_run(s3_env, tree, whole, tmp_path):
    url = upload(tree, f"s3://{s3_env.bucket()}/photos")
    out = tmp_path / "out"
    result = pipeline.run(config(url, out))
    assert (result.pairs, result.errors) == (len(GOOD), len(BAD))
    assert dataset_files(out) == whole
    assert pipeline.run(config(url, out)).skipped == len(GOOD)  # resume: the listing's stat is the rows'


def test_sharded_jobs_over_a_url_list_on_the_bucket_equal_the_local_run(s3_env, tree, whole, tmp_path):
    bucket = s3_env.bucket()
    url = upload(tree, f"s3://{bucket}/photos")
    listed = f"s3://{bucket}/lists/photos.txt"
    storage.filesystem(listed).pipe_file(storage.strip(listed), "".join(
        f"{url}/{rel}\n" for rel in every_file(tree)).encode())
    out = tmp_path / "out"
    conf = config(listed, out)  # no input_root: the common folder of the listed URLs, s3://bucket/photos
    for i in range(2):
        pipeline.run(conf, shard=(i, 2))
    pipeline.merge(conf)
    assert dataset_files(out) == whole
    assert sum(pipeline.run(conf, shard=(i, 2)).skipped for i in range(2)) == len(GOOD)  # resume by stat_url


def test_a_url_list_sources_and_output_all_on_the_bucket_shard_merge_and_verify(s3_env, run_cli, tree, whole):
    from test_object_storage import bucket_bytes

    bucket = s3_env.bucket()
    url = upload(tree, f"s3://{bucket}/photos")
    listed = f"s3://{bucket}/lists/photos.lst"
    storage.filesystem(listed).pipe_file(storage.strip(listed), "".join(
        f"{url}/{rel}\n" for rel in every_file(tree)).encode())
    io = ["--set", f"input={listed}", "--set", f"input_root={url}", "--set", f"output=s3://{bucket}/out",
          "--set", "workers=1"]
    for i in range(2):
        assert run_cli(*io, "--shard", f"{i}/2").code == 3  # the undecodable files are errors rows
    assert run_cli(*io, "--merge").code == 3
    assert bucket_bytes(f"s3://{bucket}/out") == {k: v for k, v in whole.items() if k != "meta_info.txt"}
    verified = run_cli(*io, "--verify")
    assert verified.code == 0 and "all match" in verified.out, verified


def test_a_job_fetches_about_its_share_of_a_list_on_the_bucket(s3_env):
    count, block = 8, input_lists._URL_CHUNK
    lines = [f"{'folder-with-a-long-name-' * 3}{f:05d}/img{j:02d}.png" for f in range(2000) for j in range(40)]
    body = "".join(line + "\n" for line in lines).encode()
    listed = f"s3://{s3_env.bucket()}/big.txt"
    storage.filesystem(listed).pipe_file(storage.strip(listed), body)
    assert len(body) > 24 * block
    for i in (0, 5):
        got, stats = share(fake_config(listed, root="s3://elsewhere/photos"), (i, count))
        assert stats.bytes_read <= len(body) / count + 2 * (2 * input_lists._BACK_CHUNK + 40 * 90)
        # ranged GETs of whole chunks: its share, and about two chunks at each cut
        assert 0 < stats.bytes_fetched <= len(body) / count + 6 * input_lists._URL_CHUNK, stats.bytes_fetched
        assert stats.bytes_fetched < len(body) / 3
        assert len(got) == pytest.approx(len(lines) / count, rel=0.1)


def test_a_parquet_list_on_the_bucket_gives_the_local_lists_shares(s3_env, tmp_path):
    ids = many_ids(60, 10)
    local = write_parquet(tmp_path / "l.parquet", ids, row_group_size=50)
    listed = f"s3://{s3_env.bucket()}/l.parquet"
    storage.filesystem(listed).pipe_file(storage.strip(listed), local.read_bytes())
    for shard in ((0, 1), (1, 4), (3, 4)):
        here, here_stats = share(fake_config(local, root="/photos"), shard)
        there, there_stats = share(fake_config(listed, root="/photos"), shard)
        assert [(s.rel, s.out_rel) for s in there] == [(s.rel, s.out_rel) for s in here]
        assert there_stats.lines_read == here_stats.lines_read and there_stats.bytes_fetched > 0
