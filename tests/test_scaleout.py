"""Scale-out: --shard I/N plus --merge, the Dask engine, and concurrent shard jobs give a whole local run's bytes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lowlight_gpu import manifest, pipeline, sources
from lowlight_gpu.config import ConfigError, load_config
from lowlight_gpu.hashing import shard_of

from conftest import REPO_ROOT, read_jsonl, write_image

N_GOOD = 14
BAD = {"broken.png": b"\x89PNG\r\n\x1a\n not really", "empty.jpg": b"", "sub/deep/text.jpg": b"hello"}


def make_input(folder):
    """Good images in nested folders plus undecodable files, so errors.jsonl is not empty."""
    folder = Path(folder)
    for i in range(N_GOOD):
        sub = ("", "sub/", "sub/deep/", "other/")[i % 4]
        write_image(folder / f"{sub}img{i:02d}.{'png' if i % 3 else 'jpg'}", 21 + i, 13 + i % 5, seed=i)
    for rel, data in BAD.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def dataset_files(root, with_parts=False):
    """{relative path: bytes} of an output folder: images, manifest, errors, dataset.json (and parts/ if asked).

    report.md/.png are left out: the report is made from the dataset after a whole run, names its
    folder, and is not written by --merge.
    """
    root = Path(root)
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("report.") and (with_parts or not rel.startswith("parts/")):
            files[rel] = p.read_bytes()
    return files


def assert_same_files(expected, actual):
    """Same file names and the same bytes in each."""
    assert sorted(actual) == sorted(expected)
    differing = [rel for rel in expected if expected[rel] != actual[rel]]
    assert not differing, f"files differ: {differing}"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The input folder shared by this module's tests."""
    return make_input(tmp_path_factory.mktemp("scaleout") / "in")


@pytest.fixture(scope="module")
def whole(photos, tmp_path_factory):
    """A whole local run (threads) of photos, made once: its dataset files."""
    out = tmp_path_factory.mktemp("whole") / "out"
    config = load_config(None, [f"input={photos}", f"output={out}", "backend=numpy", "workers=2"])
    result = pipeline.run(config)
    assert (result.pairs, result.errors) == (N_GOOD, len(BAD))
    files = dataset_files(out)
    assert read_jsonl(out / "errors.jsonl") and len(read_jsonl(out / "manifest.jsonl")) == N_GOOD
    return files


def _io(inp, out):
    return ["--set", f"input={inp}", "--set", f"output={out}"]


# ---------------------------------------------------------------- shards and merge


def test_shards_plus_merge_equal_a_whole_run(run_cli, photos, whole, tmp_path):
    out = tmp_path / "out"
    for i in (2, 0, 1):  # any order
        res = run_cli(*_io(photos, out), "--shard", f"{i}/3")
        assert res.code in (0, 3), res
        assert f"shard {i}/3" in res.out
        assert not (out / "manifest.jsonl").exists()  # nothing is merged until --merge
        part = manifest.read_rows(out / "parts" / f"{manifest.shard_tag(i, 3)}.jsonl")
        assert all(shard_of(row["source"], 3) == i for row in part)
        assert (out / "parts" / f"{manifest.shard_tag(i, 3)}.done").exists()
    res = run_cli(*_io(photos, out), "--merge")
    assert res.code == 3, res  # the bad inputs are listed in errors.jsonl
    assert f"merged 3 shard(s): {N_GOOD} pairs, {len(BAD)} errors" in res.out
    assert_same_files(whole, dataset_files(out))


def test_merge_with_a_missing_shard_is_a_clear_error(run_cli, photos, tmp_path):
    out = tmp_path / "out"
    for i in (0, 2):
        assert run_cli(*_io(photos, out), "--shard", f"{i}/3").code in (0, 3)
    res = run_cli(*_io(photos, out), "--merge")
    assert res.code == 2
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert "shard 1/3" in res.err and "--shard 1/3" in res.err
    assert not (out / "manifest.jsonl").exists() and not (out / "dataset.json").exists()


def test_merge_refuses_a_damaged_part(run_cli, photos, tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        assert run_cli(*_io(photos, out), "--shard", f"{i}/2").code in (0, 3)
    part = out / "parts" / f"{manifest.shard_tag(1, 2)}.jsonl"
    lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) >= 2
    part.write_text("".join(lines[:-1]), encoding="utf-8")  # a lost row
    res = run_cli(*_io(photos, out), "--merge")
    assert res.code == 2 and "shard 1/2" in res.err and "Traceback" not in res.err
    assert not (out / "manifest.jsonl").exists()
    assert not list(out.rglob("*.tmp"))


