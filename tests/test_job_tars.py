"""save.tar_boundaries: job: each webdataset shard job writes its own final tars, --merge copies no image.

Against a whole run of the same config: every sample's member bytes and every manifest row (but its ``shard``)
are equal; each job's tars hold its samples in id order under shards/{split}-JJJJJ-KKKKKK.tar; the merge
moves a small fraction of the tars' bytes (measured with /proc/self/io in a subprocess); a job killed
mid-run or mid-assembly, run again, gives the tars of an uninterrupted job; tar_boundaries that differ from
the recorded value are refused; PairDataset, --verify and the webdataset library read the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlight_gpu import PairDataset
from lowlight_gpu.containers import tars
from lowlight_gpu.hashing import shard_of

from conftest import REPO_ROOT, read_jsonl

JOBS = 3
SETS = ["save.container=webdataset", "save.shard_pairs=2", "split={train: 0.6, val: 0.4}", "noise.model=none",
        "save.compress_level=0"]
SIZE = (512, 384)  # big enough that a manifest row is a small fraction of a sample (the traffic check)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Eleven random images, some in a subfolder."""
    folder = tmp_path_factory.mktemp("jobtars") / "in"
    rng = np.random.default_rng(7)
    for i in range(11):
        path = folder / ("sub" if i % 4 == 0 else "") / f"im{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(path)
    return folder


def config_of(inputs, out, *sets):
    """The config of a run into out."""
    from lowlight_gpu.config import load_config

    return load_config(None, [f"input={inputs}", f"output={out}", "workers=1", "backend=numpy", *SETS, *sets])


def run_job(inputs, out, shard=(0, 1), *sets):
    """pipeline.run of one job in this process; returns the RunResult."""
    from lowlight_gpu import pipeline

    return pipeline.run(config_of(inputs, out, *sets), shard=shard)


def merge(inputs, out, *sets):
    """pipeline.merge in this process."""
    from lowlight_gpu import pipeline

    return pipeline.merge(config_of(inputs, out, *sets))


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory):
    """A whole run and a merged run of JOBS shard jobs (tar_boundaries job, the default)."""
    base = tmp_path_factory.mktemp("jobtars-runs")
    whole, jobs = base / "whole", base / "jobs"
    run_job(inputs, whole)
    for i in range(JOBS):
        assert run_job(inputs, jobs, (i, JOBS)).errors == 0
    merge(inputs, jobs)
    return whole, jobs


