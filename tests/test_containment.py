"""Containment (issue 23): a path read back from a file inside an output folder never leads outside it.

Crafted part journals, parts, errors files and manifests are fed to resume (also with --limit and --shard),
--merge, --verify, --preview, --report and PairDataset.  Each case must end with one line naming the file
and the row, exit code 2 (ValueError for PairDataset), no traceback, and every file outside the output
folder (and inside it) unchanged, bytes and mtime.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from lowlight_gpu import paths, pipeline
from lowlight_gpu.config import load_config
from lowlight_gpu.dataset import PairDataset
from lowlight_gpu.errors import UntrustedDataset

from conftest import run_subprocess, write_image

TAG1 = "shard-00000-of-00001"
SOURCES = ("a.png", "b.png", "c.png")


def crc(data):
    """The manifest's digest of bytes."""
    return f"{zlib.crc32(data):08x}"


def record(path):
    """[size, crc] of a file, as _state.files records it."""
    data = Path(path).read_bytes()
    return [len(data), crc(data)]


def snapshot(folder):
    """{relative path: (bytes or link target, mtime_ns)} of everything under folder, links not followed.

    Lock files are left out: a refused command has taken its (empty, never written) flock file first.
    """
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + [f for f in files if not f.endswith(".lock")]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                out[os.path.relpath(p, folder)] = ("link", os.readlink(p), st.st_mtime_ns)
            elif os.path.isfile(p):
                out[os.path.relpath(p, folder)] = (Path(p).read_bytes(), st.st_mtime_ns)
            else:
                out[os.path.relpath(p, folder)] = ("dir",)
    return out


def read_rows(path):
    """The rows of a .jsonl file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def write_rows(path, rows):
    """Write rows as a .jsonl file (ensure_ascii keeps a NUL byte as \\u0000)."""
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One input and honest outputs made from it: a whole run, two files shards, two webdataset shards (staged
    until --merge: save.tar_boundaries global)."""
    base = tmp_path_factory.mktemp("containment")
    inp = base / "in"
    for i, name in enumerate(SOURCES):
        write_image(inp / name, 9, 7, seed=i)
    cfg = base / "config.yaml"
    cfg.write_text("# defaults\n", encoding="utf-8")
    outs = {}
    for name, shards, extra in (("whole", 1, []), ("shards", 2, []),
                                ("tars", 2, ["save.container=webdataset", "save.shard_pairs=2",
                                              "save.tar_boundaries=global"]),
                                ("lmdb", 1, ["save.container=lmdb"])):
        out = base / name
        config = load_config(cfg, ["backend=numpy", "workers=1", f"input={inp}", f"output={out}", *extra])
        for i in range(shards):
            pipeline.run(config, shard=(i, shards))
        outs[name] = out
    merged = base / "tars_merged"
    shutil.copytree(outs["tars"], merged)
    pipeline.merge(load_config(cfg, ["backend=numpy", f"input={inp}", f"output={merged}",
                                     "save.container=webdataset", "save.shard_pairs=2",
                                     "save.tar_boundaries=global"]))
    outs["tars_merged"] = merged
    return {"base": base, "input": inp, "config": cfg, **outs}


