"""The CLI, timed as a user runs it, against two codec floors, side by side in one run.

Inputs: --count photo-like JPEGs of 768x512 (random crops of the bundled
samples, written to a temporary folder).  For each variant, interleaved,
median of --repeat runs, every run starting with earlier writes synced
(untimed):

* cli:          ``python generate.py`` in a subprocess, wall clock: start-up,
                the run and the end-of-run report included.
* pipeline:     pipeline.run() in this process (start-up and report excluded).
* pillow floor: decode each input, then write the very arrays the pipeline
                writes (precomputed, untimed) with Pillow PNG level 1, with
                the pipeline's workers and executor: the codec cost of the old
                pipeline, synthesis excluded.
* fast floor:   the same with the fast encoder (fpng).

Variants: noise off, the default config (noise on; its floors write the same
noisy images), and worker scaling (default config, the CLI with 1 and 2
workers in threads and in processes, --scaling-repeat runs each; the
"default" row is what a user gets: threads for 1 worker, processes for 2).  It also reports the dataset's size
against the Pillow level 1 floor's.

Usage: python benchmarks/bench_pipeline.py [--count 480] [--repeat 3] [--scaling-repeat 5] [--workers 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import REPO, machine, make_photo_crops, settle, settled_time  # noqa: E402
from lowlight_gpu import encode, fsutil, imageio, layout, pipeline, worker_pool  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402
from lowlight_gpu.hashing import pair_seed  # noqa: E402
from lowlight_gpu.params import sample_params  # noqa: E402
from lowlight_gpu.sources import scan  # noqa: E402
from lowlight_gpu.synth import numpy_backend  # noqa: E402


def planned_arrays(config, store):
    """For every input: (source path, [(rel, .npy of a low array)], high rel); the low arrays go to store as .npy."""
    os.makedirs(store, exist_ok=True)
    jobs = []
    for i, src in enumerate(scan(config.input)):
        dec = imageio.decode(src.path, config.max_pixels)
        plan = layout.plan_outputs(src.out_rel, config, None)
        params = sample_params(pair_seed(config.seed, src.rel), config)
        lows = numpy_backend.render_many(dec.rgb, params, [(o.t, o.noisy) for o in plan[1:]])
        saved = []
        for k, (out, arr) in enumerate(zip(plan[1:], lows)):
            npy = os.path.join(store, f"{i:05d}-{k}.npy")
            np.save(npy, arr)
            saved.append((out.rel, npy))
        jobs.append((src.path, plan[0].rel, saved))
    return jobs


def floor_pair(path, high_rel, lows, out, encoder, max_pixels):
    """Decode one input and write it and its precomputed low arrays with encoder; returns the bytes written."""
    written = 0
    for rel, arr in [(high_rel, imageio.decode(path, max_pixels).rgb)] + [(r, np.load(n)) for r, n in lows]:
        data = encoder.encode(arr, None)
        fsutil.write_atomic(os.path.join(out, rel), data)
        written += len(data)
    return written


def floor_run(jobs, out, workers, encoder, max_pixels, executor):
    """The codec floor: every job's decode and encodes, in the pipeline's executor and pool; returns total bytes."""
    calls = ((floor_pair, (p, h, lows, out, encoder, max_pixels), {}) for p, h, lows in jobs)
    if executor == "processes" and workers > 1:
        return sum(worker_pool.in_order(worker_pool.pool(workers), calls, 2 * workers))
    return sum(worker_pool.in_threads(calls, workers))


def seed_loop(inputs, out):
    """The seed document's loop, writing high and low with Pillow's default PNG settings."""
    import random

    from PIL import Image

    for name in sorted(os.listdir(inputs)):
        init_img = Image.open(os.path.join(inputs, name)).convert("RGB")
        low_img = np.asarray(init_img) / 255.0
        beta = 0.5 * random.random() + 0.5
        alpha = 0.1 * random.random() + 0.9
        gamma = 3.5 * random.random() + 1.5
        low_img = beta * np.power(alpha * low_img, gamma)
        low_img = (low_img * 255.0).clip(0, 255).astype("uint8")
        stem = os.path.splitext(name)[0]
        init_img.save(os.path.join(out, f"{stem}_high.png"))
        Image.fromarray(low_img).save(os.path.join(out, f"{stem}_low.png"))


def cli_args(inputs, out, overrides):
    """The generate.py command line for a variant."""
    args = [sys.executable, os.path.join(REPO, "generate.py"), "--quiet",
            "--set", f"input={inputs}", "--set", f"output={out}", "--set", "backend=numpy"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


def cli_time(inputs, out, overrides, executor=None):
    """Wall clock of the CLI (a fresh output, earlier writes synced first); raises if it fails."""
    settle(out)
    env = dict(os.environ)
    env.pop(worker_pool.EXECUTOR_ENV, None)
    if executor:
        env[worker_pool.EXECUTOR_ENV] = executor
    t0 = time.perf_counter()
    proc = subprocess.run(cli_args(inputs, out, overrides), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"generate.py failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds


def output_bytes(folder):
    """Total size of the PNGs under folder."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".png"))


def median(xs):
    """The median of a list of numbers."""
    return statistics.median(xs)


