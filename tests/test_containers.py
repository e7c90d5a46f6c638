"""save.container: WebDataset tar shards and BasicSR LMDBs hold the files output's pixels, read back every way."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlight_gpu import PairDataset, containers
from lowlight_gpu.containers import readers, tars

from conftest import REPO_ROOT, read_jsonl, write_image

lmdb = pytest.importorskip("lmdb", reason="the lmdb extra is not installed")

IMAGES = {"a.png": (37, 23), "b.jpg": (20, 31), "d/c.png": (17, 9), "x.jpg": (8, 8), "x.png": (9, 9),
          "e/f g.png": (12, 7)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of small images: nested, a space in a name, two sources sharing a stem, one with alpha."""
    folder = tmp_path_factory.mktemp("containers") / "in"
    for i, (name, (w, h)) in enumerate(sorted(IMAGES.items())):
        write_image(folder / name, w, h, seed=i)
    write_image(folder / "z_alpha.png", 11, 13, mode="RGBA", seed=99)
    return folder


def generate(run_cli, inputs, out, *sets, code=0):
    """One CLI run into out with extra --set items; asserts its exit code."""
    args = ["--set", f"input={inputs}", "--set", f"output={out}", "--set", "workers=1"]
    for item in sets:
        args += ["--set", item]
    res = run_cli(*args)
    assert res.code == code, res
    return res


def run_pipeline(inputs, out, *sets, shard=(0, 1)):
    """pipeline.run in this process (no CLI, no end report); returns the RunResult."""
    from lowlight_gpu import pipeline
    from lowlight_gpu.config import load_config

    config = load_config(None, [f"input={inputs}", f"output={out}", "workers=1", "backend=numpy", *sets])
    return pipeline.run(config, shard=shard)


def merge_pipeline(inputs, out, *sets):
    """pipeline.merge in this process."""
    from lowlight_gpu import pipeline
    from lowlight_gpu.config import load_config

    return pipeline.merge(load_config(None, [f"input={inputs}", f"output={out}", "workers=1", *sets]))