@pytest.fixture
def case(made, tmp_path):
    """A fresh copy of the whole run as tmp/out, victim.txt beside it, and outside/o.png (a copy of an image)."""
    out = tmp_path / "out"
    shutil.copytree(made["whole"], out, symlinks=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy2(out / "high" / "a.png", outside / "o.png")
    return {"out": out, "victim": victim, "outside": outside, "tmp": tmp_path, **{k: made[k] for k in made}}


def copy_output(case, name):
    """Replace case's out with a copy of another honest output (shards, tars)."""
    shutil.rmtree(case["out"])
    shutil.copytree(case[name], case["out"], symlinks=True)


def argv(case, *extra, config_extra=()):
    """The command of the module's runs, into case's out."""
    sets = []
    for item in ("backend=numpy", "workers=1", f"input={case['input']}", f"output={case['out']}", *config_extra):
        sets += ["--set", item]
    return ["--config", str(case["config"]), "--quiet", *sets, *extra]


def run(capsys, args):
    """cli.main in this process: (exit code, stdout, stderr)."""
    from lowlight_gpu import cli

    capsys.readouterr()
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, file_name, row):
    """Exit 2 and one line (no traceback) naming the file and the row."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "untrusted dataset" in lines[0] and f"{file_name}' row {row}" in lines[0], lines[0]


# ---------------------------------------------------------------- the issue's reproduction, in a real process


def test_the_issues_reproduction_leaves_victim_in_place(capsys, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_image(inp / "astronaut.png", 11, 9, seed=1)
    write_image(inp / "chelsea.png", 12, 8, seed=2)
    (tmp_path / "config.yaml").write_text("# defaults\n", encoding="utf-8")
    io = ["--config", tmp_path / "config.yaml", "--set", "backend=numpy", "--set", "workers=1",
          "--set", f"input={inp}", "--set", f"output={out}", "--quiet"]
    io = [str(a) for a in io]
    assert run(capsys, io)[0] == 0  # in this process (fast); the refused run below is a real one
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious data\n")
    before = snapshot(tmp_path / "out"), victim.read_bytes(), victim.stat().st_mtime_ns
    part = out / "parts" / f"{TAG1}.jsonl"
    honest = part.read_text(encoding="utf-8")
    rows = read_rows(part)
    assert [r["source"] for r in rows] == ["astronaut.png", "chelsea.png"]
    rows[1]["_state"]["files"]["../victim.txt"] = record(victim)  # the victim's real size and CRC-32
    write_rows(part, rows)
    crafted = snapshot(out)
    (inp / "chelsea.png").unlink()
    res = run_subprocess(*io, cwd=tmp_path)
    assert_refused(res.code, res.err, f"{TAG1}.jsonl", 2)
    assert "'../victim.txt'" in res.err and "_state.files" in res.err
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == before[1:]
    assert snapshot(out) == crafted  # nothing written or deleted inside either
    # The honest part again: the orphan's own files go, as before, and the victim stays.
    part.write_text(honest, encoding="utf-8")
    code, _, err = run(capsys, io)
    assert code == 0, err
    assert "removed 2 file(s)" in err
    assert not (out / "high" / "chelsea.png").exists() and (out / "high" / "astronaut.png").exists()
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == before[1:]


# ---------------------------------------------------------------- resume (and --limit, --shard) of crafted parts


def _orphan(files):
    """A part row of a source that is not in the input: the run would remove its files."""
    return {"source": "zz.png", "high": "high/zz.png", "low": "low/zz.png", "seed": 1, "params": {},
            "width": 1, "height": 1, "_state": {"source": [1, 1], "files": files}}


def _add_orphan(name_of):
    """A craft appending an orphan row (row 4) whose files are {name_of(case): the recorded size and CRC}."""
    def craft(case):
        rel, target = name_of(case)
        part = case["out"] / "parts" / f"{TAG1}.jsonl"
        write_rows(part, read_rows(part) + [_orphan({rel: record(target)})])
        return f"{TAG1}.jsonl", 4
    return craft


def _symlinked_folder(case):
    os.symlink(case["outside"], case["out"] / "high" / "evil")
    return "high/evil/o.png", case["outside"] / "o.png"


def _symlinked_file(case):
    os.symlink(case["outside"] / "o.png", case["out"] / "high" / "zz.png")
    return "high/zz.png", case["outside"] / "o.png"


def _folder(case):
    """A folder where the row names a file; it holds a file, so removing it would lose data."""
    (case["out"] / "high" / "dir.png").mkdir()
    (case["out"] / "high" / "dir.png" / "keep.png").write_bytes(b"keep")
    return "high/dir.png", case["out"] / "high" / "dir.png" / "keep.png"


def _edit_row(n, edit, part=f"{TAG1}.jsonl"):
    """A craft changing row n of a file under parts/ with edit(row, case)."""
    def craft(case):
        path = case["out"] / "parts" / part
        rows = read_rows(path)
        edit(rows[n - 1], case)
        write_rows(path, rows)
        return part, n
    return craft


def _journal(case):
    """A journal of a killed run whose row for a.png also lists the victim (its CRC would be read)."""
    rows = read_rows(case["out"] / "parts" / f"{TAG1}.jsonl")[:1]
    rows[0]["_state"]["files"]["../victim.txt"] = record(case["victim"])
    write_rows(case["out"] / "parts" / f"{TAG1}.journal-7.jsonl", rows)
    return f"{TAG1}.journal-7.jsonl", 1


RESUME_CASES = {
    "dotdot": _add_orphan(lambda c: ("../victim.txt", c["victim"])),
    "absolute": _add_orphan(lambda c: (str(c["victim"]), c["victim"])),
    "inner-dotdot": _add_orphan(lambda c: ("high/../../victim.txt", c["victim"])),
    "backslash": _add_orphan(lambda c: ("..\\victim.txt", c["victim"])),
    "nul": _add_orphan(lambda c: ("high/zz.png\0/../../../victim.txt", c["victim"])),
    "symlinked-folder": _add_orphan(_symlinked_folder),
    "symlinked-file": _add_orphan(_symlinked_file),
    "folder": _add_orphan(_folder),
    "files-not-a-dict": _edit_row(2, lambda r, c: r["_state"].update(files=["../victim.txt"])),
    "record-not-a-list": _edit_row(2, lambda r, c: r["_state"]["files"].update({"high/b.png": "../victim.txt"})),
    "high-not-a-string": _edit_row(1, lambda r, c: r.update(high=5)),
    "steps-not-a-list": _edit_row(1, lambda r, c: r.update(steps="../victim.txt")),
    "journal": _journal,
}


@pytest.mark.parametrize("name,extra", [(name, ()) for name in sorted(RESUME_CASES)] +
                         [(name, ("--limit", "1")) for name in ("dotdot", "journal", "symlinked-folder")])
def test_resume_refuses_a_crafted_part(capsys, case, name, extra):
    file_name, row = RESUME_CASES[name](case)
    outside = snapshot(case["tmp"] / "outside"), case["victim"].read_bytes(), case["victim"].stat().st_mtime_ns
    inside = snapshot(case["out"])
    code, _, err = run(capsys, argv(case, *extra))
    assert_refused(code, err, file_name, row)
    assert (snapshot(case["tmp"] / "outside"), case["victim"].read_bytes(),
            case["victim"].stat().st_mtime_ns) == outside
    assert snapshot(case["out"]) == inside  # nothing written, nothing deleted


def test_an_lmdb_resume_refuses_a_database_outside(capsys, case):
    copy_output(case, "lmdb")
    part = case["out"] / "parts" / f"{TAG1}.jsonl"
    rows = read_rows(part)
    rows[1]["_state"]["members"][0][3] = "../evil.lmdb"  # a whole run would open (and create) it for writing
    write_rows(part, rows)
    before = snapshot(case["tmp"])
    code, _, err = run(capsys, argv(case, config_extra=["save.container=lmdb"]))
    assert_refused(code, err, part.name, 2)
    assert snapshot(case["tmp"]) == before and not (case["tmp"] / "evil.lmdb").exists()


def test_a_shard_job_refuses_its_crafted_part(capsys, case):
    copy_output(case, "shards")
    part = next(p for p in sorted((case["out"] / "parts").glob("shard-*-of-00002.jsonl")) if p.read_text())
    index = int(part.name.split("-")[1])
    rows = read_rows(part)
    write_rows(part, rows + [_orphan({"../victim.txt": record(case["victim"])})])
    before = snapshot(case["tmp"])
    code, _, err = run(capsys, argv(case, "--shard", f"{index}/2"))
    assert_refused(code, err, part.name, len(rows) + 1)
    assert snapshot(case["tmp"]) == before


@pytest.mark.parametrize("folder,args", [("shards", ()), ("parts", ("--merge",))])
def test_a_linked_parts_or_shards_folder_is_refused(capsys, case, folder, args):
    """parts/ and shards/ are listed and swept by pattern: a link out of the output is refused first."""
    copy_output(case, "tars")
    elsewhere = case["outside"] / folder
    if (case["out"] / folder).exists():
        shutil.move(case["out"] / folder, elsewhere)
    else:
        elsewhere.mkdir()
    os.symlink(elsewhere, case["out"] / folder)
    before, names = snapshot(case["tmp"]), sorted(os.listdir(elsewhere))
    code, _, err = run(capsys, argv(case, *args, config_extra=TAR_SETTINGS))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"the folder '{folder}' leaves the output folder" in err
    assert snapshot(case["tmp"]) == before and sorted(os.listdir(elsewhere)) == names  # not even a lock file


# ---------------------------------------------------------------- --merge of crafted shard parts


def _first_part(case):
    """The first non-empty shard part of a 2-shard output."""
    return next(p for p in sorted((case["out"] / "parts").glob("shard-*-of-00002.jsonl")) if p.read_text())


def _merge_edit(edit):
    """A craft changing row 1 of the first non-empty part with edit(row, case)."""
    def craft(case):
        part = _first_part(case)
        rows = read_rows(part)
        edit(rows[0], case)
        write_rows(part, rows)
        return part.name, 1
    return craft


def _errors_row(case):
    part = _first_part(case)
    errors = part.with_name(part.name.replace(".jsonl", ".errors.jsonl"))
    write_rows(errors, [{"source": str(case["victim"]), "error": "crafted"}])
    return errors.name, 1


def _tar_link(case):
    """A staging segment that is a link to a tar outside; the row points at it."""
    outside_tar = case["outside"] / "o.tar"
    shutil.copy2(next((case["out"] / "parts").glob("*.seg-*.tar")), outside_tar)
    part = _first_part(case)
    seg = f"parts/{part.name[:-len('.jsonl')]}.seg-000099.tar"
    os.symlink(outside_tar, case["out"] / seg)
    rows = read_rows(part)
    rows[0]["_state"]["at"] = [seg, 0]
    write_rows(part, rows)
    return part.name, 1


MERGE_CASES = {
    "high-absolute": ("shards", _merge_edit(lambda r, c: r.update(high=str(c["outside"] / "o.png")))),
    "files-dotdot": ("shards", _merge_edit(lambda r, c: r["_state"]["files"].update(
        {"../victim.txt": record(c["victim"])}))),
    "low-nul": ("shards", _merge_edit(lambda r, c: r.update(low="low/a\0.png"))),
    "steps-not-a-list": ("shards", _merge_edit(lambda r, c: r.update(steps={"path": "../victim.txt"}))),
    "split-climbs": ("shards", _merge_edit(lambda r, c: r.update(split="../../victim"))),
    "errors-absolute": ("shards", _errors_row),
    "tar-at-dotdot": ("tars", _merge_edit(lambda r, c: r["_state"].update(at=["../victim.txt", 0]))),
    "tar-at-not-a-list": ("tars", _merge_edit(lambda r, c: r["_state"].update(at="parts/x.tar"))),
    "tar-at-symlink": ("tars", _tar_link),
    "database-dotdot": ("tars", _merge_edit(lambda r, c: r["_state"]["members"][0].__setitem__(3, "../v.lmdb"))),
}


@pytest.mark.parametrize("name", sorted(MERGE_CASES))
def test_merge_refuses_a_crafted_part(capsys, case, name):
    source, craft = MERGE_CASES[name]
    copy_output(case, source)
    file_name, row = craft(case)
    extra = ["save.container=webdataset", "save.shard_pairs=2", "save.tar_boundaries=global"] \
        if source == "tars" else []
    before = snapshot(case["tmp"])
    code, _, err = run(capsys, argv(case, "--merge", config_extra=extra))
    assert_refused(code, err, file_name, row)
    assert snapshot(case["tmp"]) == before  # no manifest, no shards, no deletion: nothing at all
    assert not (case["out"] / "manifest.jsonl").exists()


def test_merge_refuses_a_damaged_done_marker(capsys, case):
    copy_output(case, "shards")
    marker = case["out"] / "parts" / "shard-00001-of-00002.done"
    marker.write_text("[1, 2]\n", encoding="utf-8")
    code, _, err = run(capsys, argv(case, "--merge"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "done-marker" in err and "Traceback" not in err


# ---------------------------------------------------------------- --verify, --preview, --report, PairDataset


def _manifest_edit(edit):
    """A craft changing row 1 of manifest.jsonl with edit(row, case)."""
    def craft(case):
        path = case["out"] / "manifest.jsonl"
        rows = read_rows(path)
        edit(rows[0], case)
        write_rows(path, rows)
        return "manifest.jsonl", 1
    return craft


def _manifest_symlink(case):
    os.symlink(case["outside"], case["out"] / "high" / "evil")
    return _manifest_edit(lambda r, c: r.update(high="high/evil/o.png"))(case)


def _manifest_symlinked_file(case):
    (case["out"] / "high" / "a.png").unlink()
    os.symlink(case["outside"] / "o.png", case["out"] / "high" / "a.png")
    return "manifest.jsonl", 1


def _shard_symlink(case):
    """The tar shard that row 1 names is a link to a copy of it outside."""
    shard = case["out"] / read_rows(case["out"] / "manifest.jsonl")[0]["shard"]
    shutil.copy2(shard, case["outside"] / "o.tar")
    shard.unlink()
    os.symlink(case["outside"] / "o.tar", shard)
    return "manifest.jsonl", 1


def _database_symlink(case):
    """high.lmdb is a link to a copy of it outside."""
    shutil.copytree(case["out"] / "high.lmdb", case["outside"] / "high.lmdb")
    shutil.rmtree(case["out"] / "high.lmdb")
    os.symlink(case["outside"] / "high.lmdb", case["out"] / "high.lmdb")
    return "manifest.jsonl", 1


def _shard_outside(case):
    shutil.copy2(next((case["out"] / "shards").glob("*.tar")), case["tmp"] / "victim.tar")
    return _manifest_edit(lambda r, c: r.update(shard="../victim.tar"))(case)


READ_CASES = {
    "absolute": (None, _manifest_edit(lambda r, c: r.update(high=str(c["outside"] / "o.png")))),
    "dotdot": (None, _manifest_edit(lambda r, c: r.update(high="high/../../outside/o.png"))),
    "symlinked-folder": (None, _manifest_symlink),
    "symlinked-file": (None, _manifest_symlinked_file),
    "nul": (None, _manifest_edit(lambda r, c: r.update(low="low/a.png\0"))),
    "not-a-string": (None, _manifest_edit(lambda r, c: r.update(high=["high/a.png"]))),
    "steps-not-a-list": (None, _manifest_edit(lambda r, c: r.update(steps=7))),
    "tar-shard-dotdot": ("tars_merged", _shard_outside),
    "tar-shard-symlink": ("tars_merged", _shard_symlink),
    "tar-shard-not-a-string": ("tars_merged", _manifest_edit(lambda r, c: r.update(shard={"x": 1}))),
    "lmdb-dotdot": ("lmdb", _manifest_edit(lambda r, c: r.update(high="../outside.lmdb"))),
    "lmdb-symlink": ("lmdb", _database_symlink),
}
TAR_SETTINGS = ["save.container=webdataset", "save.shard_pairs=2", "save.tar_boundaries=global"]
SETTINGS = {"tars_merged": TAR_SETTINGS, "lmdb": ["save.container=lmdb"]}


def _craft_read_case(case, name):
    """Prepare case's out for READ_CASES[name]; returns (file name, row) and the config settings of its output."""
    source, craft = READ_CASES[name]
    if source is not None:
        copy_output(case, source)
    return craft(case), SETTINGS.get(source, [])