def run_variant(name, overrides, inputs, tmp, args):
    """CLI, pipeline alone and both floors for one config, interleaved; returns {what: pairs/s} plus sizes."""
    flat = {k: v for k, v in overrides.items()}
    nested = {}
    for key, value in flat.items():
        section, _, leaf = key.partition(".")
        nested.setdefault(section, {})[leaf] = value
    cfg = config_from_dict({"input": inputs, "output": os.path.join(tmp, "pipe"), "workers": args.workers,
                            "backend": "numpy", **nested})
    executor = worker_pool.choose_executor("numpy", args.workers)
    store = os.path.join(tmp, "arrays")
    settle(store)
    jobs = planned_arrays(cfg, store)
    n = len(jobs)
    pillow = encode.resolve("pillow", 1)
    fast = encode.resolve("auto", 1, quiet=True)
    floor_out = os.path.join(tmp, "floor")
    cli_out = os.path.join(tmp, "cli")
    times = {"cli": [], "pipeline": [], "pillow floor": [], "fast floor": []}
    sizes = {}

    def pipe():
        pipeline.run(cfg)

    def floor(enc, key):
        sizes[key] = floor_run(jobs, floor_out, args.workers, enc, cfg.max_pixels, executor)

    settled_time(pipe, cfg.output)  # warm-up: kernels compiled, worker processes started, caches filled
    floor(fast, "fast")
    for _ in range(args.repeat):  # interleaved, so drifting load hits every column alike
        times["cli"].append(cli_time(inputs, cli_out, {"workers": args.workers, **flat}))
        times["pipeline"].append(settled_time(pipe, cfg.output))
        times["pillow floor"].append(settled_time(lambda: floor(pillow, "pillow"), floor_out))
        times["fast floor"].append(settled_time(lambda: floor(fast, "fast"), floor_out))
    sizes["dataset"] = output_bytes(cli_out)
    rates = {k: n / median(v) for k, v in times.items()}
    row = dict(rates, n=n, size_vs_pillow=sizes["dataset"] / sizes["pillow"], encoder=fast.label, executor=executor)
    print(f"{name:<22} cli {rates['cli']:7.1f}  pipeline {rates['pipeline']:7.1f}  pillow floor "
          f"{rates['pillow floor']:7.1f}  fast floor {rates['fast floor']:7.1f} pairs/s  cli/pillow floor "
          f"{rates['cli'] / rates['pillow floor']:.2f}x  size/pillow {row['size_vs_pillow']:.3f}", flush=True)
    return row


def scaling(inputs, tmp, args):
    """The CLI with 1 and 2 workers, in threads and in processes (default config), interleaved; {label: s}."""
    out = os.path.join(tmp, "scale")
    combos = [(ex, w) for ex in ("threads", "processes") for w in (1, args.workers)]
    times = {c: [] for c in combos}
    for _ in range(args.scaling_repeat):
        for ex, w in combos:
            times[(ex, w)].append(cli_time(inputs, out, {"workers": w}, executor=ex))
    result = {c: median(t) for c, t in times.items()}
    for label, (one, many) in scaling_rows(result, args.workers).items():
        print(f"scaling {label:<10} 1 worker {args.count / one:6.1f} pairs/s, {args.workers} workers "
              f"{args.count / many:6.1f} pairs/s: {one / many:.2f}x", flush=True)
    return result


def scaling_rows(result, workers):
    """{label: (seconds with 1 worker, seconds with workers)}: each executor, and the defaults a user gets
    (threads for 1 worker, processes for more)."""
    rows = {ex: (result[(ex, 1)], result[(ex, workers)]) for ex in ("threads", "processes")}
    rows["default"] = (result[("threads", 1)], result[("processes", workers)])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=480)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scaling-repeat", type=int, default=5,
                    help="runs per combination of the worker scaling (its ratios are the noisiest)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", default="768x512", help="WxH of the generated JPEGs")
    ap.add_argument("--only", default="", help="comma-separated: noise-off, default, scaling, seed-loop")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    only = set(filter(None, args.only.split(",")))
    print(f"machine: {machine()}; {args.count} JPEGs of {size[0]}x{size[1]}; {args.workers} workers; "
          f"median of {args.repeat} interleaved; encoder {encode.resolve('auto', 1, quiet=True).label}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count, size)
        variants = {"noise-off": {"noise.model": "none"}, "default": {}}
        for name, over in variants.items():
            if not only or name in only:
                rows[name] = run_variant(name, over, inputs, tmp, args)
        scale = scaling(inputs, tmp, args) if not only or "scaling" in only else None
        if "seed-loop" in only:  # the write-up's original loop against the CLI's default config
            out = os.path.join(tmp, "seed")
            t_seed = median([settled_time(lambda: seed_loop(inputs, out), out) for _ in range(args.repeat)])
            t_cli = median([cli_time(inputs, os.path.join(tmp, "cli"), {"workers": args.workers})
                            for _ in range(args.repeat)])
            print(f"seed document loop {args.count / t_seed:.1f} pairs/s; the CLI (default config) "
                  f"{args.count / t_cli:.1f} pairs/s: {t_seed / t_cli:.2f}x", flush=True)
    print("\n| variant | CLI pairs/s | pipeline alone | Pillow floor | fast floor | CLI / Pillow floor "
          "| CLI / fast floor | size / Pillow L1 |\n|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cli']:.1f} | {r['pipeline']:.1f} | {r['pillow floor']:.1f} | {r['fast floor']:.1f} "
              f"| **{r['cli'] / r['pillow floor']:.2f}x** | {r['cli'] / r['fast floor']:.2f}x "
              f"| {r['size_vs_pillow']:.3f} |")
    if scale:
        print("\n| executor | 1 worker pairs/s | 2 workers pairs/s | speed-up |\n|---|---|---|---|")
        for label, (one, many) in scaling_rows(scale, args.workers).items():
            print(f"| {label} | {args.count / one:.1f} | {args.count / many:.1f} | **{one / many:.2f}x** |")


if __name__ == "__main__":
    main()