def decode(data):
    """PNG bytes -> array in their stored mode."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()


@pytest.fixture(scope="module")
def files_run(tmp_path_factory, inputs):
    """(output folder, {source: manifest row}) of a files run of the inputs, clean low images saved."""
    out = tmp_path_factory.mktemp("files") / "out"
    assert run_pipeline(inputs, out, "save.clean_low=true").errors == 0
    rows = read_jsonl(out / "manifest.jsonl")
    return out, {r["source"]: r for r in rows}


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("name", ["a.png", "d/c.png", "x.jpg.png", "e/f g.png", "ü/naïve.png", "a%2E.png"])
def test_key_has_no_dot_is_ascii_and_gives_the_name_back(name):
    key = containers.sample_key(name)
    assert "." not in key and key.isascii() and " " not in key
    assert containers.out_rel_of(key) == name


def test_distinct_names_give_distinct_keys():
    names = ["x.jpg.png", "x.png.png", "x_2Ejpg.png", "x%2Ejpg.png", "X.jpg.png"]
    assert len({containers.sample_key(n) for n in names}) == len(names)


# ---------------------------------------------------------------- webdataset


@pytest.fixture(scope="module")
def wds_run(tmp_path_factory, inputs):
    """A webdataset run of the same inputs, 3 pairs per shard, clean low images saved."""
    out = tmp_path_factory.mktemp("wds") / "out"
    assert run_pipeline(inputs, out, "save.clean_low=true", "save.container=webdataset",
                        "save.shard_pairs=3").errors == 0
    return out


def test_webdataset_shards_hold_whole_deterministic_samples(wds_run, files_run):
    out = wds_run
    files_out, files_rows = files_run
    rows = read_jsonl(out / "manifest.jsonl")
    assert [r["source"] for r in rows] == sorted(files_rows)
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["data-000000.tar", "data-000001.tar", "data-000002.tar"]  # 7 pairs, 3 per shard
    assert [r["shard"] for r in rows] == [f"shards/data-{i // 3:06d}.tar" for i in range(len(rows))]
    info = json.loads((out / "dataset.json").read_text())["container"]
    assert info["type"] == "webdataset" and info["shards"]["data"]["urls"] == "shards/data-{000000..000002}.tar"
    for row in rows:
        with tarfile.open(out / row["shard"]) as tar:
            members = {m.name: m for m in tar.getmembers()}
            key = row["key"]
            assert [n for n in members if n.startswith(key + ".")] == \
                [f"{key}.high.png", f"{key}.low.png", f"{key}.low_clean.png", f"{key}.json"]
            for m in members.values():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)
            assert json.loads(tar.extractfile(f"{key}.json").read()) == {k: v for k, v in row.items() if k != "shard"}
            want = files_rows[row["source"]]
            for field in ("high", "low", "clean_low"):
                assert row[field] == f"{key}.{ {'clean_low': 'low_clean'}.get(field, field) }.png"
                got = decode(tar.extractfile(row[field]).read())
                np.testing.assert_array_equal(got, decode((files_out / want[field]).read_bytes()))
    assert (out / "shards" / "data-000000.tar").stat().st_size % tarfile.RECORDSIZE == 0
    assert not list((out / "parts").glob("*.seg-*"))  # the staging segments are spent


def test_webdataset_reads_the_shards(wds_run, files_run):
    wds = pytest.importorskip("webdataset")
    files_out, files_rows = files_run
    urls = [str(p) for p in sorted((wds_run / "shards").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    rows = read_jsonl(wds_run / "manifest.jsonl")
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    for s, row in zip(samples, rows):
        assert set(s) >= {"high.png", "low.png", "low_clean.png", "json"}
        np.testing.assert_array_equal(decode(s["low.png"]), decode((files_out / files_rows[row["source"]]["low"])
                                                                   .read_bytes()))


def test_pair_dataset_gives_the_files_samples(wds_run, files_run):
    files_ds, tar_ds = PairDataset(files_run[0]), PairDataset(wds_run)
    assert len(files_ds) == len(tar_ds) == len(IMAGES) + 1
    for i in range(len(files_ds)):
        for a, b in zip(files_ds[i], tar_ds[i]):
            np.testing.assert_array_equal(a, b)


def test_verify_and_preview_read_the_shards(run_cli, inputs, wds_run):
    res = run_cli("--set", f"input={inputs}", "--set", f"output={wds_run}", "--verify", "--preview")
    assert res.code == 0, res
    assert "7 of 7 rows replayed, 21 files compared: all match" in res.out
    assert (wds_run / "preview.png").is_file()


def test_a_damaged_member_fails_verify(run_cli, inputs, wds_run, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(wds_run, out)
    row = read_jsonl(out / "manifest.jsonl")[0]
    with tarfile.open(out / row["shard"]) as tar:
        m = tar.getmember(row["low"])
    data = bytearray((out / row["shard"]).read_bytes())
    good = decode(bytes(data[m.offset_data:m.offset_data + m.size]))
    # A flat image of the same size compresses to far fewer bytes than the member, so it always fits in place.
    bad = np.zeros_like(good)
    assert not np.array_equal(bad, good)
    buf = io.BytesIO()
    Image.fromarray(bad).save(buf, format="PNG", compress_level=9)
    assert len(buf.getvalue()) <= m.size, (len(buf.getvalue()), m.size)
    # Same length, different pixels: the tar stays readable, only the image differs.
    data[m.offset_data:m.offset_data + m.size] = buf.getvalue().ljust(m.size, b"\0")
    (out / row["shard"]).write_bytes(bytes(data))
    res = run_cli("--set", f"input={inputs}", "--set", f"output={out}", "--verify")
    assert res.code == 1 and f"{row['shard']}:{row['low']}" in res.out, res


# ---------------------------------------------------------------- lmdb


@pytest.fixture(scope="module")
def lmdb_run(tmp_path_factory, inputs):
    """An lmdb run of the same inputs, clean low images saved."""
    out = tmp_path_factory.mktemp("lmdb") / "out"
    assert run_pipeline(inputs, out, "save.clean_low=true", "save.container=lmdb").errors == 0
    return out


def lmdb_items(path):
    """{key: value} of a database, opened the way BasicSR's FileClient opens it."""
    readers.release(path)  # this process may hold it open already (an LMDB allows one handle per process)
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin(write=False) as txn:
            return {bytes(k).decode("ascii"): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def test_lmdb_is_basicsr_layout_with_the_files_pixels(lmdb_run, files_run):
    files_out, files_rows = files_run
    rows = read_jsonl(lmdb_run / "manifest.jsonl")
    assert sorted(p.name for p in lmdb_run.glob("*.lmdb")) == ["high.lmdb", "low.lmdb", "low_clean.lmdb"]
    for db in ("high", "low", "low_clean"):
        folder = lmdb_run / f"{db}.lmdb"
        assert sorted(p.name for p in folder.iterdir()) == ["data.mdb", "lock.mdb", "meta_info.txt"]
        items = lmdb_items(folder)
        assert sorted(items) == sorted(r["key"] for r in rows)
        lines = (folder / "meta_info.txt").read_text().splitlines()
        assert lines == [f"{r['key']}.png ({r['height']},{r['width']},{4 if r.get('alpha') else 3}) 1" for r in rows]
        # BasicSR's paired_paths_from_lmdb: the key is the text before the line's first dot.
        assert [line.split(".")[0] for line in lines] == [r["key"] for r in rows]
        field = {"low_clean": "clean_low"}.get(db, db)
        readers.release(folder)
        env = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False)
        with env.begin(write=False) as txn:
            for r in rows:
                assert r[field] == f"{db}.lmdb"
                got = decode(txn.get(r["key"].encode()))
                np.testing.assert_array_equal(got, decode((files_out / files_rows[r["source"]][field]).read_bytes()))
        env.close()