def test_concurrent_shard_jobs_in_one_output(photos, whole, tmp_path, config_file):
    """Three shard jobs starting together in the same empty output (mkdir, parts/run.json races)."""
    out = tmp_path / "out"
    args = [sys.executable, str(REPO_ROOT / "generate.py"), "--config", str(config_file), *_io(photos, out),
            "--set", "backend=numpy", "--set", "workers=1", "--quiet"]
    procs = [subprocess.Popen(args + ["--shard", f"{i}/3"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 3), err
    merge = subprocess.run(args + ["--merge"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert merge.returncode == 3, merge.stderr
    assert_same_files(whole, dataset_files(out))
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.journal-*"))


def test_run_json_is_claimed_once_by_racing_jobs(tmp_path):
    """Jobs with different configs racing for one output: all see the same winner, and no temp file stays."""
    for attempt in range(20):
        out = tmp_path / str(attempt)
        start = threading.Barrier(8)
        seen = []

        def job(k):
            start.wait()
            seen.append(manifest.claim_run(str(out), {"fingerprint": f"config-{k}"}))

        threads = [threading.Thread(target=job, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == 8 and len({s["fingerprint"] for s in seen}) == 1
        assert manifest.read_run(str(out)) == seen[0]
        assert os.listdir(out / "parts") == ["run.json"]


def test_other_config_into_the_same_output_is_refused(photos, tmp_path):
    out = tmp_path / "out"
    pipeline.run(load_config(None, [f"input={photos}", f"output={out}", "backend=numpy", "seed=0"]), limit=1)
    with pytest.raises(ConfigError, match="different config"):
        pipeline.run(load_config(None, [f"input={photos}", f"output={out}", "backend=numpy", "seed=1"]))


def test_each_shard_job_lists_every_folder_once(photos, tmp_path, monkeypatch):
    """'No global sort, nothing scanned twice': a shard job lists each input folder once, lazily."""
    listed = []
    real = os.scandir

    def counting(path):
        listed.append(os.path.realpath(path))
        return real(path)

    folders = sorted(os.path.realpath(d) for d, _, _ in os.walk(photos))
    root = os.path.realpath(photos)
    config = load_config(None, [f"input={photos}", f"output={tmp_path / 'out'}", "backend=numpy", "workers=1"])
    monkeypatch.setattr(sources.os, "scandir", counting)
    pipeline.run(config, shard=(1, 3))
    monkeypatch.undo()
    # os.scandir is patched for the whole process (glob uses it too): count the input folders only.
    assert sorted(p for p in listed if p == root or p.startswith(root + os.sep)) == folders


# ---------------------------------------------------------------- the Dask engine


def test_engine_none_never_imports_dask(photos, tmp_path, config_file):
    code = (
        "import sys\n"
        "from lowlight_gpu import cli\n"
        f"code = cli.main(['--config', {str(config_file)!r}, '--set', 'input={photos}', "
        f"'--set', 'output={tmp_path / 'out'}', '--set', 'backend=numpy', '--quiet'])\n"
        "assert code == 3, code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not loaded, loaded\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_missing_dask_extra_is_one_line_before_writing(run_cli, photos, tmp_path, monkeypatch):
    for name in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import distributed` raise ImportError
    monkeypatch.delitem(sys.modules, "lowlight_gpu.distributed", raising=False)
    out = tmp_path / "out"
    res = run_cli(*_io(photos, out), "--set", "distributed.engine=dask")
    assert res.code == 2
    assert res.err == "lowlight-gpu: error: distributed.engine: dask needs the dask extra: pip install -e '.[dask]'\n"
    assert not out.exists()


try:
    import distributed as dask_distributed
except ImportError:  # only the tests below need it; CI installs the extra (.[test,dask])
    dask_distributed = None
needs_dask = pytest.mark.skipif(dask_distributed is None, reason="the dask extra is not installed")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_dask
def test_unreachable_scheduler_is_a_config_error():
    from lowlight_gpu.distributed import DaskEngine

    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:"):
        DaskEngine(f"tcp://127.0.0.1:{_free_port()}", connect_timeout=1)


@needs_dask
def test_dask_local_cluster_matches_a_local_run(photos, whole, tmp_path):
    """A real LocalCluster (worker processes on loopback): its output equals the local threads run."""
    from lowlight_gpu.distributed import DaskEngine

    out = tmp_path / "out"
    config = load_config(None, [f"input={photos}", f"output={out}", "backend=numpy", "workers=2",
                                "distributed.engine=dask"])
    engine = DaskEngine(None)
    result = pipeline.run(config, engine=engine)
    assert (result.pairs, result.errors) == (N_GOOD, len(BAD))
    assert_same_files(whole, dataset_files(out))
    # Resume through a running scheduler given by address (in-process workers, tcp on loopback):
    # everything is verified and skipped, nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    with dask_distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, protocol="tcp",
                                       host="127.0.0.1", dashboard_address=None) as cluster:
        again = pipeline.run(config, engine=DaskEngine(cluster.scheduler_address))
    assert again.skipped == N_GOOD
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert_same_files(whole, dataset_files(out))


@needs_dask
def test_dask_shard_and_local_shard_merge_to_a_whole_run(photos, whole, tmp_path):
    """Scale-out paths mix: one shard on a Dask cluster (in-process workers), the other on local threads."""
    from lowlight_gpu.distributed import DaskEngine

    out = tmp_path / "out"
    config = load_config(None, [f"input={photos}", f"output={out}", "backend=numpy", "workers=2"])
    pipeline.run(config, shard=(0, 2), engine=DaskEngine(None, processes=False))
    pipeline.run(config, shard=(1, 2))
    pipeline.merge(config)
    assert_same_files(whole, dataset_files(out))


@needs_dask
def test_ordered_results_keeps_order_and_bounds_in_flight():
    """The engine's reorder loop: results in submission order, never more than the window submitted ahead."""
    import time

    from joblib import delayed

    from lowlight_gpu.distributed import ordered_results

    pulled = []

    def calls():
        for i in range(30):
            pulled.append(i)
            yield delayed(_slow_identity)(i, (30 - i) % 4 * 0.01)

    with dask_distributed.Client(processes=False, n_workers=1, threads_per_worker=3,
                                 dashboard_address=None) as client:
        out = []
        for value in ordered_results(client, calls(), lambda: 5):
            assert len(pulled) - len(out) <= 5  # the scan is pulled lazily, a window at a time
            out.append(value)
            time.sleep(0.001)
    assert out == list(range(30))


def _slow_identity(i, delay):
    """i, after delay seconds."""
    import time

    time.sleep(delay)
    return i