@pytest.mark.parametrize("tool", ["--verify", "--preview", "--report"])
@pytest.mark.parametrize("name", sorted(READ_CASES))
def test_tools_refuse_a_crafted_manifest(capsys, case, name, tool):
    (file_name, row), settings = _craft_read_case(case, name)
    before = snapshot(case["tmp"])
    code, _, err = run(capsys, argv(case, tool, config_extra=settings))
    assert_refused(code, err, file_name, row)
    assert snapshot(case["tmp"]) == before  # no preview.png, no report, nothing outside read into one


@pytest.mark.parametrize("name", sorted(READ_CASES))
def test_pair_dataset_refuses_a_crafted_manifest(case, name):
    (file_name, row), _ = _craft_read_case(case, name)
    before = snapshot(case["tmp"])
    with pytest.raises(ValueError) as info:
        ds = PairDataset(case["out"])
        [ds[i] for i in range(len(ds))]
    assert isinstance(info.value, UntrustedDataset)
    message = str(info.value)
    assert "\n" not in message and f"{file_name}' row {row}" in message, message
    assert snapshot(case["tmp"]) == before


def test_pair_dataset_reads_an_honest_output(made):
    assert len(PairDataset(made["whole"])) == len(SOURCES)
    low, high = PairDataset(made["whole"])[0]
    assert high.shape == (7, 9, 3) and low.shape == high.shape


