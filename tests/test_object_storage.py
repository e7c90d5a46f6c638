"""Runs whose output is on object storage, end to end, against a real S3 server (SeaweedFS, tests/s3_server.py).

Every test compares the bucket with a local run of the same config: pair images, tars, manifest, errors and
dataset.json must be the same bytes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, write_images

MERGED = ("manifest.jsonl", "errors.jsonl", "dataset.json")
SPECS = {f"{d}/p{i}.png": (20 + i, 14 + (i % 3)) for d in ("a", "b") for i in range(5)}
SPECS["b/broken.png"] = (8, 8)


def fresh_fs(options=None):
    """An s3fs filesystem that sees every write (no cached listings); credentials from the environment."""
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True, **(options or {}))


def bucket_bytes(url, fs=None):
    """{rel: bytes} of the pair files (images, tars) and merged files under url (parts/ and reports left out)."""
    fs = fs or fresh_fs()
    base = url.split("://", 1)[1].rstrip("/") + "/"
    keys = [k for k in fs.find(base) if not k[len(base):].startswith(("parts/", "report.", "meta_info.txt"))]
    return {k[len(base):]: data for k, data in fs.cat(keys).items()} if keys else {}


def local_bytes(folder):
    """The same view of a local output folder."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith("parts/") and not rel.startswith("report.") \
                and rel != "meta_info.txt" and not p.name.startswith("."):
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def run_cli(run_cli):
    """The conftest run_cli with workers=1: threads, no worker processes to start per run."""
    def run(*args, defaults=True):
        return run_cli(*args, "--set", "workers=1", defaults=defaults) if defaults else run_cli(*args, defaults=False)

    return run


@pytest.fixture
def photos(tmp_path):
    """A small input tree with one undecodable file (an errors row)."""
    folder = tmp_path / "in"
    write_images(folder, {k: v for k, v in SPECS.items() if k != "b/broken.png"})
    (folder / "b" / "broken.png").write_bytes(b"not a png")
    return folder


def test_a_whole_run_on_a_bucket_equals_a_local_run_then_resumes_and_verifies(s3, s3_env, run_cli, photos,
                                                                                tmp_path):
    url = f"s3://{s3.bucket()}/out"
    local = tmp_path / "local"
    assert run_cli("--set", f"input={photos}", "--set", f"output={local}").code == 3  # one broken input
    first = run_cli("--set", f"input={photos}", "--set", f"output={url}")
    assert first.code == 3, first.stderr
    want = local_bytes(local)
    assert bucket_bytes(url) == want and len(want) == 2 * 10 + len(MERGED)
    again = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--set", "workers=1")
    assert again.code == 3 and bucket_bytes(url) == want
    fs = fresh_fs()
    parts = sorted(k.rsplit("/", 1)[-1] for k in fs.find(url[5:] + "/parts"))
    assert parts == ["run.json", "shard-00000-of-00001.done", "shard-00000-of-00001.errors.jsonl",
                     "shard-00000-of-00001.jsonl"]  # no lock, no journal piece left
    verified = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--verify")
    assert verified.code == 0 and "all match" in verified.out


def test_shard_jobs_reading_and_writing_a_bucket_and_a_merge_equal_a_whole_local_run(s3, s3_env, run_cli, photos,
                                                                                      tmp_path):
    bucket = s3.bucket()
    source = f"s3://{bucket}/photos"
    fresh_fs().put(f"{photos}/", f"{bucket}/photos/", recursive=True)
    url = f"s3://{bucket}/sharded"
    local = tmp_path / "local"
    run_cli("--set", f"input={photos}", "--set", f"output={local}")
    for i in range(3):
        assert run_cli("--set", f"input={source}", "--set", f"output={url}", "--shard", f"{i}/3").code in (0, 3)
    merged = run_cli("--set", f"input={source}", "--set", f"output={url}", "--merge")
    assert merged.code == 3, merged.err  # the broken input is listed in errors.jsonl
    assert bucket_bytes(url) == local_bytes(local)
    verified = run_cli("--set", f"input={source}", "--set", f"output={url}", "--verify")
    assert verified.code == 0 and "all match" in verified.out


def test_a_missing_shard_is_named_and_nothing_is_merged(s3, s3_env, run_cli, photos):
    url = f"s3://{s3.bucket()}/half"
    run_cli("--set", f"input={photos}", "--set", f"output={url}", "--shard", "0/2")
    refused = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--merge")
    assert refused.code == 2 and "shard 1/2 not done" in refused.err
    assert "manifest.jsonl" not in bucket_bytes(url)
    before = bucket_bytes(url)
    for extra in ([], ["--dry-run"]):  # another config is refused before anything is written, dry run or not
        other = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--set", "seed=9", "--shard", "1/2",
                        *extra)
        assert other.code == 2 and "different config" in other.err and url in other.err, other.err
        assert "lowlight-gpu-work-" not in other.err
    assert bucket_bytes(url) == before


