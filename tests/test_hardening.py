"""Reproductions of what a careful new user broke (issue: hardening round two), each now fixed.

Each test follows one report: what the user did, and what now happens instead.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lowlight_gpu import cli, fsutil, imageio, locks, manifest
from lowlight_gpu.config import load_config

from conftest import REPO_ROOT, read_jsonl, tiny_tmpfs, tree_bytes, tree_mtimes, write_images

SUMMARY = re.compile(r"(\d+) pairs(?: \((\d+) already done\))?, (\d+) errors, ([0-9.]+) pairs/s")


def _io(inp, out):
    # One worker: threads, not worker processes, which would cost more to start than these tiny runs take.
    return ["--set", f"input={inp}", "--set", f"output={out}", "--set", "workers=1"]


def _summary(out):
    m = SUMMARY.search(out)
    assert m, f"no summary line in {out!r}"
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3)), float(m.group(4))


@pytest.fixture
def five(tmp_path):
    """An input folder of five tiny images."""
    inp = tmp_path / "five"
    write_images(inp, {f"{c}.png": (7, 5) for c in "abcde"})
    return inp


def _rows(out):
    return [r["source"] for r in read_jsonl(Path(out) / "manifest.jsonl")]


# ---------------------------------------------------------------- 1. --limit never shrinks a dataset

def test_limit_on_a_finished_dataset_keeps_every_row_and_file(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    files = tree_bytes(out_dir)
    res = run_cli(*_io(five, out_dir), "--limit", "2")
    assert res.code == 0, res.err
    assert _rows(out_dir) == ["a.png", "b.png", "c.png", "d.png", "e.png"]  # was 2 rows
    assert json.loads((out_dir / "dataset.json").read_text())["counts"]["pairs"] == 5
    assert tree_bytes(out_dir) == files
    assert _summary(res.out)[:3] == (5, 5, 0) and "3 beyond --limit kept" in res.out


def test_limit_keeps_the_failed_inputs_beyond_it(run_cli, five, out_dir):
    (five / "z_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert run_cli(*_io(five, out_dir)).code == 3
    res = run_cli(*_io(five, out_dir), "--limit", "2")
    assert res.code == 0  # nothing failed in this run
    assert [e["source"] for e in read_jsonl(out_dir / "errors.jsonl")] == ["z_broken.png"]
    assert json.loads((out_dir / "dataset.json").read_text())["counts"]["errors"] == 1


def test_limit_adds_to_a_smaller_dataset(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir), "--limit", "2").code == 0
    assert _rows(out_dir) == ["a.png", "b.png"]
    res = run_cli(*_io(five, out_dir), "--limit", "4")
    assert res.code == 0 and _summary(res.out)[:2] == (4, 2)
    assert _rows(out_dir) == ["a.png", "b.png", "c.png", "d.png"]


def test_limit_zero_writes_nothing(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    before = tree_mtimes(out_dir)
    res = run_cli(*_io(five, out_dir), "--limit", "0")
    assert res.code == 0 and "nothing written" in res.out
    assert tree_mtimes(out_dir) == before  # was: empty manifest and dataset.json, a stale report


# ---------------------------------------------------------------- 2. the input is part of a dataset's identity

def test_another_input_into_the_same_output_is_refused(run_cli, tmp_path, five, out_dir):
    other = tmp_path / "other"
    write_images(other, {"z.png": (4, 4)})
    assert run_cli(*_io(five, out_dir)).code == 0
    before = tree_mtimes(out_dir)
    res = run_cli(*_io(other, out_dir))
    assert res.code == 2
    line, = res.err.strip().splitlines()
    assert line.startswith("lowlight-gpu: error: input:")
    assert str(five) in line and str(other) in line and "--set output=" in line
    assert tree_mtimes(out_dir) == before


def test_other_config_refusal_names_the_keys_and_both_values(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    res = run_cli(*_io(five, out_dir), "--set", "seed=5", "--set", "darken.gamma=[2,3]")
    assert res.code == 2
    assert "seed was 0, now 5" in res.err and "darken.gamma was [1.5, 5.0], now [2.0, 3.0]" in res.err


# ---------------------------------------------------------------- 3. outputs are never read as inputs

def test_outputs_inside_the_input_are_not_sources(run_cli, tmp_path):
    inp = tmp_path / "photos"
    write_images(inp, {"a.png": (6, 5), "b.jpg": (5, 6)})
    assert run_cli(*_io(inp, inp / "out")).code == 0
    res = run_cli(*_io(inp, inp / "out2"))
    assert res.code == 0, res.err
    assert _rows(inp / "out2") == ["a.png", "b.jpg"]  # was: 2 photos + out/high, out/low and report.png
    assert "2 output folders" in res.out  # out, and out2 itself


# ---------------------------------------------------------------- 4. the model's library

def test_a_missing_model_library_is_one_line_that_says_to_reinstall(run_cli, five, out_dir, monkeypatch):
    """A checkout run without an install (no built library) stops before writing, with the fix, not a traceback."""
    from lowlight_gpu.synth import native

    monkeypatch.setattr(native, "_lib", [])
    monkeypatch.setattr(native, "_built", lambda suffix: None)
    res = run_cli(*_io(five, out_dir), "--set", "backend=numpy")
    assert res.code == 2, res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert "reinstall the package" in res.err and "C++ compiler" in res.err
    assert not (out_dir / "manifest.jsonl").exists()


# ---------------------------------------------------------------- 5. one run per output

def test_a_second_run_into_a_busy_output_exits_at_once(run_cli, five, out_dir):
    out_dir.mkdir()
    with locks.OutputLock(str(out_dir)).acquire_shard(0, 1):
        res = run_cli(*_io(five, out_dir))
    assert res.code == cli.EXIT_LOCKED == 5
    line, = res.err.strip().splitlines()
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in line
    assert not (out_dir / "manifest.jsonl").exists()
    assert run_cli(*_io(five, out_dir)).code == 0  # released: the next run goes ahead


def test_shard_jobs_stay_concurrent_but_other_shard_counts_wait(run_cli, five, out_dir):
    out_dir.mkdir()
    with locks.OutputLock(str(out_dir)).acquire_shard(0, 2):
        assert run_cli(*_io(five, out_dir), "--shard", "1/2").code == 0
        assert run_cli(*_io(five, out_dir), "--shard", "0/2").code == 5  # the same shard
        res = run_cli(*_io(five, out_dir))  # a whole run would rewrite the shards' files
        assert res.code == 5 and "2 shard(s)" in res.err and f"pid {os.getpid()}" in res.err


def test_a_killed_runs_lock_does_not_block(five, out_dir, run_cli):
    out_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lowlight_gpu import locks;"
                               "lock = locks.OutputLock(sys.argv[1]).acquire_shard(0, 1); print('held', flush=True);"
                               "time.sleep(60)", str(out_dir)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_cli(*_io(five, out_dir)).code == 5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_cli(*_io(five, out_dir)).code == 0


# ---------------------------------------------------------------- 6. storage failures stop the run

def _failing_writes(monkeypatch, after, err=errno.ENOSPC):
    """Make fsutil.write_atomic (the pipeline's image writes) fail with err after `after` successful writes; returns
    the decode counter."""
    real_write, real_decode = fsutil.write_atomic, imageio.decode
    state = {"writes": 0, "decodes": 0}

    def write(path, data):
        if state["writes"] >= after:
            raise OSError(err, os.strerror(err), str(path))
        state["writes"] += 1
        return real_write(path, data)

    def decode(*a, **k):
        state["decodes"] += 1
        return real_decode(*a, **k)

    monkeypatch.setattr(fsutil, "write_atomic", write)
    monkeypatch.setattr(imageio, "decode", decode)
    return state


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_a_full_or_failing_disk_stops_the_run_with_exit_4(run_cli, monkeypatch, tmp_path, out_dir, err):
    inp = tmp_path / "eight"
    write_images(inp, {f"p{i:02d}.png": (6, 5) for i in range(8)})
    state = _failing_writes(monkeypatch, after=4, err=err)
    res = run_cli(*_io(inp, out_dir))
    assert res.code == cli.EXIT_STOPPED == 4
    line, = res.err.strip().splitlines()
    assert os.strerror(err) in line and str(out_dir) in line and "re-run" in line
    assert state["decodes"] <= 4  # was: every remaining input decoded and rendered, exit 3
    assert not (out_dir / "errors.jsonl").exists() or read_jsonl(out_dir / "errors.jsonl") == []
    # Nothing half-written is visible (parts/ keeps the journal and its temporary files for the rerun).
    assert not [p for p in out_dir.rglob("*") if p.name.endswith(".tmp") and "parts" not in p.parts]
    if err != errno.ENOSPC:
        return
    monkeypatch.undo()
    assert run_cli(*_io(inp, out_dir)).code == 0
    clean = tmp_path / "clean"
    assert run_cli(*_io(inp, clean)).code == 0
    assert tree_bytes(out_dir) == tree_bytes(clean)


def test_a_failing_journal_write_is_exit_4_not_2(run_cli, monkeypatch, five, out_dir):
    def full(self, row):
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "parts" / "journal"))

    monkeypatch.setattr(manifest.ShardWriter, "add_row", full)
    res = run_cli(*_io(five, out_dir))
    assert res.code == 4 and "No space left on device" in res.err and len(res.err.strip().splitlines()) == 1


@pytest.fixture
def tiny_disk(tmp_path):
    """A 40 KiB tmpfs mounted at tmp_path/disk (root only); grown to 4 MiB by calling the returned function."""
    with tiny_tmpfs(tmp_path / "disk", "40k", "4m") as grow:
        yield tmp_path / "disk", grow


def test_a_really_full_disk_then_a_rerun_gives_a_clean_runs_bytes(run_cli, tmp_path, tiny_disk):
    disk, grow = tiny_disk
    inp = tmp_path / "many"
    write_images(inp, {f"p{i:02d}.png": (40, 30) for i in range(20)})
    res = run_cli(*_io(inp, disk / "out"))
    assert res.code == 4 and "No space left on device" in res.err, res.err
    grow()
    assert run_cli(*_io(inp, disk / "out")).code == 0
    assert run_cli(*_io(inp, tmp_path / "clean")).code == 0
    assert tree_bytes(disk / "out") == tree_bytes(tmp_path / "clean")
    assert (disk / "out" / "manifest.jsonl").read_bytes() == (tmp_path / "clean" / "manifest.jsonl").read_bytes()


# ---------------------------------------------------------------- 10. skip counts everywhere

def test_skip_counts_in_summary_dry_run_and_dataset_json(run_cli, monkeypatch, tmp_path, out_dir):
    inp = tmp_path / "mixed"
    write_images(inp, {"a.png": (5, 4), ".hidden.png": (5, 4)})
    (inp / "notes.txt").write_text("x")
    (inp / "IMG_0001.HEIC").write_bytes(b"\0" * 16)
    if hasattr(os, "mkfifo"):
        os.mkfifo(inp / "x.jpg")
    monkeypatch.setattr(imageio, "optional_formats", lambda: frozenset())  # as without pillow-heif
    res = run_cli(*_io(inp, out_dir), "--dry-run")
    assert res.code == 0 and "1 input(s)" in res.out
    assert "1 hidden" in res.out and "1 not an image" in res.out and "IMG_0001.HEIC" in res.out
    res = run_cli(*_io(inp, out_dir))
    assert res.code == 0
    assert "skipped: 1 hidden, 1 not an image" in res.out
    assert "IMG_0001.HEIC" in res.err and "pip install 'lowlight-gpu[heif]'" in res.err  # was: silent
    skipped = json.loads((out_dir / "dataset.json").read_text())["counts"]["skipped"]
    assert skipped["hidden"] == 1 and skipped["needs_heif"] == 1 and skipped["not_image"] == 1
    assert skipped["not_regular"] == (1 if hasattr(os, "mkfifo") else 0)


def test_shards_and_merge_record_the_same_skip_counts_as_a_whole_run(run_cli, tmp_path):
    inp = tmp_path / "in"
    write_images(inp, {f"p{i}.png": (5, 4) for i in range(6)} | {".h.png": (3, 3)})
    assert run_cli(*_io(inp, tmp_path / "whole")).code == 0
    for i in range(2):
        assert run_cli(*_io(inp, tmp_path / "sharded"), "--shard", f"{i}/2").code == 0
    assert run_cli(*_io(inp, tmp_path / "sharded"), "--merge").code == 0
    assert (tmp_path / "whole" / "dataset.json").read_bytes() == (tmp_path / "sharded" / "dataset.json").read_bytes()


# ---------------------------------------------------------------- smaller ones

def test_pair_dataset_refuses_an_unknown_split(run_cli, five, out_dir):
    from lowlight_gpu import PairDataset

    assert run_cli(*_io(five, out_dir), "--set", "split={train: 0.8, val: 0.2}").code == 0
    assert len(PairDataset(out_dir, split="train")) + len(PairDataset(out_dir, split="val")) == 5
    with pytest.raises(ValueError, match=r"'typo'.*'train', 'val'"):
        PairDataset(out_dir, split="typo")


def test_verify_0_is_refused(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    res = run_cli(*_io(five, out_dir), "--verify", "0")
    assert res.code == 2 and "--verify" in res.err and len(res.err.strip().splitlines()) == 1


def test_deleted_source_loses_its_files_and_row(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    (five / "c.png").unlink()
    res = run_cli(*_io(five, out_dir))
    assert res.code == 0
    assert _rows(out_dir) == ["a.png", "b.png", "d.png", "e.png"]
    assert not (out_dir / "high" / "c.png").exists() and not (out_dir / "low" / "c.png").exists()
    assert (out_dir / "high" / "d.png").exists()


def test_deleted_source_is_removed_only_by_the_shard_that_owns_it(run_cli, five, out_dir):
    from lowlight_gpu.hashing import shard_of

    for i in range(2):
        assert run_cli(*_io(five, out_dir), "--shard", f"{i}/2").code == 0
    (five / "c.png").unlink()
    owner = shard_of("c.png", 2)
    assert run_cli(*_io(five, out_dir), "--shard", f"{1 - owner}/2").code == 0
    assert (out_dir / "high" / "c.png").exists()
    assert run_cli(*_io(five, out_dir), "--shard", f"{owner}/2").code == 0
    assert not (out_dir / "high" / "c.png").exists()


def test_an_empty_input_removes_nothing(run_cli, five, out_dir):
    """An unmounted or emptied input must not wipe a dataset's files."""
    assert run_cli(*_io(five, out_dir)).code == 0
    files = tree_bytes(out_dir)
    for p in five.iterdir():
        p.unlink()
    before = tree_mtimes(out_dir)
    res = run_cli(*_io(five, out_dir))
    assert res.code == 2 and "no images in" in res.err  # refused before writing: not even a rewrite
    assert tree_bytes(out_dir) == files and tree_mtimes(out_dir) == before


def test_backend_note_obeys_quiet(run_cli, five, out_dir, monkeypatch):
    from lowlight_gpu import synth

    monkeypatch.setattr(synth, "_NOTE_PRINTED", [])
    monkeypatch.setattr(synth, "cupy_status", lambda: (False, "no GPU here"))
    res = run_cli(*_io(five, out_dir), "--set", "backend=auto")  # run_cli passes --quiet
    assert res.code == 0 and "backend auto" not in res.err


def test_pairs_per_second_counts_only_pairs_made(run_cli, five, out_dir):
    assert run_cli(*_io(five, out_dir)).code == 0
    res = run_cli(*_io(five, out_dir))
    assert _summary(res.out) == (5, 5, 0, 0.0)  # was: thousands of pairs/s for a no-op rerun


def test_progress_bar_counts_its_total(tmp_path, five, config_file):
    config = load_config(str(config_file), ["input=" + str(five), "output=" + str(tmp_path / "o")])
    args = cli.build_parser().parse_args(["--limit", "3"])
    bar = cli._progress(args, config)
    bar.enabled = True
    with bar as progress:
        progress.start()
        deadline = time.monotonic() + 10
        while progress.bar.total is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert progress.bar.total == 3  # min(inputs, --limit): the bar can show time remaining
    import threading

    # No tqdm monitor thread stays behind: it would keep later runs in this process from forking workers.
    assert "tqdm_monitor" not in {t.name for t in threading.enumerate()}
