"""lowlight_gpu.storage against a real S3 server (SeaweedFS, the s3 fixtures of conftest.py), and the config
checks of object-storage URLs (no server needed).

The server tests reach it through the AWS_* variables alone (s3_env), as a user's run would; the ones that
pass storage_options say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lowlight_gpu import storage
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.errors import ConfigError, StorageError


@pytest.fixture
def loc(s3_env):
    """A Location on a fresh bucket, under a prefix."""
    return storage.Location(f"s3://{s3_env.bucket()}/run/out/")


def test_write_read_size_exists_remove(loc):
    loc.write("a/one.bin", b"0123456789")
    assert loc.read("a/one.bin") == b"0123456789"
    assert loc.read_range("a/one.bin", 3, 4) == b"3456"
    assert loc.read_range("a/one.bin", 8, 10) == b"89"  # fewer at the end
    assert loc.size("a/one.bin") == 10
    assert loc.exists("a/one.bin")
    assert loc.size("a") is None and not loc.exists("a")  # a prefix is no object
    assert loc.size("a/none.bin") is None and not loc.exists("a/none.bin")
    with pytest.raises(FileNotFoundError):
        loc.read("a/none.bin")
    loc.write("a/one.bin", b"new")  # a write replaces
    assert loc.read("a/one.bin") == b"new"
    loc.remove("a/one.bin")
    assert not loc.exists("a/one.bin")
    loc.remove("a/one.bin")  # nothing there: no error


def test_many_at_once(loc):
    loc.write_many({"m/a.bin": b"aa", "m/b.bin": b"bbbb", "m/c/d.bin": b""})
    assert loc.read_many(["m/a.bin", "m/c/d.bin"]) == {"m/a.bin": b"aa", "m/c/d.bin": b""}
    assert loc.sizes(["m/a.bin", "m/none.bin", "m/b.bin", "m", "m/c/d.bin"]) == [2, None, 4, None, 0]
    assert loc.sizes(["m/b.bin"]) == [4]


def test_list_is_fresh_and_relative(loc):
    assert loc.list() == {}
    loc.write("x.json", b"{}")
    loc.write("parts/p1.jsonl", b"1\n")
    loc.write("parts/deep/p2.jsonl", b"22\n")
    assert loc.list() == {"x.json": 2, "parts/p1.jsonl": 2, "parts/deep/p2.jsonl": 3}
    assert loc.list("parts") == {"parts/p1.jsonl": 2, "parts/deep/p2.jsonl": 3}
    loc.write("parts/p3.jsonl", b"")  # written after a listing: the next one sees it
    loc.remove("x.json")
    assert loc.list() == {"parts/p1.jsonl": 2, "parts/deep/p2.jsonl": 3, "parts/p3.jsonl": 0}


def test_upload_download(loc, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 40)
    loc.upload(str(src), "up/src.bin")
    assert loc.size("up/src.bin") == 10240
    dst = tmp_path / "dst.bin"
    loc.download("up/src.bin", str(dst))
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        loc.download("up/none.bin", str(tmp_path / "none.bin"))


def test_create_exclusive_is_a_conditional_put(loc):
    # SeaweedFS answers the second If-None-Match: * PUT with 412; the first object must stay as it was
    assert loc.create_exclusive("locks/shard-0", b"first") is True
    assert loc.create_exclusive("locks/shard-0", b"second") is False
    assert loc.read("locks/shard-0") == b"first"
    loc.remove("locks/shard-0")
    assert loc.create_exclusive("locks/shard-0", b"third") is True


def test_listing_and_stat_url(s3_env):
    bucket = s3_env.bucket()
    url = f"s3://{bucket}/photos"
    loc = storage.Location(url)
    names = {"b/2.png": b"22", "a.jpg": b"1", "b/1.png": b"333", "c/d/e.png": b""}
    for rel, data in names.items():
        loc.write(rel, data)
    storage.Location(f"s3://{bucket}/photos-other").write("x.png", b"a sibling prefix, not below photos/")
    found = storage.listing(url + "/")
    assert [rel for rel, _, _ in found] == sorted(names)
    assert {rel: size for rel, size, _ in found} == {rel: len(data) for rel, data in names.items()}
    assert all(mtime > 0 for _, _, mtime in found)
    for rel, size, mtime in found:
        assert storage.stat_url(f"{url}/{rel}") == (size, mtime)
    assert storage.listing(f"s3://{bucket}/nothing-here") == []


def test_aws_env_reaches_subprocesses(s3_env):
    """The fixture's environment alone lets another process (a shard job) read what this one wrote."""
    loc = storage.Location(f"s3://{s3_env.bucket()}")
    loc.write("k", b"from the parent")
    code = "import sys; from lowlight_gpu import storage; sys.stdout.write(storage.read_url(sys.argv[1]).decode())"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code, loc.url_of("k")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "from the parent"


def test_storage_options_without_env(s3, monkeypatch):
    """storage_options alone (no AWS_* variables) reach the server too."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    loc = storage.Location(f"s3://{s3.bucket()}/p", s3.storage_options)
    loc.write("k", b"v")
    assert loc.list() == {"k": 1}


def test_storage_error_never_shows_the_secret(s3, monkeypatch):
    secret = "TOPSECRET-3f1a9c7e"
    options = dict(s3.storage_options, key="AKIDLOWLIGHTTEST", secret=secret)
    loc = storage.Location("s3://no-such-bucket-lowlight/out", options)
    for attempt in (lambda: loc.write("a.png", b"1"), lambda: loc.upload(__file__, "a.py"),
                    lambda: loc.create_exclusive("lock", b"1")):
        with pytest.raises(StorageError) as info:
            attempt()
        exc = info.value
        text = " ".join([str(exc), repr(exc), *map(str, exc.args), str(exc.filename)])
        assert "s3://no-such-bucket-lowlight/out/" in text
        assert secret not in text
        assert exc.__cause__ is None and exc.__suppress_context__  # the botocore error (and its request) dropped


def test_gs_without_gcsfs_names_the_extra(monkeypatch):
    import fsspec.registry

    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed, whether it is or not
    monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, "gs", raising=False)
    with pytest.raises(ConfigError) as info:
        config_from_dict({"output": "gs://b/x"})
    message = str(info.value)
    assert "output" in message and "gs://b/x" in message
    assert "pip install 'lowlight-gpu[gcs]'" in message
    assert "\n" not in message


def test_unknown_scheme_is_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"output": "ftp2://x"})
    message = str(info.value)
    assert "ftp2://" in message and "s3://" in message and "\n" not in message


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_s3_without_bucket_is_refused(url):
    with pytest.raises(ConfigError, match="names no bucket"):
        config_from_dict({"output": url})


def test_set_reaches_inside_storage_options_and_nothing_else_is_opened_up():
    from lowlight_gpu.config import load_config

    cfg = load_config(None, ["input=/nowhere", "output=/nowhere/out", "storage_options={key: a}",
                             "storage_options.client_kwargs.region_name=eu-west-1",
                             "storage_options.endpoint_url=http://127.0.0.1:9000"], check_paths=False)
    assert cfg.storage_options == {"key": "a", "client_kwargs": {"region_name": "eu-west-1"},
                                   "endpoint_url": "http://127.0.0.1:9000"}
    assert "storage_options" not in json.dumps(cfg.output_settings())  # not fingerprinted, never recorded
    with pytest.raises(ConfigError, match="unknown config key 'seed.x'"):
        load_config(None, ["seed.x=1"], check_paths=False)