def test_sigkill_mid_run_then_resume_gives_the_bytes_of_an_uninterrupted_run(s3, s3_env, run_cli, tmp_path):
    """The killed job's journal pieces are reused; pairs PUT after the last piece are redone, same bytes."""
    photos = tmp_path / "many"
    write_images(photos, {f"d{i % 4}/img{i:03d}.png": (32, 24) for i in range(250)})
    local = tmp_path / "local"
    assert run_cli("--set", f"input={photos}", "--set", f"output={local}").code == 0
    url = f"s3://{s3.bucket()}/killed"
    args = [sys.executable, str(REPO_ROOT / "generate.py"), "--set", f"input={photos}", "--set", f"output={url}",
            "--set", "backend=numpy", "--set", "workers=1", "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **s3.env})
    fs, prefix, deadline = fresh_fs(), url[5:] + "/parts", time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(".journal-" in k for k in fs.find(prefix)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before a journal piece appeared: enlarge the input"
    assert not any(k.endswith(".done") for k in fs.find(prefix))
    resumed = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--set", "backend=numpy",
                      defaults=False)
    assert resumed.code == 0, resumed.err
    assert "already done" in resumed.out  # the pieces' pairs were reused, not redone
    assert bucket_bytes(url) == local_bytes(local)
    left = [k for k in fs.find(prefix) if ".journal-" in k or k.endswith(".lock")]
    assert left == []


def test_a_journaled_object_with_other_bytes_is_redone(s3, s3_env, run_cli, photos, tmp_path):
    """A torn or foreign object under a journal row's name: same size, other bytes, caught by the row's CRC."""
    from lowlight_gpu import remote_output, storage

    url = f"s3://{s3.bucket()}/torn"
    local = tmp_path / "local"
    run_cli("--set", f"input={photos}", "--set", f"output={local}")
    run_cli("--set", f"input={photos}", "--set", f"output={url}")
    store = storage.Location(url)
    tag = "shard-00000-of-00001"
    part = store.read(f"parts/{tag}.jsonl")
    # Back to the state of a killed run: the rows only in a journal piece, no part, no done-marker.
    store.write(f"parts/{tag}.journal-1.jsonl.p000001", part)
    for name in (f"{tag}.jsonl", f"{tag}.errors.jsonl", f"{tag}.done"):
        store.remove(f"parts/{name}")
    victim = "low/a/p2.png"
    good = store.read(victim)
    store.write(victim, bytes(b ^ 0xFF for b in good))  # the same size
    store.remove("high/b/p1.png")
    assert remote_output.LEASE_SECONDS > 0
    resumed = run_cli("--set", f"input={photos}", "--set", f"output={url}")
    assert resumed.code == 3
    assert store.read(victim) == good
    assert bucket_bytes(url) == local_bytes(local)


def test_webdataset_on_a_bucket_reads_back_through_pair_dataset_and_webdataset(s3, s3_env, run_cli, photos,
                                                                                tmp_path):
    from lowlight_gpu import PairDataset

    url = f"s3://{s3.bucket()}/wds"
    local = tmp_path / "local"
    keys = ["--set", "save.container=webdataset", "--set", "save.shard_pairs=4"]
    run_cli("--set", f"input={photos}", "--set", f"output={local}", *keys)
    assert run_cli("--set", f"input={photos}", "--set", f"output={url}", *keys).code == 3
    got, want = bucket_bytes(url), local_bytes(local)
    assert got == want and sum(k.endswith(".tar") for k in got) == 3
    remote, here = PairDataset(url), PairDataset(local)
    assert len(remote) == len(here) == 10
    for i in range(len(here)):
        assert all(np.array_equal(a, b) for a, b in zip(remote[i], here[i]))
    wds = pytest.importorskip("webdataset")
    tar_url = f"{url}/shards/data-000000.tar"
    fetch = f"{sys.executable} -c \"import fsspec,sys; sys.stdout.buffer.write(fsspec.open('{tar_url}').open().read())\""
    samples = list(wds.WebDataset(f"pipe:{fetch}", shardshuffle=False, empty_check=False))
    rows = [json.loads(line) for line in (local / "manifest.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["shard"] == "shards/data-000000.tar"]
    assert [s["__key__"] for s in samples] == [r["key"] for r in first]
    with (local / "shards" / "data-000000.tar").open("rb") as f:
        import tarfile

        members = {m.name: tarfile.open(fileobj=f).extractfile(m).read() for m in tarfile.open(fileobj=f)}
    for s in samples:
        assert s["high.png"] == members[f"{s['__key__']}.high.png"]
        assert s["low.png"] == members[f"{s['__key__']}.low.png"]


def test_a_live_lock_on_the_bucket_refuses_a_second_job_and_a_dead_one_is_taken_over(s3, s3_env, run_cli,
                                                                                       photos, monkeypatch):
    import socket

    from lowlight_gpu import storage

    url = f"s3://{s3.bucket()}/locked"
    store = storage.Location(url)
    lock = "parts/shard-00000-of-00001.lock"
    live = {"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()}
    store.write(lock, json.dumps(live).encode())
    refused = run_cli("--set", f"input={photos}", "--set", f"output={url}")
    assert refused.code == 5 and f"pid {os.getpid()}" in refused.err and url in refused.err
    merging = run_cli("--set", f"input={photos}", "--set", f"output={url}", "--merge")
    assert merging.code == 5 and "shard 0/1" in merging.err  # no merge while a shard job holds its lock
    assert "manifest.jsonl" not in bucket_bytes(url)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.write(lock, json.dumps(dict(live, pid=dead.pid)).encode())
    from lowlight_gpu import remote_output

    beats = []
    write = storage.Location.write
    monkeypatch.setattr(remote_output, "HEARTBEAT_SECONDS", 0.01)  # many beats during the run
    monkeypatch.setattr(storage.Location, "write",
                        lambda self, rel, data: (beats.append(rel) if rel == lock else None, write(self, rel, data)))
    assert run_cli("--set", f"input={photos}", "--set", f"output={url}").code == 3
    assert beats and not store.exists(lock)  # taken over, refreshed, and gone with the run, never put back


def test_storage_options_reach_the_store_and_are_never_recorded(s3, s3_env, run_cli, photos, tmp_path,
                                                                monkeypatch):
    secret = "SECRET-7f3a-never-written"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    from lowlight_gpu import storage

    storage._FILESYSTEMS.clear()
    url = f"s3://{s3.bucket()}/secret"
    cfg = tmp_path / "secret.yaml"
    cfg.write_text(json.dumps({"input": str(photos), "output": url,
                               "storage_options": {"key": "lowlight", "secret": secret}}))
    result = run_cli("--config", cfg, "--set", "backend=numpy", "--quiet", defaults=False)
    assert result.code == 3, result.err
    assert secret not in result.out + result.err
    fs = fresh_fs(s3.storage_options)
    base = url[5:]
    for key in fs.find(base):
        if not key.endswith(".png"):
            assert secret.encode() not in fs.cat_file(key), key


def test_a_bucket_that_does_not_exist_stops_in_one_line(s3, s3_env, run_cli, photos):
    result = run_cli("--set", f"input={photos}", "--set", f"output=s3://no-such-bucket-{os.getpid()}/x")
    assert result.code in (2, 4)
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_webdataset_jobs_on_a_bucket_write_their_own_tars_and_the_merge_downloads_none(s3, s3_env, run_cli, photos,
                                                                                       tmp_path, monkeypatch):
    from lowlight_gpu import storage

    url = f"s3://{s3.bucket()}/jobs"
    local = tmp_path / "local"
    keys = ["--set", "save.container=webdataset", "--set", "save.shard_pairs=2"]
    for out in (local, url):
        for i in range(3):
            assert run_cli("--set", f"input={photos}", "--set", f"output={out}", *keys, "--shard", f"{i}/3").code \
                in (0, 3)
    fetched = []
    download = storage.Location.download
    monkeypatch.setattr(storage.Location, "download",
                        lambda self, rel, path: (fetched.append(rel), download(self, rel, path))[1])
    for out in (local, url):
        assert run_cli("--set", f"input={photos}", "--set", f"output={out}", *keys, "--merge").code == 3
    assert fetched and not [rel for rel in fetched if rel.endswith(".tar")]  # parts only: no image byte moved
    got = bucket_bytes(url)
    assert got == local_bytes(local)
    assert sorted(k for k in got if k.endswith(".tar"))[0].startswith("shards/data-00000-")
    info = json.loads(got["dataset.json"])["container"]
    assert info["tar_boundaries"] == "job" and info["jobs"] == 3


def test_a_crafted_name_from_the_bucket_is_never_fetched_outside_the_work_folder(monkeypatch, tmp_path):
    """Names come from listings and rows, written by whoever wrote the bucket: one that climbs out is skipped
    (the run's own checks then refuse the part that names it)."""
    from lowlight_gpu import remote_output, storage

    monkeypatch.setenv("LOWLIGHT_GPU_WORK", str(tmp_path / "work"))
    job = remote_output.Job("s3://bucket/out")
    fetched = []
    monkeypatch.setattr(storage.Location, "download",
                        lambda self, rel, path: (fetched.append((rel, path)), Path(path).write_bytes(b"{}")))
    try:
        for rel in ("../evil.tar", "parts/../../evil.tar", "/etc/evil", "parts//x.jsonl"):
            job._get(rel)
        job._get("parts/run.json")
        assert fetched == [("parts/run.json", os.path.join(job.work, "parts", "run.json"))]
    finally:
        job.close()
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


@pytest.mark.parametrize("keys, says", [(["save.container=lmdb"], "save.container lmdb"),
                                        (["save.container=webdataset", "save.tar_boundaries=global"],
                                         "save.tar_boundaries global")])
def test_what_a_bucket_cannot_take_is_refused_before_any_request(run_cli, photos, keys, says, monkeypatch):
    from lowlight_gpu import storage

    monkeypatch.setattr(storage, "filesystem", lambda *a, **k: pytest.fail("no request may be made"))
    sets = [x for key in keys for x in ("--set", key)]
    for extra in ([], ["--merge"], ["--dry-run"]):
        result = run_cli("--set", f"input={photos}", "--set", "output=s3://bucket/out", *sets, *extra)
        assert result.code == 2 and says in result.err and len(result.err.strip().splitlines()) == 1