# ---------------------------------------------------------------- the rule itself


@pytest.mark.parametrize("rel,kind", [
    ("high/a.png", paths.IMAGE), ("low/t01/d/a b.png", paths.IMAGE), ("train/high/x.jpg.png", paths.IMAGE),
    ("raw_low/a.npy", paths.IMAGE), ("high/a\\b.png", paths.IMAGE), ("high.lmdb", paths.DATABASE),
    ("low/t05.lmdb", paths.DATABASE), ("shards/train-000003.tar", paths.TAR),
    ("parts/shard-00001-of-00004.seg-000002.tar", paths.TAR), ("d/a.high.png", paths.MEMBER),
    ("d/a.png", paths.SOURCE),
])
def test_honest_paths_pass(rel, kind):
    assert paths.problem(rel, kind) is None


@pytest.mark.parametrize("rel,kind", [
    ("/etc/hostname", paths.IMAGE), ("../x.png", paths.IMAGE), ("high/../../x.png", paths.IMAGE),
    ("..\\x.png", paths.IMAGE), ("\\x.png", paths.IMAGE), ("high/a\0.png", paths.IMAGE), ("", paths.IMAGE),
    ("high//a.png", paths.IMAGE), ("./high/a.png", paths.IMAGE), ("high/.a.png.tmp", paths.IMAGE),
    ("manifest.jsonl", paths.IMAGE), ("parts/x.png", paths.IMAGE), ("high/a.txt", paths.IMAGE),
    (5, paths.IMAGE), (None, paths.IMAGE), (["high/a.png"], paths.IMAGE), ("../v.lmdb", paths.DATABASE),
    ("high", paths.DATABASE), ("victim.tar", paths.TAR), ("shards/../x-000000.tar", paths.TAR),
    ("../x", paths.MEMBER), ("../a.png", paths.SOURCE), ("/a.png", paths.SOURCE),
])
def test_crafted_paths_are_refused(rel, kind):
    assert paths.problem(rel, kind)


def test_remove_regular_never_removes_a_link_or_a_folder(tmp_path):
    target = tmp_path / "t.png"
    target.write_bytes(b"x")
    os.symlink(target, tmp_path / "link.png")
    (tmp_path / "dir.png").mkdir()
    assert not paths.remove_regular(tmp_path / "link.png") and not paths.remove_regular(tmp_path / "dir.png")
    assert target.read_bytes() == b"x" and (tmp_path / "link.png").is_symlink() and (tmp_path / "dir.png").is_dir()
    assert paths.remove_regular(target) and not target.exists()