def test_lmdb_reads_back_through_every_tool(run_cli, inputs, lmdb_run, files_run):
    files_ds, db_ds = PairDataset(files_run[0]), PairDataset(lmdb_run)
    assert len(db_ds) == len(files_ds)
    for i in range(len(files_ds)):
        for a, b in zip(files_ds[i], db_ds[i]):
            np.testing.assert_array_equal(a, b)
    res = run_cli("--set", f"input={inputs}", "--set", f"output={lmdb_run}", "--verify", "--preview")
    assert res.code == 0 and "all match" in res.out, res


def test_files_container_writes_basicsr_meta_info(files_run):
    out, rows = files_run
    lines = (out / "meta_info.txt").read_text().splitlines()
    # The flat names; nested ones (d/c.png, e/f g.png) BasicSR cannot pair (it looks up low/ by the last component).
    names = [r["high"][len("high/"):] for r in rows.values() if "/" not in r["high"][len("high/"):]]
    assert [line.split(" (")[0] for line in lines] == names
    assert all((out / "high" / n).is_file() and (out / "low" / n).is_file() for n in names)


def test_lmdb_progressive_all_gives_one_database_per_step(run_cli, inputs, tmp_path):
    out = tmp_path / "out"
    run_pipeline(inputs, out, "save.container=lmdb", "progressive.enabled=true", "progressive.steps=3",
                 "progressive.save=all", "noise.model=none")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.lmdb")) == \
        ["high.lmdb", "low/t01.lmdb", "low/t02.lmdb", "low/t03.lmdb"]
    row = read_jsonl(out / "manifest.jsonl")[0]
    assert [s["path"] for s in row["steps"]] == ["low/t01.lmdb", "low/t02.lmdb", "low/t03.lmdb"]
    assert row["low"] == "low/t03.lmdb"
    assert (out / "low" / "t02.lmdb" / "meta_info.txt").read_text().startswith(f"{row['key']}.png (")
    res = run_cli("--set", f"input={inputs}", "--set", f"output={out}", "--verify")
    assert res.code == 0, res


# ---------------------------------------------------------------- shards + merge, reruns


def tree(root, folder):
    """{relative path: bytes} of every file under root/folder (LMDB's lock.mdb, its reader table, left out)."""
    base = Path(root)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted((base / folder).rglob("*"))
            if p.is_file() and p.name != "lock.mdb"}


def lmdb_sets(root):
    """{database: {key: value}} of every LMDB under root."""
    return {p.relative_to(root).as_posix(): lmdb_items(p) for p in sorted(Path(root).rglob("*.lmdb"))}