def samples(root):
    """{key: {member name: bytes}} of every tar under root/shards."""
    found = {}
    for path in sorted((Path(root) / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar:
                found.setdefault(m.name.split(".", 1)[0], {})[m.name] = tar.extractfile(m).read()
    return found


def tree(root, folder="shards"):
    """{relative path: bytes} of every file under root/folder."""
    base = Path(root)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted((base / folder).rglob("*")) if p.is_file()}


def without_shard(rows):
    """Rows without their tar's name (the one field the layout changes)."""
    return [{k: v for k, v in r.items() if k != "shard"} for r in rows]


def expected_tar(members):
    """The bytes of a tar of [(name, data)] by the deterministic header and trailer rules."""
    body = b"".join(tars.member_header(n, len(d)) + d + tars.padding(len(d)) for n, d in members)
    return body + tars.trailer(len(body))


def test_every_sample_and_row_equals_a_whole_run(runs):
    whole, jobs = runs
    assert samples(jobs) == samples(whole) and len(samples(whole)) == 11
    rows, whole_rows = read_jsonl(jobs / "manifest.jsonl"), read_jsonl(whole / "manifest.jsonl")
    assert without_shard(rows) == without_shard(whole_rows)
    assert (jobs / "errors.jsonl").read_bytes() == (whole / "errors.jsonl").read_bytes()
    info, whole_info = (json.loads((r / "dataset.json").read_text()) for r in (jobs, whole))
    assert {k: v for k, v in info.items() if k != "container"} == \
        {k: v for k, v in whole_info.items() if k != "container"}
    assert "tar_boundaries" not in whole_info["container"]  # a whole run's dataset.json is today's


def test_each_job_holds_its_own_samples_in_id_order_under_its_own_names(runs):
    _, jobs = runs
    rows = read_jsonl(jobs / "manifest.jsonl")
    by_tar = {}
    for row in rows:
        job = shard_of(row["source"], JOBS)
        split = row["split"]
        assert tars.job_of(row["shard"]) == job and row["shard"].startswith(f"shards/{split}-{job:05d}-")
        by_tar.setdefault(row["shard"], []).append(row["key"])
    for job in range(JOBS):
        for split in ("train", "val"):
            keys = [r["key"] for r in rows if shard_of(r["source"], JOBS) == job and r["split"] == split]
            for k in range(0, (len(keys) + 1) // 2):  # S = 2: samples 2k, 2k+1 of the job's split
                assert by_tar.pop(f"shards/{split}-{job:05d}-{k:06d}.tar") == keys[2 * k:2 * k + 2]
    assert not by_tar
    # Every tar on disk is named by a row and has the deterministic bytes of its members, in order.
    on_disk = tree(jobs)
    assert set(on_disk) == {r["shard"] for r in rows}
    for rel, data in on_disk.items():
        with tarfile.open(jobs / rel) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]
        assert data == expected_tar(members)
    assert not list((jobs / "parts").glob("*.seg-*"))  # the staging segments are spent


def test_dataset_json_names_every_tar_and_webdataset_reads_them(runs):
    braceexpand = pytest.importorskip("braceexpand").braceexpand
    wds = pytest.importorskip("webdataset")
    _, jobs = runs
    container = json.loads((jobs / "dataset.json").read_text())["container"]
    assert container["tar_boundaries"] == "job" and container["jobs"] == JOBS and container["shard_pairs"] == 2
    named = []
    for split, entry in container["shards"].items():
        urls = entry["urls"]
        names = list(braceexpand(urls)) if isinstance(urls, str) else urls
        assert len(names) == entry["count"] and all(n.startswith(f"shards/{split}-") for n in names)
        named += names
    assert sorted(named) == sorted(tree(jobs))
    keys = [s["__key__"] for s in wds.WebDataset([str(jobs / n) for n in sorted(named)], shardshuffle=False)]
    assert sorted(keys) == sorted(r["key"] for r in read_jsonl(jobs / "manifest.jsonl"))


def test_pair_dataset_and_verify_read_a_job_dataset(inputs, runs, run_cli):
    whole, jobs = runs
    ds, ref = PairDataset(str(jobs)), PairDataset(str(whole))
    assert len(ds) == len(ref) == 11
    for i in (0, 5, 10):
        assert all(np.array_equal(a, b) for a, b in zip(ds[i], ref[i]))
    res = run_cli("--set", f"input={inputs}", "--set", f"output={jobs}", *[f"--set={s}" for s in SETS], "--verify", "4")
    assert res.code == 0 and "4 of 11 rows replayed" in res.out, res


IO_SCRIPT = r"""
import json, sys, time
from lowlight_gpu import pipeline, merging, manifest, run_record
from lowlight_gpu.containers import tars, metainfo
from lowlight_gpu.config import load_config

def io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}

config = load_config(None, sys.argv[1:])
before = io()
pipeline.merge(config)
after = io()
print(json.dumps({k: after[k] - before[k] for k in ("rchar", "wchar")}))
"""


def merge_io(inputs, out, *sets):
    """{rchar, wchar}: bytes the merge step of a --merge read and wrote, measured in its own process."""
    args = [f"input={inputs}", f"output={out}", "workers=1", "backend=numpy", *SETS, *sets]
    res = subprocess.run([sys.executable, "-c", IO_SCRIPT, *args], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_the_merge_moves_under_one_percent_of_the_tars(inputs, tmp_path):
    out = tmp_path / "out"
    for i in range(JOBS):
        run_job(inputs, out, (i, JOBS))
    tar_bytes = sum(len(b) for b in tree(out).values())
    moved = merge_io(inputs, out)
    assert moved["rchar"] + moved["wchar"] < tar_bytes / 100, (moved, tar_bytes)
    assert (out / "manifest.jsonl").exists()
    # The same measure sees a global-boundaries merge copy the samples: the measure can fail.
    glob_out = tmp_path / "global"
    for i in range(JOBS):
        run_job(inputs, glob_out, (i, JOBS), "save.tar_boundaries=global")
    copied = merge_io(inputs, glob_out, "save.tar_boundaries=global")
    assert copied["wchar"] > sum(len(b) for b in tree(glob_out).values()) / 2, copied


def test_global_boundaries_merge_to_a_whole_runs_bytes(inputs, runs, tmp_path):
    whole, _ = runs
    out = tmp_path / "out"
    for i in range(JOBS):
        run_job(inputs, out, (i, JOBS), "save.tar_boundaries=global")
    assert not (out / "shards").exists() or not list((out / "shards").iterdir())  # staged until the merge
    merge(inputs, out, "save.tar_boundaries=global")
    assert tree(out) == tree(whole)
    assert (out / "manifest.jsonl").read_bytes() == (whole / "manifest.jsonl").read_bytes()
    assert (out / "dataset.json").read_bytes() == (whole / "dataset.json").read_bytes()


def test_a_whole_run_is_the_same_under_both_values(inputs, runs, tmp_path):
    whole, _ = runs
    run_job(inputs, tmp_path / "g", (0, 1), "save.tar_boundaries=global")
    for name in ("manifest.jsonl", "dataset.json"):
        assert (tmp_path / "g" / name).read_bytes() == (whole / name).read_bytes()
    assert tree(tmp_path / "g") == tree(whole)


KILL_SCRIPT = r"""
import os, signal, sys
from lowlight_gpu import pipeline
from lowlight_gpu.config import load_config
from lowlight_gpu.containers import tars

moment, index, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
made = []

def progress(outcome):
    made.append(outcome)
    if moment == "mid-job" and len(made) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

link = tars._link_into_place

def link_then_die(source, final):  # once a first tar is in place, before the job's rows point at it
    link(source, final)
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "in-publish":
    tars._link_into_place = link_then_die
pipeline.run(load_config(None, sys.argv[4:]), shard=(index, count), progress=progress)
"""


@pytest.mark.parametrize("moment", ["mid-job", "in-publish"])
def test_a_killed_job_run_again_gives_an_uninterrupted_jobs_tars(inputs, runs, tmp_path, moment):
    _, jobs = runs
    out = tmp_path / "out"
    job = max(range(JOBS), key=lambda j: len(list((jobs / "shards").glob(f"*-{j:05d}-*.tar"))))
    args = [f"input={inputs}", f"output={out}", "workers=1", "backend=numpy", *SETS]
    res = subprocess.run([sys.executable, "-c", KILL_SCRIPT, moment, str(job), str(JOBS), *args], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not (out / "parts" / f"shard-{job:05d}-of-{JOBS:05d}.done").exists()
    again = run_job(inputs, out, (job, JOBS))
    assert again.skipped >= 2 and again.errors == 0
    mine = {rel: data for rel, data in tree(jobs).items() if tars.job_of(rel) == job}
    assert tree(out) == mine and mine
    assert not list((out / "parts").glob("*.seg-*")) and not list(out.rglob(".*.tmp"))
    part = f"parts/shard-{job:05d}-of-{JOBS:05d}.jsonl"
    assert (out / part).read_bytes() == (jobs / part).read_bytes()
    # A rerun of the finished job changes no tar.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert run_job(inputs, out, (job, JOBS)).skipped == again.pairs
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == mtimes


def test_other_tar_boundaries_than_recorded_are_refused(inputs, runs, run_cli, tmp_path):
    out = tmp_path / "out"
    run_job(inputs, out, (0, JOBS))
    sets = [f"--set={s}" for s in [f"input={inputs}", f"output={out}", *SETS, "save.tar_boundaries=global"]]
    before = sorted(p.name for p in (out / "parts").iterdir())
    res = run_cli(*sets, "--shard", f"1/{JOBS}")
    assert res.code == 2 and "tar_boundaries job" in res.err and "global" in res.err, res
    assert len(res.err.strip().splitlines()) == 1
    assert sorted(p.name for p in (out / "parts").iterdir()) == before  # nothing written
    for i in range(1, JOBS):
        run_job(inputs, out, (i, JOBS))
    res = run_cli(*sets, "--merge")
    assert res.code == 2 and "tar_boundaries job" in res.err and "global" in res.err, res
    assert not (out / "manifest.jsonl").exists()
    assert json.loads((out / "parts" / "run.json").read_text())["tar_boundaries"] == "job"
    marker = json.loads((out / "parts" / f"shard-00000-of-{JOBS:05d}.done").read_text())
    assert marker["tar_boundaries"] == "job"


def test_jobs_without_pairs_and_a_damaged_job_tar(tmp_path):
    """Jobs with no sources of their own make no tar (dataset.json then lists the names); a truncated tar of a
    finished job is redone by that job's rerun, to the same bytes."""
    from conftest import write_image

    inp = tmp_path / "in"
    for i in range(3):
        write_image(inp / f"p{i}.png", 9, 7, seed=i)
    out, jobs = tmp_path / "out", 6
    sets = ["save.shard_pairs=1", "split=null"]
    for i in range(jobs):
        run_job(inp, out, (i, jobs), *sets)
    merge(inp, out, *sets)
    owners = {shard_of(f"p{i}.png", jobs) for i in range(3)}
    assert len(owners) < jobs  # some jobs own no source
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(r["shard"][len("shards/"):] for r in rows)
    urls = json.loads((out / "dataset.json").read_text())["container"]["shards"]["data"]["urls"]
    assert urls == sorted(r["shard"] for r in rows)  # no brace pattern is exact: the list of names
    assert len(PairDataset(str(out))) == 3
    before = tree(out)
    job = tars.job_of(rows[0]["shard"])
    damaged = out / rows[0]["shard"]
    damaged.write_bytes(damaged.read_bytes()[:700])
    owned = sum(shard_of(f"p{i}.png", jobs) == job for i in range(3))
    assert run_job(inp, out, (job, jobs), *sets).skipped == owned - 1  # the damaged tar's one pair is redone
    assert tree(out) == before


def test_a_job_does_not_reuse_a_sample_from_another_jobs_tar(runs):
    """Rows of another job count's run: a sample in a tar of another index is made again, never read from there
    (that job may replace its tars at any time); one in the job's own tars is reused."""
    _, jobs = runs
    row = read_jsonl(jobs / "parts" / f"shard-00001-of-{JOBS:05d}.jsonl")[0]
    assert tars.job_of(row["_state"]["at"][0]) == 1
    own = tars.TarStaging(str(jobs), (1, 4), 2, job_tars=True)
    other = tars.TarStaging(str(jobs), (2, 4), 2, job_tars=True)
    merged = tars.TarStaging(str(jobs), (2, 4), 2, job_tars=False)  # global boundaries: reads it, as before
    assert own.check(row, True) and not other.check(row, True) and merged.check(row, True)


@pytest.mark.parametrize("count,scheduler", [(1, True), (JOBS, True), (1, False)])
def test_dask_workers_write_the_samples_and_build_the_tars(inputs, runs, tmp_path, monkeypatch, count, scheduler):
    """With the Dask engine the workers stage each sample on the shared output and (given a scheduler's address)
    build the final tars: only rows reach the run's process, and the tars are those of a run without Dask (a
    whole run, or JOBS jobs).  A LocalCluster's workers share this machine: they send the bytes, as before."""
    distributed = pytest.importorskip("distributed")
    from lowlight_gpu import pipeline
    from lowlight_gpu.containers import PAYLOAD
    from lowlight_gpu.distributed import DaskEngine

    whole, jobs = runs
    out = tmp_path / "out"
    came_back, real_put = [], tars.TarStaging.put
    planned, real_plan = [], tars._Plan.__init__

    def put(self, row, reused=False):
        came_back.append(PAYLOAD in row)
        return real_put(self, row, reused)

    def plan(self, root, rel):  # a tar planned here and built by a task on the cluster (tars.build_tar)
        planned.append(rel)
        real_plan(self, root, rel)

    monkeypatch.setattr(tars.TarStaging, "put", put)
    monkeypatch.setattr(tars._Plan, "__init__", plan)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        for i in range(count):
            engine = DaskEngine(cluster.scheduler_address) if scheduler else DaskEngine(None, processes=False)
            result = pipeline.run(config_of(inputs, out, "distributed.engine=dask"), shard=(i, count), engine=engine)
            assert result.errors == 0
    if count > 1:
        merge(inputs, out)
    reference = whole if count == 1 else jobs
    if scheduler:
        assert came_back and not any(came_back)  # no image bytes came back to the run's process
    else:
        assert came_back and all(came_back)  # the bytes came here, as without Dask
    if scheduler:
        assert sorted(planned) == sorted(tree(reference)) and len(planned) > 1  # one task per tar
    else:
        assert not planned  # built here
    assert tree(out) == tree(reference)
    assert (out / "manifest.jsonl").read_bytes() == (reference / "manifest.jsonl").read_bytes()
    assert not list((out / "parts").glob("*.seg-*")) and not list(out.rglob(".*.tmp"))


def test_samples_staged_by_dask_workers_are_reused_after_an_interrupt(inputs, runs, tmp_path):
    """An interrupted Dask run's journal points at its workers' staging tars: a rerun (here without Dask)
    checks and reuses those samples and builds the tars of an uninterrupted job."""
    distributed = pytest.importorskip("distributed")
    from lowlight_gpu import pipeline
    from lowlight_gpu.distributed import DaskEngine

    _, jobs = runs
    out, job = tmp_path / "out", 0
    made = []

    def stop_after_three(outcome):
        made.append(outcome)
        if len(made) == 3:
            raise KeyboardInterrupt

    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(config_of(inputs, out, "distributed.engine=dask"), shard=(job, JOBS),
                         progress=stop_after_three, engine=DaskEngine(cluster.scheduler_address))
    journal = read_jsonl(next((out / "parts").glob(f"shard-{job:05d}-of-{JOBS:05d}.journal-*.jsonl")))
    assert len(journal) == 3 and all("-w" in r["_state"]["at"][0] for r in journal)
    again = run_job(inputs, out, (job, JOBS))
    assert again.skipped == 3 and again.errors == 0
    assert tree(out) == {rel: data for rel, data in tree(jobs).items() if tars.job_of(rel) == job}
    assert not list((out / "parts").glob("*.seg-*"))


def test_a_job_merge_refuses_a_part_whose_rows_point_at_staging_tars(inputs, tmp_path, run_cli):
    """A job part whose rows still name staging tars (made before save.tar_boundaries, or cut short): --merge
    says which job to run again, exit 2, and writes no manifest."""
    out = tmp_path / "out"
    for i in range(JOBS):
        run_job(inputs, out, (i, JOBS), "save.tar_boundaries=global")
    run_json = out / "parts" / "run.json"
    body = json.loads(run_json.read_text())
    del body["tar_boundaries"]  # as a release before the key wrote it
    run_json.write_text(json.dumps(body) + "\n")
    for done in (out / "parts").glob("*.done"):
        marker = json.loads(done.read_text())
        del marker["tar_boundaries"]
        done.write_text(json.dumps(marker) + "\n")
    res = run_cli(*[f"--set={s}" for s in [f"input={inputs}", f"output={out}", *SETS]], "--merge")
    assert res.code == 2 and "run --shard 0/3 again" in res.err and len(res.err.strip().splitlines()) == 1, res
    assert not (out / "manifest.jsonl").exists()
    for i in range(JOBS):  # the fix it names: each job again, which builds its own tars from its staged samples
        assert run_job(inputs, out, (i, JOBS)).skipped > 0
    merge(inputs, out)
    assert json.loads((out / "dataset.json").read_text())["container"]["tar_boundaries"] == "job"
