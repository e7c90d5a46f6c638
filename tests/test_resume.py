"""Crash safety: SIGKILL at any moment then a rerun gives a clean run's bytes; corrupt leftovers are redone."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lowlight_gpu import manifest, pipeline
from lowlight_gpu.config import load_config

from conftest import REPO_ROOT, run_subprocess, write_image

N_IMAGES = 40
BAD = {"zz_broken.png": b"\x89PNG\r\n\x1a\n torn", "d1/empty.jpg": b""}
TAG = manifest.shard_tag(0, 1)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def dataset_files(root):
    """{relative path: bytes} of every file under root, parts/ included; report.* left out (it names its folder)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("report.")}


def leftovers(root):
    """Temporary files and journals anywhere under root."""
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")
                  if p.name.endswith(".tmp") or ".journal-" in p.name)


def assert_same_files(expected, actual, note=""):
    """Same file names and the same bytes in each."""
    assert sorted(actual) == sorted(expected), note
    differing = [rel for rel in expected if expected[rel] != actual[rel]]
    assert not differing, f"files differ {note}: {differing}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(input folder, config file, the files of a clean uninterrupted CLI run)."""
    base = tmp_path_factory.mktemp("resume")
    inp = base / "in"
    for i in range(N_IMAGES):
        write_image(inp / f"d{i % 3}" / f"img{i:02d}.png", 64, 48, seed=i)
    for rel, data in BAD.items():
        (inp / rel).write_bytes(data)
    cfg = base / "config.yaml"
    # Level 9 makes each pair slow enough that a kill "mid-run" reliably lands mid-run.
    cfg.write_text("backend: numpy\nworkers: 2\nsave:\n  compress_level: 9\n", encoding="utf-8")
    clean = base / "clean"
    res = run_subprocess("--config", cfg, "--set", f"input={inp}", "--set", f"output={clean}", "--quiet")
    assert res.code == 3, res  # the bad inputs
    assert not leftovers(clean)
    return inp, cfg, dataset_files(clean)


def _start(inp, cfg, out):
    """generate.py as a child process."""
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "generate.py"), "--config", str(cfg),
                             "--set", f"input={inp}", "--set", f"output={out}", "--quiet"],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _journal_rows(out):
    """Complete rows in the newest journal of the whole-run shard (0 when there is none)."""
    journals = sorted(Path(out, "parts").glob(f"{TAG}.journal-*.jsonl"),
                      key=lambda p: int(p.name.rsplit("-", 1)[1].split(".")[0]))
    if not journals:
        return 0
    return journals[-1].read_bytes().count(b"\n")


def _kill_when(proc, ready, timeout=90):
    """SIGKILL proc as soon as ready() holds; returns True if the kill hit a running process."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return alive and proc.returncode == -signal.SIGKILL


def _at_delay(seconds):
    start = time.monotonic()
    return lambda out: time.monotonic() - start >= seconds


def _at_rows(n):
    return lambda out: _journal_rows(out) >= n


def _all_journaled(out):
    """Every pair's row is in the journal: the run is about to promote it."""
    return _journal_rows(out) >= N_IMAGES


def _merging(out):
    """The shard's part is final: the run is writing its done-marker, merging or writing the report."""
    return Path(out, "parts", f"{TAG}.jsonl").exists()