@pytest.mark.parametrize("container", ["webdataset", "lmdb"])
def test_two_shards_plus_merge_equal_a_whole_run(run_cli, inputs, tmp_path, container):
    # global: one tar sequence over the dataset, built by --merge (tests/test_job_tars.py: each job's own)
    sets = [f"save.container={container}", "save.shard_pairs=2", "split={train: 0.6, val: 0.4}",
            "save.tar_boundaries=global"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_pipeline(inputs, whole, *sets)
    for i in range(2):
        assert run_pipeline(inputs, parts, *sets, shard=(i, 2)).errors == 0
    assert list((parts / "parts").glob("*.seg-*.tar"))  # staged until the merge
    merge_pipeline(inputs, parts, *sets)
    assert (parts / "manifest.jsonl").read_bytes() == (whole / "manifest.jsonl").read_bytes()
    assert not list((parts / "parts").glob("*.seg-*.tar"))
    again = run_pipeline(inputs, parts, *sets, shard=(0, 2))  # a shard rerun after the merge finds its pairs
    assert again.skipped == again.pairs > 0
    merge_pipeline(inputs, parts, *sets)
    assert (parts / "manifest.jsonl").read_bytes() == (whole / "manifest.jsonl").read_bytes()
    if container == "webdataset":
        shards = tree(whole, "shards")
        assert len(shards) >= 3 and {n.split("/")[1].split("-")[0] for n in shards} == {"train", "val"}
        assert tree(parts, "shards") == shards
    else:
        assert lmdb_sets(parts) == lmdb_sets(whole) and lmdb_sets(whole)
        for db in ("train/high.lmdb", "val/low.lmdb"):
            assert (parts / db / "meta_info.txt").read_bytes() == (whole / db / "meta_info.txt").read_bytes()


@pytest.mark.parametrize("container", ["webdataset", "lmdb"])
def test_a_rerun_changes_no_file_and_a_damaged_sample_is_redone(inputs, tmp_path, container):
    out = tmp_path / "out"
    sets = [f"save.container={container}", "save.shard_pairs=3"]
    run_pipeline(inputs, out, *sets)
    folder = "shards" if container == "webdataset" else "low.lmdb"
    before = tree(out, folder)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / folder).rglob("*") if p.name != "lock.mdb"}
    assert run_pipeline(inputs, out, *sets).skipped == 7
    assert tree(out, folder) == before
    assert {p: p.stat().st_mtime_ns for p in (out / folder).rglob("*") if p.name != "lock.mdb"} == mtimes
    if container == "webdataset":
        shard = out / "shards" / "data-000001.tar"
        shard.write_bytes(shard.read_bytes()[:2000])  # a torn shard: its samples are redone
        assert run_pipeline(inputs, out, *sets).skipped == 4
        assert tree(out, folder) == before


def test_killed_staging_is_never_referenced(tmp_path):
    """A segment's torn tail (a sample cut by SIGKILL) fails the check; whole samples before it pass."""
    root = tmp_path
    (root / "parts").mkdir()
    store = tars.TarStaging(str(root), (0, 1), 10)
    rows = []
    for i in range(3):
        row = {"source": f"s{i}", "key": f"k{i}", "_state": {"source": [1, 1], "files": {}},
               containers.PAYLOAD: [(f"k{i}.high.png", bytes([i]) * 700, None)]}
        rows += store.put(row)
    store.abandon()  # killed: no trailer
    seg = root / rows[0]["_state"]["at"][0]
    seg.write_bytes(seg.read_bytes()[:-500])  # the last sample's data is torn
    assert [tars.sample_intact(str(root), r, True) for r in rows] == [True, True, False]


# ---------------------------------------------------------------- bad input


