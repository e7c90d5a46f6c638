"""Shared helpers for the benchmarks: a reproducible input set, timers, disk settling."""

import contextlib
import os
import shutil
import statistics
import time

import numpy as np
from PIL import Image

from lowlight_gpu.imageio import is_image_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "samples")


def make_inputs(folder, count=24, megapixels=1.0, fmt="JPEG"):
    """Write count photo-like inputs (~megapixels each) made from the bundled samples; returns folder."""
    os.makedirs(folder, exist_ok=True)
    photos = [Image.open(os.path.join(SAMPLES, n)).convert("RGB") for n in sorted(os.listdir(SAMPLES))
              if is_image_name(n)]
    for i in range(count):
        im = photos[i % len(photos)]
        scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.LANCZOS)
        if i // len(photos) % 2:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        ext = "jpg" if fmt == "JPEG" else "png"
        im.save(os.path.join(folder, f"img{i:03d}.{ext}"), fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return folder


def make_photo_crops(folder, count=480, size=(768, 512), quality=90, seed=0):
    """Write count distinct photo-like JPEGs of size (w, h): random crops of the bundled samples, resized; returns folder."""
    os.makedirs(folder, exist_ok=True)
    photos = [Image.open(os.path.join(SAMPLES, n)).convert("RGB") for n in sorted(os.listdir(SAMPLES))
              if is_image_name(n)]
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(count):
        im = photos[i % len(photos)]
        # A crop of 40-100% of the photo's width at the output's aspect ratio, anywhere in it: every file
        # differs (as in a real set), while the content stays that of photographs, not noise.
        cw = int(min(im.width, im.height * w / h) * rng.uniform(0.4, 1.0))
        ch = int(cw * h / w)
        x, y = int(rng.integers(0, im.width - cw + 1)), int(rng.integers(0, im.height - ch + 1))
        crop = im.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(os.path.join(folder, f"img{i:04d}.jpg"), "JPEG", quality=quality)
    return folder


def timed(fn, repeat=3):
    """Median wall time of fn() over repeat runs (fn does its own setup/cleanup outside the timing)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def fresh(folder):
    """Remove and recreate folder."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def settle(folder):
    """fresh(folder), then push every earlier write to disk: call before a timed run, outside the timing.

    The pipeline's end-of-shard syncfs flushes the whole filesystem, so without this
    it would also pay for the dirty pages the previous variant (say, the floor) left.
    """
    fresh(folder)
    if hasattr(os, "sync"):
        os.sync()
    return folder


def settled_time(fn, folder):
    """Wall time of fn() after settle(folder)."""
    settle(folder)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine():
    """A one-line description of this machine."""
    import platform

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.processor() or platform.machine()}, {cpus} CPUs, Python {platform.python_version()}, numpy {np.__version__}"


@contextlib.contextmanager
def timing_flushes():
    """Record the seconds of every manifest.flush_to_disk call (the end-of-shard sync) in the yielded list."""
    from lowlight_gpu import manifest

    real, seconds = manifest.flush_to_disk, []

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t0)

    manifest.flush_to_disk = timed
    try:
        yield seconds
    finally:
        manifest.flush_to_disk = real
