"""GPU acceptance check of the CuPy backend: equality with numpy, kernel throughput, speed-ups.

Run through scripts/gpu_check.sh on a GPU machine (no network, source checkout
on PYTHONPATH).  Writes OUTDIR/gpu_check.json and prints a readable summary.
Each section is independent: one that fails records its error and the rest run.

    python scripts/gpu_check.py OUTDIR [--pytest-rc N] [--samples DIR] [--workers 16]
"""

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lowlight_gpu import encode  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402
from lowlight_gpu.params import sample_params  # noqa: E402
from lowlight_gpu.synth import cupy_backend, numpy_backend  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
BENCH_SHAPE = (3000, 4000, 3)   # 12 megapixels
MAX_CHECK_PIXELS = 4_000_000    # larger sample photos are centre-cropped for the equality check
# Peak memory bandwidth (bytes/s) by device name, for when CUDA no longer reports the memory clock.
PEAK_BANDWIDTH = [("H200", 4.8e12), ("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12),
                  ("A100-SXM4-80GB", 2.039e12), ("A100", 1.555e12)]
PROGRESSIVE = {"progressive": {"enabled": True, "steps": 10, "save": "all"}}


# ---------------------------------------------------------------- small helpers

def median_seconds(fn, runs, warmup=1):
    """Median wall time of fn() over `runs` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gpu_median_seconds(cupy, fn, runs, warmup=3):
    """Median GPU time of fn() measured with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(runs):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times)


def compare(got, want):
    """Share of identical values and the largest absolute difference."""
    diff = np.abs(got.astype(np.int16) - want)
    return {"values": int(diff.size), "identical_fraction": float(np.mean(diff == 0)), "max_abs_diff": int(diff.max())}