def test_missing_lmdb_extra_is_one_line_and_writes_nothing(run_cli, inputs, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lmdb", None)  # import lmdb raises ImportError
    out = tmp_path / "out"
    res = generate(run_cli, inputs, out, "save.container=lmdb", code=2)
    assert res.err.strip().splitlines() == [f"lowlight-gpu: error: {containers.LMDB_MISSING}"]
    assert not out.exists()


def test_shard_size_zero_is_refused(run_cli, inputs, tmp_path):
    out = tmp_path / "out"
    res = generate(run_cli, inputs, out, "save.container=webdataset", "save.shard_pairs=0", code=2)
    assert "save.shard_pairs" in res.err and ">= 1" in res.err and len(res.err.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------- kill and resume


KILL_IMAGES = 12


@pytest.fixture(scope="module")
def kill_inputs(tmp_path_factory):
    """(input folder, config file): 12 images, PNG level 9 so a run lasts long enough to be killed mid-way."""
    base = tmp_path_factory.mktemp("kill")
    for i in range(KILL_IMAGES):
        write_image(base / "in" / f"d{i % 2}" / f"img{i:02d}.png", 64, 48, seed=i)
    cfg = base / "config.yaml"
    cfg.write_text("backend: numpy\nworkers: 1\nsave:\n  compress_level: 9\n  shard_pairs: 4\n")
    return base / "in", cfg


@pytest.fixture(scope="module")
def clean_runs(kill_inputs, tmp_path_factory):
    """clean_runs(container): the output folder of an uninterrupted run (made once per container)."""
    made = {}

    def get(container):
        if container not in made:
            made[container] = tmp_path_factory.mktemp(f"clean-{container}") / "out"
            run_pipeline(kill_inputs[0], made[container], f"save.container={container}", "save.compress_level=9",
                         "save.shard_pairs=4")
        return made[container]

    return get


def _journal_rows(out):
    """Complete rows in the journals of the whole-run shard."""
    return sum(p.read_bytes().count(b"\n") for p in Path(out, "parts").glob("shard-00000-of-00001.journal-*.jsonl"))


KILL_MOMENTS = {
    ("webdataset", "mid-run"): lambda out: _journal_rows(out) >= 6,
    ("webdataset", "assembling"): lambda out: Path(out, "parts", "shard-00000-of-00001.jsonl").exists(),
    ("lmdb", "mid-run"): lambda out: Path(out, "low.lmdb", "data.mdb").exists(),
}


@pytest.mark.parametrize("container,moment", sorted(KILL_MOMENTS))
def test_sigkill_then_rerun_equals_a_clean_run(kill_inputs, clean_runs, tmp_path, container, moment):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT

    inp, cfg = kill_inputs
    sets = [f"save.container={container}", "save.compress_level=9", "save.shard_pairs=4"]
    clean, out = clean_runs(container), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "generate.py"), "--config", str(cfg), "--quiet",
                             "--set", f"input={inp}", "--set", f"output={out}", "--set", sets[0]],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not KILL_MOMENTS[container, moment](out):
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if moment == "mid-run":
        assert proc.returncode == -signal.SIGKILL and not (out / "manifest.jsonl").exists()
    result = run_pipeline(inp, out, *sets)
    assert result.errors == 0 and result.pairs == KILL_IMAGES
    assert (out / "manifest.jsonl").read_bytes() == (clean / "manifest.jsonl").read_bytes()
    assert not list((out / "parts").glob("*.seg-*")) and not list(out.rglob(".*.tmp"))
    if container == "webdataset":
        assert tree(out, "shards") == tree(clean, "shards") and len(tree(clean, "shards")) == 3
    else:
        assert lmdb_sets(out) == lmdb_sets(clean)
        assert (out / "low.lmdb" / "meta_info.txt").read_bytes() == (clean / "low.lmdb" / "meta_info.txt").read_bytes()


def test_lmdb_rows_reach_the_journal_only_once_committed(tmp_path, monkeypatch):
    from lowlight_gpu.containers import lmdbs

    monkeypatch.setattr(lmdbs, "COMMIT_PAIRS", 2)
    store = lmdbs.LmdbStore(str(tmp_path))

    def row(i):
        return {"source": f"s{i}", "key": f"k{i}", "_state": {"source": [1, 1], "files": {}},
                containers.PAYLOAD: [(f"k{i}.high.png", b"x" * (i + 1), "high.lmdb")]}

    assert store.put(row(0)) == []  # not committed yet: nothing to journal
    released = store.put(row(1))
    assert [r["source"] for r in released] == ["s0", "s1"]
    assert store.put(row(2)) == []
    assert all(store.check(r, True) for r in released)
    store.abandon()  # killed before the commit: s2 was never journaled, and is not in the database
    assert lmdb_items(tmp_path / "high.lmdb") == {"k0": b"x", "k1": b"xx"}


def test_merging_many_shard_jobs_passes_a_low_soft_open_file_limit(inputs, tmp_path):
    """A global tar merge reads and rewrites every job's part side by side: more files than a low soft limit allows."""
    resource = pytest.importorskip("resource")
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to count open files")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 24
    if hard != resource.RLIM_INFINITY and hard < 4 * count + 64:
        pytest.skip(f"hard limit on open files too low here ({hard})")
    out = tmp_path / "out"
    for i in range(count):
        run_pipeline(inputs, out, "save.container=webdataset", "noise.model=none", "save.tar_boundaries=global",
                     shard=(i, count))
    low = len(os.listdir("/proc/self/fd")) + count  # open now, plus fewer than the merge's 2 x count
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        counts = merge_pipeline(inputs, out, "save.container=webdataset", "noise.model=none",
                                "save.tar_boundaries=global")
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > low  # raised to the hard limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert counts["pairs"] == len(read_jsonl(out / "manifest.jsonl")) == len(IMAGES) + 1
    # Under a hard limit that is too low as well: one line that says what to do, exit 4, no traceback.
    res = subprocess.run([sys.executable, str(REPO_ROOT / "generate.py"), "--set", f"input={inputs}",
                          "--set", f"output={out}", "--set", "save.container=webdataset", "--set", "noise.model=none",
                          "--set", "save.tar_boundaries=global",
                          "--merge"], capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (count, count)))
    assert res.returncode == 4, res.stderr
    line, = res.stderr.strip().splitlines()
    assert "Too many open files" in line and "ulimit -Hn" in line
