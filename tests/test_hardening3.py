"""Reproductions of issue 20 (hardening round three): containers and names a careful new user broke, each now fixed.

Each test follows one report: what the user did, and what now happens instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lowlight_gpu import PairDataset, containers

from conftest import REPO_ROOT, read_jsonl, tiny_tmpfs, write_image, write_images

lmdb = pytest.importorskip("lmdb", reason="the lmdb extra is not installed")

LONG_UNICODE = "日" * 80 + ".png"  # 240 bytes: legal on ext4, its escaped key is 720 characters
LONG_NESTED = "d" * 200 + "/" + "e" * 200 + "/" + "f" * 150 + ".png"


def _io(inp, out, *sets):
    args = ["--set", f"input={inp}", "--set", f"output={out}", "--set", "workers=1"]
    for item in sets:
        args += ["--set", item]
    return args


def lmdb_items(path):
    """{key: value} of one database."""
    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin() as txn:
            return {k.decode("ascii"): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def lmdb_sets(root):
    """{database: {key: value}} of every database under root."""
    return {p.relative_to(root).as_posix(): lmdb_items(p) for p in sorted(Path(root).rglob("*.lmdb"))}


def dataset_bytes(root):
    """{relative path: bytes} of every file a user reads: images, shards, .npy, manifest, meta_info (not parts/)."""
    root = Path(root)
    skip = {"report.png", "report.md", "preview.png"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "parts" not in p.relative_to(root).parts and p.name not in skip
            and p.suffix != ".mdb"}


# ---------------------------------------------------------------- 1. LMDB keys over LMDB's 511-byte limit

def test_lmdb_key_keeps_short_keys_and_shortens_long_ones_to_distinct_names():
    assert containers.lmdb_key("d/a") == "d/a"
    fits = "x" * containers.LMDB_MAX_KEY
    assert containers.lmdb_key(fits) == fits  # every key that fits stays byte for byte as it was
    a, b = "%E6%97%A5" * 80 + "a", "%E6%97%A5" * 80 + "b"  # 721 bytes, the same first 720
    ka, kb = containers.lmdb_key(a), containers.lmdb_key(b)
    assert ka != kb and len(ka) <= 511 and len(kb) <= 511
    head = ka.split("~")[0]
    assert a.startswith(head) and re.fullmatch(r"(%[0-9A-F]{2})+", head)  # never cut inside an escape
    assert containers.lmdb_key(a) == ka  # the same on every run and machine


@pytest.mark.parametrize("name", [LONG_UNICODE, LONG_NESTED], ids=["unicode", "nested"])
def test_a_long_name_no_longer_stops_an_lmdb_run(run_cli, tmp_path, name):
    inp, out, files = tmp_path / "in", tmp_path / "out", tmp_path / "files"
    write_image(inp / "ok.png", 9, 7, seed=1)
    write_image(inp / name, 8, 6, seed=2)
    res = run_cli(*_io(inp, out, "save.container=lmdb"))
    assert res.code == 0, res.err  # was: exit 4, MDB_BAD_VALSIZE "check the disk", nothing committed
    rows = {r["source"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert rows["ok.png"]["key"] == "ok" and "name" not in rows["ok.png"]  # normal keys as before
    long_row = rows[name]
    assert len(long_row["key"].encode()) <= 511 and "~" in long_row["key"] and long_row["name"] == name
    items = lmdb_items(out / "low.lmdb")
    assert sorted(items) == sorted(r["key"] for r in rows.values())
    # BasicSR's paired_paths_from_lmdb: the key is the meta_info line's text before its first dot.
    lines = (out / "low.lmdb" / "meta_info.txt").read_text().splitlines()
    assert sorted(line.split(".")[0] for line in lines) == sorted(items)
    # Every reader agrees with a files run of the same inputs.
    assert run_cli(*_io(inp, files)).code == 0
    for got, want in zip(PairDataset(out), PairDataset(files)):
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    res = run_cli(*_io(inp, out, "save.container=lmdb"), "--verify")
    assert res.code == 0 and "all match" in res.out, res.out


def test_long_names_in_lmdb_shards_merge_like_a_whole_run(run_cli, tmp_path):
    inp = tmp_path / "in"
    for i, name in enumerate(["ok.png", LONG_UNICODE, LONG_NESTED, "z.png"]):
        write_image(inp / name, 8, 6, seed=i)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_cli(*_io(inp, whole, "save.container=lmdb")).code == 0
    for i in range(2):
        assert run_cli(*_io(inp, parts, "save.container=lmdb"), "--shard", f"{i}/2").code == 0
    res = run_cli(*_io(inp, parts, "save.container=lmdb"), "--merge")
    assert res.code == 0, res.err  # was: "run that shard again", which could not help
    assert lmdb_sets(parts) == lmdb_sets(whole) and len(lmdb_sets(whole)["low.lmdb"]) == 4
    assert (parts / "manifest.jsonl").read_bytes() == (whole / "manifest.jsonl").read_bytes()


# ---------------------------------------------------------------- 2. a truncated data.mdb

@pytest.fixture
def truncated(run_cli, tmp_path):
    """(inputs, output, clean copy) of an LMDB run whose low.lmdb/data.mdb was then cut to a third."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {f"p{i:02d}.png": (40, 30) for i in range(8)})
    assert run_cli(*_io(inp, out, "save.container=lmdb")).code == 0
    clean = tmp_path / "clean"
    shutil.copytree(out, clean)
    data = out / "low.lmdb" / "data.mdb"
    os.truncate(data, max(8192, data.stat().st_size // 3))
    return inp, out, clean


def _python(code, timeout=120):
    """Run python -c code in a fresh process (a SIGBUS there does not take the test run with it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO_ROOT)


def test_a_truncated_lmdb_is_named_by_every_reader_not_a_bus_error(run_cli, truncated):
    inp, out, _ = truncated
    proc = _python(f"from lowlight_gpu import PairDataset\nds = PairDataset({str(out)!r})\n"
                   "try:\n    [ds[i] for i in range(len(ds))]\nexcept Exception as e:\n"
                   "    print(type(e).__name__, e)\n    raise SystemExit(9)\n")
    assert proc.returncode == 9, proc  # was: -7 (SIGBUS) after item 2
    assert proc.stdout.startswith("DamagedDatabase") and "low.lmdb" in proc.stdout
    res = run_cli(*_io(inp, out, "save.container=lmdb"), "--verify")
    assert res.code == 1, res
    line, = res.err.strip().splitlines()
    assert "low.lmdb" in line and "damaged" in line and "re-run" in line
    for tool in ("--preview", "--report"):
        res = run_cli(*_io(inp, out, "save.container=lmdb"), tool)
        assert res.code == 1 and len(res.err.strip().splitlines()) == 1 and "low.lmdb" in res.err, res


def test_a_resume_rebuilds_a_truncated_lmdb(run_cli, truncated):
    inp, out, clean = truncated
    res = run_cli(*_io(inp, out, "save.container=lmdb"))
    assert res.code == 0, res.err
    assert "rebuilt damaged LMDB database(s) low.lmdb" in res.err
    assert lmdb_sets(out) == lmdb_sets(clean)
    assert dataset_bytes(out) == dataset_bytes(clean)
    assert run_cli(*_io(inp, out, "save.container=lmdb"), "--verify").code == 0


def test_a_truncated_lmdb_of_shard_jobs_is_rebuilt_by_rerunning_them(run_cli, tmp_path):
    inp, out, whole = tmp_path / "in", tmp_path / "out", tmp_path / "whole"
    write_images(inp, {f"p{i:02d}.png": (40, 30) for i in range(8)})
    sets = _io(inp, out, "save.container=lmdb")
    for i in range(2):
        assert run_cli(*sets, "--shard", f"{i}/2").code == 0
    assert run_cli(*sets, "--merge").code == 0
    data = out / "low.lmdb" / "data.mdb"
    os.truncate(data, max(8192, data.stat().st_size // 3))
    res = run_cli(*sets, "--merge")  # the pairs are in no staging tar: merging cannot rebuild it
    assert res.code == 2 and "low.lmdb" in res.err and "damaged" in res.err, res.err
    assert re.search(r"run --shard [01]/2 again", res.err), res.err
    for i in range(2):
        assert run_cli(*sets, "--shard", f"{i}/2").code == 0
    assert run_cli(*sets, "--merge").code == 0
    assert run_cli(*_io(inp, whole, "save.container=lmdb")).code == 0
    assert lmdb_sets(out) == lmdb_sets(whole)


# ---------------------------------------------------------------- 5. 255-byte names in the files layout

def test_a_255_byte_name_is_written_and_an_impossible_name_is_an_error_without_retry_advice(run_cli, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    longest = "a" * 251 + ".png"  # 255 bytes: legal, and its output name is the same
    clash = ["b" * 251 + ".jpg", "b" * 251 + ".png"]  # they clash, and the fallback 'x.jpg.png' is 259 bytes
    for i, name in enumerate([longest, *clash, "ok.png"]):
        write_image(inp / name, 6, 5, seed=i)
    res = run_cli(*_io(inp, out))
    assert res.code == 3, res.err
    assert (out / "high" / longest).is_file() and (out / "low" / longest).is_file()  # was: File name too long
    errors = read_jsonl(out / "errors.jsonl")
    assert sorted(e["source"] for e in errors) == sorted(clash)
    assert all("cannot exist" in e["error"] and "255" in e["error"] and "rename" in e["error"] for e in errors)
    assert all(set(e) == {"source", "error"} for e in errors)
    advice = [line for line in res.err.splitlines() if "errors.jsonl" in line]
    assert advice and "retry" not in advice[0] and "rename those sources" in advice[0]
    assert not list(out.rglob("*.tmp"))
    res = run_cli(*_io(inp, tmp_path / "wds", "save.container=webdataset"))
    assert res.code == 0, res.err  # a container stores any name


# ---------------------------------------------------------------- 6. SIGINT and SIGTERM

@pytest.mark.parametrize("signum,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["sigterm", "sigint"])
def test_an_interrupted_lmdb_run_keeps_its_finished_pairs(tmp_path, signum, code, word):
    from test_containers import run_pipeline

    inp, out, clean = tmp_path / "in", tmp_path / "out", tmp_path / "clean"
    n = 48
    write_images(inp, {f"p{i:02d}.png": (96, 64) for i in range(n)})
    sets = ["save.container=lmdb", "progressive.enabled=true", "progressive.steps=8", "progressive.save=all",
            "save.compress_level=9"]
    cmd = [sys.executable, str(REPO_ROOT / "generate.py"), "--quiet", *_io(inp, out, "backend=numpy", *sets)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not (out / "low" / "t08.lmdb" / "data.mdb").exists():  # a first pair is stored
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    time.sleep(0.1)
    assert proc.poll() is None, "the run ended before the signal; make it longer"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err  # SIGTERM was: rc -15 and no message
    line, = err.strip().splitlines()
    assert word in line and "finished pairs are kept" in line
    journaled = sum(p.read_text().count("\n") for p in (out / "parts").glob("*.journal-*.jsonl"))
    assert 1 <= journaled < n  # was: 0, every pair of the open transaction thrown away
    result = run_pipeline(inp, out, *sets)
    assert result.skipped == journaled and result.pairs == n and result.errors == 0  # redoes only the rest
    if signum == signal.SIGINT:
        return  # the same path as SIGTERM from here (the comparison with a clean run takes a while)
    run_pipeline(inp, clean, *sets)
    assert lmdb_sets(out) == lmdb_sets(clean)
    assert dataset_bytes(out) == dataset_bytes(clean)


# ---------------------------------------------------------------- 7. --repair

def _flip(path, offset, count=16):
    """XOR count bytes of a file at offset with 0x5A (the size stays)."""
    data = bytearray(Path(path).read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def _damage_png_file(out):
    _flip(out / "low" / "p01.png", 60)


def _damage_tar_member(out):
    import tarfile

    shard = out / "shards" / "data-000000.tar"
    with tarfile.open(shard) as tar:
        member = tar.getmember("p01.low.png")
    _flip(shard, member.offset_data + 60)


def _damage_npy(out):
    path = out / "raw_low" / "p01.npy"
    _flip(path, path.stat().st_size - 2, count=1)  # one value of the mosaic


def _damage_lmdb_value(out):
    value = lmdb_items(out / "low.lmdb")["p01"]
    data = out / "low.lmdb" / "data.mdb"
    _flip(data, data.read_bytes().index(value) + 60)


REPAIRS = {
    "files": ([], _damage_png_file),
    "webdataset": (["save.container=webdataset", "save.shard_pairs=2"], _damage_tar_member),
    "raw": (["noise.model=physics", "save.raw=true"], _damage_npy),
    "lmdb": (["save.container=lmdb"], _damage_lmdb_value),
}


def _stored(out):
    """What a user reads of a dataset: its files and the key/value sets of its LMDBs."""
    return dataset_bytes(out), lmdb_sets(out)


@pytest.mark.parametrize("case", sorted(REPAIRS))
def test_repair_makes_damage_found_by_verify_byte_identical_to_a_clean_run(run_cli, tmp_path, case):
    sets, damage = REPAIRS[case]
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {f"p{i:02d}.png": (24, 16) for i in range(4)})
    args = _io(inp, out, *sets)
    assert run_cli(*args).code == 0
    clean = _stored(out)
    damage(out)
    res = run_cli(*args, "--verify")
    assert res.code == 1 and "DIFFERS" in res.out and "--repair" in res.out, res.out
    assert run_cli(*args).code == 0
    assert _stored(out) != clean  # a plain rerun trusts the sizes: the damage stays
    res = run_cli(*args, "--repair")
    assert res.code == 0, res.err
    assert _stored(out) == clean
    assert run_cli(*args, "--verify").code == 0


# ---------------------------------------------------------------- 10. LMDB on a full disk

def test_a_failed_lmdb_write_on_a_full_disk_says_enospc(run_cli, tmp_path, monkeypatch):
    from lowlight_gpu.containers import lmdbs

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {f"p{i:02d}.png": (8, 6) for i in range(3)})

    class Full:
        f_bavail, f_frsize = 3, 4096

    real_open = lmdbs.open_writer
    # LMDB's answer to a short write, which is what a full disk gives: a generic error saying EIO.
    monkeypatch.setattr(lmdbs, "open_writer", lambda path: _FailingEnv(real_open(path)))
    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    res = run_cli(*_io(inp, out, "save.container=lmdb"))
    assert res.code == 4, res.err
    line, = res.err.strip().splitlines()
    assert "(ENOSPC)" in line and "free some space" in line and ".lmdb" in line, line
    assert "EIO" not in line and "check the disk" not in line
    monkeypatch.undo()  # the same failure with space left is what it says: an I/O error
    monkeypatch.setattr(lmdbs, "open_writer", lambda path: _FailingEnv(real_open(path)))
    res = run_cli(*_io(inp, out, "save.container=lmdb"))
    assert res.code == 4 and "(EIO)" in res.err and "check the disk" in res.err, res.err


class _FailingEnv:
    """An lmdb.Environment whose write transactions fail to commit as LMDB does on a short write."""

    def __init__(self, env):
        self.env = env

    def begin(self, write=False, **kw):
        txn = self.env.begin(write=write, **kw)
        return _FailingTxn(txn) if write else txn

    def __getattr__(self, name):
        return getattr(self.env, name)


class _FailingTxn:
    def __init__(self, txn):
        self.txn = txn

    def put(self, key, value):
        return self.txn.put(key, value)

    def commit(self):
        self.txn.abort()
        raise lmdb.Error("mdb_txn_commit: Input/output error")

    def abort(self):
        try:
            self.txn.abort()
        except lmdb.Error:
            pass


@pytest.fixture
def tiny_disk(tmp_path):
    """A 160 KiB tmpfs at tmp_path/disk (root only); the returned function grows it to 8 MiB."""
    with tiny_tmpfs(tmp_path / "disk", "160k", "8m") as grow:
        yield tmp_path / "disk", grow


def test_a_really_full_disk_stops_an_lmdb_run_with_enospc_then_resumes(run_cli, tmp_path, tiny_disk):
    disk, grow = tiny_disk
    inp = tmp_path / "in"
    write_images(inp, {f"p{i:02d}.png": (40, 30) for i in range(24)})
    res = run_cli(*_io(inp, disk / "out", "save.container=lmdb"))
    assert res.code == 4, res.err
    line, = res.err.strip().splitlines()
    assert "(ENOSPC)" in line and "free some space" in line, line  # was: EIO, "check the disk"
    grow()
    assert run_cli(*_io(inp, disk / "out", "save.container=lmdb")).code == 0
    assert run_cli(*_io(inp, tmp_path / "clean", "save.container=lmdb")).code == 0
    assert lmdb_sets(disk / "out") == lmdb_sets(tmp_path / "clean")


# ---------------------------------------------------------------- 14. smaller items

def test_pair_dataset_on_lmdb_without_lmdb_gives_the_install_hint(run_cli, tmp_path, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {"a.png": (6, 5)})
    assert run_cli(*_io(inp, out, "save.container=lmdb")).code == 0
    monkeypatch.setitem(sys.modules, "lmdb", None)  # import lmdb raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'lowlight-gpu\[lmdb\]'"):
        PairDataset(out)


def test_readme_lists_every_member_tag(run_cli, tmp_path):
    import tarfile

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {"a.png": (6, 5)})
    sets = ["save.container=webdataset", "noise.model=physics", "save.raw=true", "save.clean_low=true",
            "progressive.enabled=true", "progressive.steps=2", "progressive.save=all"]
    assert run_cli(*_io(inp, out, *sets)).code == 0
    with tarfile.open(out / "shards" / "data-000000.tar") as tar:
        tags = {m.name.split(".")[1] for m in tar if not m.name.endswith(".json")}
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme[readme.index("Tags: `high`"):].split("\n\n")[0]
    missing = {t for t in tags if f"`{re.sub(r't[0-9]+$', 'tNN', t)}`" not in listed}
    assert not missing and "raw_low_t01" in tags


def test_an_interrupt_inside_a_deferred_block_waits_for_it_and_a_second_one_does_not():
    from lowlight_gpu import interrupts

    done = []
    with pytest.raises(interrupts.Terminated):
        with interrupts.deferred():
            interrupts.handle(signal.SIGTERM, None)  # noted, not raised: the block finishes its work
            done.append("stored")
    assert done == ["stored"]
    with pytest.raises(KeyboardInterrupt) as caught:
        with interrupts.deferred():
            interrupts.handle(signal.SIGINT, None)
            interrupts.handle(signal.SIGINT, None)  # a second Ctrl-C: at once
            done.append("never")
    assert done == ["stored"] and not isinstance(caught.value, interrupts.Terminated)
    interrupts.check()  # nothing left pending