MOMENTS = {
    "random-early": lambda rng: [_at_delay(rng.uniform(0.0, 1.5))],
    "mid-run": lambda rng: [_at_rows(rng.randint(5, N_IMAGES // 2))],
    "all-journaled": lambda rng: [_all_journaled],
    "while-merging": lambda rng: [_merging],
    "twice-mid-run": lambda rng: [_at_rows(rng.randint(3, 12)), _at_rows(rng.randint(15, N_IMAGES - 5))],
}


@pytest.mark.parametrize("moment", sorted(MOMENTS))
def test_sigkill_then_rerun_equals_a_clean_run(setup, tmp_path, moment):
    inp, cfg, clean = setup
    seed = random.randrange(1 << 30)
    note = f"(moment {moment}, seed {seed})"
    out = tmp_path / "out"
    hits = []
    for trigger in MOMENTS[moment](random.Random(seed)):
        proc = _start(inp, cfg, out)
        hits.append(_kill_when(proc, lambda: trigger(out)))
    if moment.endswith("mid-run"):
        # These kills are triggered by a journal that is still short, so they must hit a live run.
        assert all(hits), note
        assert not (out / "parts" / f"{TAG}.done").exists() and _journal_rows(out) < N_IMAGES, note
    res = run_subprocess("--config", cfg, "--set", f"input={inp}", "--set", f"output={out}", "--quiet")
    assert res.code == 3, (note, res)
    assert leftovers(out) == [], note
    assert_same_files(clean, dataset_files(out), note)


# ---------------------------------------------------------------- corrupt leftovers, changed sources


@pytest.fixture
def small(tmp_path):
    """(config, clean files) of a finished in-process run of a few images."""
    inp = tmp_path / "in"
    for i in range(6):
        write_image(inp / f"p{i}.png", 30 + i, 20, seed=i)
    config = load_config(None, [f"input={inp}", f"output={tmp_path / 'out'}", "backend=numpy", "workers=2"])
    result = pipeline.run(config)
    assert result.pairs == 6 and result.skipped == 0
    return config, dataset_files(config.output)


def _rerun(config):
    """Run again into the same output; returns the RunResult."""
    return pipeline.run(config)


def _as_crashed(config, drop_last=0):
    """Make a finished output look like a run killed after journaling its rows (the last drop_last lost)."""
    parts = Path(config.output, "parts")
    lines = (parts / f"{TAG}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (parts / f"{TAG}.journal-1.jsonl").write_text("".join(lines[:len(lines) - drop_last]), encoding="utf-8")
    for name in (f"{TAG}.jsonl", f"{TAG}.done", f"{TAG}.errors.jsonl"):
        (parts / name).unlink()
    return [json.loads(line) for line in lines]


def test_truncated_output_of_a_finished_run_is_redone(small):
    config, clean = small
    victim = Path(config.output, "low", "p2.png")
    victim.write_bytes(victim.read_bytes()[:100])
    result = _rerun(config)
    assert result.skipped == 5
    assert_same_files(clean, dataset_files(config.output))


def test_same_size_corruption_left_by_a_crash_is_redone(small):
    """A journal comes from a run that did not finish: its outputs are hash-checked, not trusted on size."""
    config, clean = small
    _as_crashed(config)
    victim = Path(config.output, "high", "p4.png")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = _rerun(config)
    assert result.skipped == 5
    assert_same_files(clean, dataset_files(config.output))
    assert leftovers(config.output) == []


def test_torn_journal_and_stale_temp_files_are_cleaned(small):
    """What a kill leaves: a torn last journal line, half-written temp files of the pair being written."""
    config, clean = small
    rows = _as_crashed(config, drop_last=1)
    parts = Path(config.output, "parts")
    with open(parts / f"{TAG}.journal-1.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rows[-1])[:40])  # the row being written when the kill came
    last = rows[-1]
    for rel in (last["high"], last["low"]):
        tmp = Path(config.output, rel)
        tmp.with_name(f".{tmp.name}.tmp").write_bytes(b"half")
        tmp.unlink()
    for name in (f".{TAG}.errors.jsonl.tmp", f".{TAG}.done.tmp", ".run.json.otherhost-123.tmp"):
        (parts / name).write_bytes(b"junk")
    Path(config.output, ".manifest.jsonl.tmp").write_bytes(b"junk")
    result = _rerun(config)
    assert result.skipped == 5 and result.pairs == 6
    assert leftovers(config.output) == []
    assert_same_files(clean, dataset_files(config.output))


def test_noop_rerun_of_a_finished_run_reads_no_output(small, monkeypatch):
    """Finished parts are trusted on sizes (documented in docs/cluster.md): a no-op rerun hashes nothing."""
    config, clean = small

    def no_hashing(path):
        raise AssertionError(f"a finished part's output was read: {path}")

    monkeypatch.setattr(manifest, "file_digest", no_hashing)
    result = _rerun(config)
    assert result.skipped == 6
    assert_same_files(clean, dataset_files(config.output))


def test_changed_source_is_redone(small, tmp_path):
    config, _ = small
    write_image(Path(config.input, "p3.png"), 44, 33, seed=99)
    st = os.stat(Path(config.input, "p3.png"))
    os.utime(Path(config.input, "p3.png"), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    result = _rerun(config)
    assert result.skipped == 5
    fresh = load_config(None, [f"input={config.input}", f"output={tmp_path / 'fresh'}", "backend=numpy"])
    pipeline.run(fresh)
    expected = {k: v for k, v in dataset_files(fresh.output).items() if not k.startswith("parts/")}
    actual = {k: v for k, v in dataset_files(config.output).items() if not k.startswith("parts/")}
    assert_same_files(expected, actual)
    assert [r["width"] for r in manifest.read_rows(Path(config.output, "manifest.jsonl"))
            if r["source"] == "p3.png"] == [44]


def test_resume_after_a_different_shard_count_reuses_the_work(small):
    """Journals of a killed 1-shard run help a later --shard 0/2 run: nothing verified is made twice."""
    config, clean = small
    _as_crashed(config)
    first = pipeline.run(config, shard=(0, 2))
    second = pipeline.run(config, shard=(1, 2))
    assert first.skipped + second.skipped == 6
    pipeline.merge(config)
    public = {k: v for k, v in clean.items() if not k.startswith("parts/")}
    assert_same_files(public, {k: v for k, v in dataset_files(config.output).items() if not k.startswith("parts/")})