def merge(rows):
    """Combine compare() rows: total values, overall identical share, worst difference."""
    total = sum(r["values"] for r in rows)
    same = sum(r["identical_fraction"] * r["values"] for r in rows)
    return {"values": total, "identical_fraction": same / max(total, 1),
            "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0)}


def sample_files(folder):
    """Image files directly in folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path):
    """An image file as a uint8 (H, W, 3) array, decoded with Pillow."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def centre_crop(rgb, max_pixels):
    """The central part of rgb with at most max_pixels pixels (same aspect ratio)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, (max_pixels / (h * w)) ** 0.5)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(rgb[top:top + ch, left:left + cw])


def synthetic_photos(count=8, shape=(1500, 2000)):
    """Smooth gradients with mild texture, standing in for photos when samples/ has none."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(count):
        r = 127.5 + 127.5 * np.sin(x / (97 + 13 * i) + i)
        g = 255.0 * y / h
        b = 255.0 * ((x + y + 50 * i) % w) / w
        noise = np.random.default_rng(i).normal(0, 4, (h, w, 3))
        out.append(np.clip(np.stack([r, g, b], -1) + noise, 0, 255).astype(np.uint8))
    return out


def write_synthetic(folder, count=8):
    """Write synthetic_photos() as PNG files into folder; returns their paths."""
    paths = []
    for i, rgb in enumerate(synthetic_photos(count)):
        path = Path(folder) / f"synthetic{i:02d}.png"
        Image.fromarray(rgb).save(path, compress_level=1)
        paths.append(path)
    return paths


def encode_png(rgb, compress_level=1):
    """PNG bytes of rgb."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# ---------------------------------------------------------------- sections

def device_info(cupy):
    """Name, memory, SM count and peak memory bandwidth of device 0."""
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {"name": name, "total_memory_gib": props.get("totalGlobalMem", 0) / 2 ** 30,
            "multiprocessors": props.get("multiProcessorCount"),
            "compute_capability": f"{props.get('major')}.{props.get('minor')}",
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion(), "cupy": cupy.__version__}
    info["peak_bandwidth_Bps"], info["peak_bandwidth_source"] = peak_bandwidth(cupy, props, name)
    return info


def peak_bandwidth(cupy, props, name):
    """Peak DRAM bandwidth in bytes/s and where the number came from."""
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    source = "getDeviceProperties"
    if not clock_khz or not bus_bits:
        try:  # cudaDevAttrMemoryClockRate = 36, cudaDevAttrGlobalMemoryBusWidth = 37
            clock_khz = cupy.cuda.runtime.deviceGetAttribute(36, 0)
            bus_bits = cupy.cuda.runtime.deviceGetAttribute(37, 0)
            source = "deviceGetAttribute"
        except Exception:
            clock_khz = bus_bits = None
    if clock_khz and bus_bits:
        return clock_khz * 1e3 * 2 * bus_bits / 8, source  # double data rate
    for key, value in PEAK_BANDWIDTH:
        if key in name:
            return value, f"table ({key})"
    return None, "unknown"


def availability():
    """cupy_backend.available() and how long the first call (compile or cache load) took."""
    t0 = time.perf_counter()
    ok, reason = cupy_backend.available()
    return {"available": ok, "reason": reason, "first_call_s": time.perf_counter() - t0}


def equality_on_samples(images):
    """cupy vs numpy_backend.render on each photo: default params and a 10-step progressive chain."""
    report = {"images": [], "default": None, "progressive_noise": None}
    default_rows, prog_rows = [], []
    for i, (name, rgb) in enumerate(images):
        rgb = centre_crop(rgb, MAX_CHECK_PIXELS)
        params = sample_params(1000 + i, config_from_dict({}))
        default_rows.append(compare(cupy_backend.render(rgb, params), numpy_backend.render(rgb, params)))
        pp = sample_params(2000 + i, config_from_dict(PROGRESSIVE))
        specs = [(t, True) for t in range(1, 11)] + [(10, False)]
        gots = cupy_backend.render_many(rgb, pp, specs)
        rows = [compare(got, numpy_backend.render(rgb, pp, t, noisy)) for got, (t, noisy) in zip(gots, specs)]
        prog_rows.extend(rows)
        report["images"].append({"name": name, "shape": list(rgb.shape), "default": default_rows[-1],
                                 "progressive_noise": merge(rows)})
    report["default"], report["progressive_noise"] = merge(default_rows), merge(prog_rows)
    return report


def photo_12mp(images):
    """A 12 MP photo: the first sample resized to BENCH_SHAPE (neighbouring values share codes, as in real data)."""
    if not images:
        return None
    h, w = BENCH_SHAPE[:2]
    return np.ascontiguousarray(np.asarray(Image.fromarray(images[0][1]).resize((w, h), Image.BICUBIC)))


def kernel_throughput(cupy, peak, images=(), runs=30):
    """GPU time of the fused noisy kernel (and the LUT kernel) on a 12 MP uint8 image, as bandwidth.

    'noisy' runs on uniformly random codes, the worst case for the Poisson table
    search (every lane of a warp reads a different table row); 'noisy_photo' on a
    photo resized to 12 MP, where neighbouring values mostly share rows.
    """
    random_rgb = np.random.default_rng(0).integers(0, 256, BENCH_SHAPE, dtype=np.uint8)
    photo = photo_12mp(list(images))
    params = sample_params(1, config_from_dict({}))
    result = {"shape": list(BENCH_SHAPE), "runs": runs, "bytes_per_run": 2 * random_rgb.size,
              "note": "bytes = 1 read + 1 write per value; table reads not counted"}
    variants = [("noisy", True, random_rgb), ("clean_lut", False, random_rgb)]
    if photo is not None:
        variants.append(("noisy_photo", True, photo))
    # Kernel-only timing needs the backend's launch helpers (the public API also builds tables on the CPU).
    for label, noisy, rgb in variants:
        d_in = cupy.asarray(rgb.reshape(-1))
        d_out = cupy.empty_like(d_in)
        job = cupy_backend._Job(params, None, noisy)
        blob = np.zeros(cupy_backend._layout([job]), np.uint8)
        cupy_backend._fill(blob, [job])
        views = cupy_backend._device_views(cupy.asarray(blob), job)
        seconds = gpu_median_seconds(cupy, lambda: cupy_backend._launch(job, views, d_in, d_out, 0), runs)
        got = cupy.asnumpy(d_out).reshape(rgb.shape)
        want = numpy_backend.render(rgb, params, None, noisy)
        same = np.array_equal(got, want)
        rate = 2 * rgb.size / seconds
        result[label] = {"median_s": seconds, "bytes_per_s": rate, "values_per_s": rgb.size / seconds,
                         "fraction_of_peak": rate / peak if peak else None, "matches_render": same}
    return result


def noise_speedup(runs=5):
    """12 MP noisy render: numpy backend vs cupy backend with transfers, numpy in and out."""
    rgb = np.random.default_rng(1).integers(0, 256, BENCH_SHAPE, dtype=np.uint8)
    params = sample_params(2, config_from_dict({}))
    t_numpy = median_seconds(lambda: numpy_backend.render(rgb, params), runs=3)
    t_cupy = median_seconds(lambda: cupy_backend.render(rgb, params), runs=runs, warmup=2)
    return {"shape": list(BENCH_SHAPE), "numpy_s": t_numpy, "cupy_s": t_cupy, "speedup": t_numpy / t_cupy}


def end_to_end(paths, workers=16, min_pairs=64, compress_level=1, repeats=3):
    """Pairs/s of the real pipeline (default config: noise on) per backend, and of its decode+encode floor.

    The floor decodes every input and encodes+writes the very arrays the pipeline writes
    (computed beforehand, untimed), with the same threads and PNG level
    (benchmarks/bench_pipeline.py defines it).  Inputs: min_pairs JPEGs of ~2 MP made
    from the bundled samples; ``paths`` is unused beyond choosing that set.  The three
    variants run interleaved, `repeats` times, and the medians are reported.
    """
    import shutil
    import tempfile

    sys.path.insert(0, str(REPO))
    from benchmarks.bench_pipeline import floor_run, planned_arrays
    from benchmarks.common import make_inputs, settled_time, timing_flushes
    from lowlight_gpu import pipeline

    tmp = tempfile.mkdtemp()
    try:
        # How much of each pipeline run is the end-of-shard flush to stable storage (crash safety),
        # which the floor does not do: reported separately.
        with timing_flushes() as flushed:
            inputs = make_inputs(os.path.join(tmp, "in"), count=min_pairs, megapixels=2.0)
            configs = {name: config_from_dict({"input": inputs, "output": os.path.join(tmp, name), "workers": workers,
                                               "backend": name, "save": {"compress_level": compress_level}})
                       for name in ("numpy", "cupy")}
            for cfg in configs.values():
                pipeline.run(cfg, limit=8)  # warm-up: kernels, streams, pinned buffers
            jobs = planned_arrays(configs["numpy"], os.path.join(tmp, "arrays"))
            pillow = encode.resolve("pillow", compress_level)  # the floor this section has always measured

            times = {"numpy": [], "cupy": [], "floor": []}
            flush_s = {"numpy": [], "cupy": []}
            for _ in range(repeats):  # interleaved, so drifting load hits every variant alike
                for name, cfg in configs.items():
                    flushed.clear()
                    times[name].append(settled_time(lambda: pipeline.run(cfg), cfg.output))
                    flush_s[name].append(sum(flushed))
                out = os.path.join(tmp, "floor")
                times["floor"].append(settled_time(lambda: floor_run(jobs, out, workers, pillow,
                                                              configs["numpy"].max_pixels, "threads"), out))
            result = {"pairs": min_pairs, "workers": workers, "megapixels": 2.0, "repeats": repeats,
                      "seconds": times, "flush_seconds": flush_s}
            for name, ts in times.items():
                result[f"{name}_pairs_per_s"] = min_pairs / statistics.median(ts)
            result["cupy_vs_numpy"] = result["cupy_pairs_per_s"] / result["numpy_pairs_per_s"]
            result["cupy_vs_floor"] = result["cupy_pairs_per_s"] / result["floor_pairs_per_s"]
            result["numpy_vs_floor"] = result["numpy_pairs_per_s"] / result["floor_pairs_per_s"]
            cupy_work = statistics.median(t - f for t, f in zip(times["cupy"], flush_s["cupy"]))
            result["cupy_vs_floor_without_flush"] = statistics.median(times["floor"]) / cupy_work
            return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def small_images(workers=16, count=4096, shape=(96, 128, 3), pairs=768, repeats=3):
    """Small images, batched across threads or one by one: render_many calls/s, and pipeline pairs/s.

    First `count` renders of a `shape` image (noise on, clean twin too) from `workers`
    threads; then the pipeline on `pairs` JPEGs of ~0.08 MP against its floor.
    Variants run interleaved, `repeats` times; medians are reported.
    """
    import shutil

    from benchmarks.bench_pipeline import floor_run, planned_arrays
    from benchmarks.common import make_inputs, settled_time
    from lowlight_gpu import pipeline

    tasks = [(np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8),
              sample_params(i, config_from_dict({}))) for i in range(64)]
    specs = [(None, True), (None, False)]
    passes = []
    real = cupy_backend._render_batch

    def counting(batch):
        passes.append(len(batch))
        return real(batch)

    def renders():
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: cupy_backend.render_many(*tasks[i % len(tasks)], specs), range(count)))

    result = {"shape": list(shape), "renders": count, "workers": workers, "pairs": pairs, "repeats": repeats}
    tmp = tempfile.mkdtemp()
    cupy_backend._render_batch = counting
    try:
        times = {"batched": [], "alone": []}
        renders()  # warm-up: threads' streams and pinned buffers
        passes.clear()
        for _ in range(repeats):
            for name in times:
                cupy_backend.configure(batch_small_images=name == "batched")
                times[name].append(median_seconds(renders, runs=1, warmup=0))
        result["render_calls_per_s"] = {k: count / statistics.median(v) for k, v in times.items()}
        result["images_per_batched_pass"] = repeats * count / max(1, len(passes))
        result["batched_vs_alone"] = statistics.median(times["alone"]) / statistics.median(times["batched"])

        inputs = make_inputs(os.path.join(tmp, "in"), count=pairs, megapixels=0.08)
        cfg = {name: config_from_dict({"input": inputs, "output": os.path.join(tmp, name), "workers": workers,
                                       "backend": backend, "save": {"compress_level": 1}})
               for name, backend in (("cupy_batched", "cupy"), ("cupy_alone", "cupy"), ("numpy", "numpy"))}
        jobs = planned_arrays(cfg["numpy"], os.path.join(tmp, "arrays"))
        pillow = encode.resolve("pillow", 1)
        runs = {name: [] for name in (*cfg, "floor")}
        for _ in range(repeats):
            for name, c in cfg.items():
                cupy_backend.configure(batch_small_images=name != "cupy_alone")
                runs[name].append(settled_time(lambda: pipeline.run(c), c.output))
            out = os.path.join(tmp, "floor")
            runs["floor"].append(settled_time(lambda: floor_run(jobs, out, workers, pillow, cfg["numpy"].max_pixels,
                                                                "threads"), out))
        result["pipeline_pairs_per_s"] = {k: pairs / statistics.median(v) for k, v in runs.items()}
        pps = result["pipeline_pairs_per_s"]
        result["pipeline_vs_floor"] = {k: pps[k] / pps["floor"] for k in cfg}
        return result
    finally:
        cupy_backend._render_batch = real
        cupy_backend.configure(batch_small_images=True)
        shutil.rmtree(tmp, ignore_errors=True)


PHYSICS_CAMERAS = ("virtual", "SonyA7S2", "IMX686", "CRVD")
PHYSICS_CHECK_PIXELS = 250_000  # the numpy reference costs a few us per site: crop for the equality check


def physics_check(cupy, images, runs=10):
    """noise.model physics: cupy vs numpy images and raw mosaics (must be identical), and GPU time per 12 MP."""
    from lowlight_gpu.synth import physics_gpu

    rows, raw_equal = [], True
    for i, (name, rgb) in enumerate(images):
        rgb = centre_crop(rgb, PHYSICS_CHECK_PIXELS)
        camera = PHYSICS_CAMERAS[i % len(PHYSICS_CAMERAS)]
        params = sample_params(3000 + i, config_from_dict({"noise": {"model": "physics", "camera": camera}}))
        rows.append(compare(cupy_backend.render(rgb, params), numpy_backend.render(rgb, params)))
        got, want = cupy_backend.render_raw(rgb, params), numpy_backend.render_raw(rgb, params)
        raw_equal = raw_equal and all(np.array_equal(a, b) for a, b in zip(got, want))
    report = {"cameras": list(PHYSICS_CAMERAS), "images": merge(rows), "raw_identical": raw_equal}
    photo = photo_12mp(images)
    if photo is not None:
        params = sample_params(4000, config_from_dict({"noise": {"model": "physics"}}))
        d_rgb = cupy.asarray(photo)
        kernels = physics_gpu._kernels()
        report["gpu_s_per_12mp"] = gpu_median_seconds(
            cupy, lambda: physics_gpu.render_device(cupy, kernels, d_rgb, params, None), runs)
        report["gpu_s_per_12mp_with_raw"] = gpu_median_seconds(
            cupy, lambda: physics_gpu.render_device(cupy, kernels, d_rgb, params, None, raw=True), runs)
    return report


# ---------------------------------------------------------------- driver

def section(report, key, fn, *args):
    """Run one section into report[key]; on failure record the error and carry on."""
    t0 = time.perf_counter()
    try:
        report[key] = fn(*args)
    except Exception as exc:
        report[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    print(f"[gpu_check] {key}: {time.perf_counter() - t0:.1f} s", flush=True)
    return report[key]


def summary(report):
    """A readable multi-line summary of the report."""
    lines = ["", "=== gpu_check summary ==="]
    dev = report.get("device", {})
    lines.append(f"device: {dev.get('name')}  peak {fmt_rate(dev.get('peak_bandwidth_Bps'))} "
                 f"({dev.get('peak_bandwidth_source')})  cupy {dev.get('cupy')}")
    lines.append(f"pytest exit code: {report.get('pytest_rc')}")
    avail = report.get("availability", {})
    lines.append(f"available: {avail.get('available')} {avail.get('reason', '')}  "
                 f"first call {avail.get('first_call_s', float('nan')):.2f} s")
    eq = report.get("equality", {})
    for key in ("default", "progressive_noise"):
        row = eq.get(key) or {}
        if "values" in row:
            lines.append(f"equality {key}: {row['identical_fraction']:.6%} identical of {row['values']} values, "
                         f"max |diff| {row['max_abs_diff']}")
    kt = report.get("kernel", {})
    for key in ("noisy", "noisy_photo", "clean_lut"):
        row = kt.get(key) or {}
        if "median_s" in row:
            frac = row["fraction_of_peak"]
            lines.append(f"kernel {key}: {row['median_s'] * 1e6:.0f} us per 12 MP, {fmt_rate(row['bytes_per_s'])}"
                         + (f" = {frac:.1%} of peak" if frac else "") + f", matches render: {row['matches_render']}")
    ns = report.get("noise_speed", {})
    if "speedup" in ns:
        lines.append(f"12 MP noisy render: numpy {ns['numpy_s']:.3f} s, cupy {ns['cupy_s']:.4f} s "
                     f"(with transfers) -> {ns['speedup']:.1f}x")
    e2e = report.get("end_to_end", {})
    if "floor_pairs_per_s" in e2e:
        lines.append(f"end-to-end ({e2e['pairs']} pairs, {e2e['workers']} threads): numpy "
                     f"{e2e['numpy_pairs_per_s']:.1f}, cupy {e2e['cupy_pairs_per_s']:.1f}, floor "
                     f"{e2e['floor_pairs_per_s']:.1f} pairs/s; cupy/numpy {e2e['cupy_vs_numpy']:.2f}x, "
                     f"cupy/floor {e2e['cupy_vs_floor']:.2f}")
        lines.append(f"end-to-end flush to stable storage per run (s): {e2e.get('flush_seconds')}; "
                     f"cupy/floor without it {e2e.get('cupy_vs_floor_without_flush', float('nan')):.2f}")
    sm = report.get("small_images", {})
    if "render_calls_per_s" in sm:
        calls = sm["render_calls_per_s"]
        lines.append(f"small images {sm['shape']} x {sm['renders']}, {sm['workers']} threads: batched "
                     f"{calls['batched']:.0f}, alone {calls['alone']:.0f} render calls/s "
                     f"({sm['batched_vs_alone']:.2f}x; {sm['images_per_batched_pass'] or 0:.1f} images per pass)")
    if "pipeline_vs_floor" in sm:
        lines.append(f"small images pipeline ({sm['pairs']} pairs of 0.08 MP): "
                     + ", ".join(f"{k} {v:.0f}" for k, v in sm["pipeline_pairs_per_s"].items()) + " pairs/s; vs floor "
                     + ", ".join(f"{k} {v:.2f}" for k, v in sm["pipeline_vs_floor"].items()))
    ph = report.get("physics", {})
    if "images" in ph:
        row = ph["images"]
        lines.append(f"physics equality: {row['identical_fraction']:.6%} identical of {row['values']} values, "
                     f"max |diff| {row['max_abs_diff']}; raw mosaics identical: {ph['raw_identical']}")
    if "gpu_s_per_12mp" in ph:
        lines.append(f"physics kernels: {ph['gpu_s_per_12mp'] * 1e3:.1f} ms per 12 MP image "
                     f"({ph['gpu_s_per_12mp_with_raw'] * 1e3:.1f} ms with raw mosaics)")
    for key, value in report.items():
        if isinstance(value, dict) and "error" in value:
            lines.append(f"ERROR in {key}: {value['error']}")
    return "\n".join(lines)


def fmt_rate(bps):
    """Bytes/s as GB/s text."""
    return "?" if not bps else f"{bps / 1e9:.0f} GB/s"


def main(argv=None):
    """Run every section, write OUTDIR/gpu_check.json, print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--pytest-rc", type=int, default=None)
    ap.add_argument("--samples", default=str(REPO / "samples"))
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    report = {"pytest_rc": args.pytest_rc, "python": platform.python_version(), "numpy": np.__version__,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import cupy
    except Exception as exc:
        cupy = None
        report["device"] = {"error": f"cupy is not importable: {type(exc).__name__}: {exc}"}
    if cupy is not None:
        section(report, "device", device_info, cupy)
    avail = section(report, "availability", availability)
    if avail.get("available"):
        with tempfile.TemporaryDirectory() as tmp:
            paths = sample_files(args.samples)
            report["samples"] = [p.name for p in paths] or "none found: synthetic gradients"
            paths = paths or write_synthetic(tmp)
            images = [(p.name, load_rgb(p)) for p in paths]
            section(report, "equality", equality_on_samples, images)
            section(report, "kernel", kernel_throughput, cupy, report["device"].get("peak_bandwidth_Bps"), images)
            section(report, "noise_speed", noise_speedup)
            section(report, "physics", physics_check, cupy, images)
            section(report, "end_to_end", end_to_end, paths, args.workers)
            section(report, "small_images", small_images, args.workers)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    Path(args.outdir, "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(summary(report))
    return 0 if avail.get("available") and not any(isinstance(v, dict) and "error" in v for v in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
