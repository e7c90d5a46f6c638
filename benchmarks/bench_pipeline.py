"""Pipeline throughput against its decode+encode floor and against the seed document's loop.

Every variant runs on the same inputs, in the same process, interleaved, and
reports the median of --repeat runs; the README quotes the ratios.

* floor:      decode each input and encode+write the very arrays the pipeline
              writes for it (computed beforehand, untimed), same threads, same
              PNG level -- everything except the synthesis itself.
* pipeline:   python generate.py's code path (pipeline.run) with that config.
* seed loop:  the seed document's loop -- per image PIL open, float64 numpy
              beta * (alpha * x) ** gamma, default PNG save of high and low,
              one image at a time.

Usage: python benchmarks/bench_pipeline.py [--count 24] [--megapixels 1] [--repeat 3] [--workers 2]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile

import numpy as np
from joblib import Parallel, delayed
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine, make_inputs, settled_time  # noqa: E402
from lowlight_gpu import imageio, layout, pipeline  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402
from lowlight_gpu.params import pair_seed, sample_params  # noqa: E402
from lowlight_gpu.sources import scan  # noqa: E402
from lowlight_gpu.synth import numpy_backend  # noqa: E402


def planned_arrays(config):
    """For every input: (path, [(relative output path, rgb array)]) exactly as the pipeline writes them."""
    jobs = []
    for src in scan(config.input):
        dec = imageio.decode(src.path, config.max_pixels)
        plan = layout.plan_outputs(src.out_rel, config, None)
        params = sample_params(pair_seed(config.seed, src.rel), config)
        lows = numpy_backend.render_many(dec.rgb, params, [(t, noisy) for _, t, noisy, _ in plan[1:]])
        jobs.append((src.path, [(rel, a) for (_, _, _, rel), a in zip(plan, [dec.rgb] + lows)]))
    return jobs


def floor_run(jobs, out, workers, level, max_pixels):
    """Decode every input and encode+write its precomputed outputs: the I/O floor."""
    def one(path, outputs):
        imageio.decode(path, max_pixels)
        for rel, arr in outputs:
            imageio.write_atomic(os.path.join(out, rel), imageio.encode_png(arr, None, level))
    Parallel(n_jobs=workers, backend="threading", pre_dispatch="2*n_jobs", batch_size=1)(
        delayed(one)(p, o) for p, o in jobs)


def seed_loop(inputs, out):
    """The seed document's loop, writing high and low with Pillow's default PNG settings."""
    for name in sorted(os.listdir(inputs)):
        init_img = Image.open(os.path.join(inputs, name)).convert("RGB")
        low_img = np.asarray(init_img) / 255.0
        beta = 0.5 * random.random() + 0.5
        alpha = 0.1 * random.random() + 0.9
        gamma = 3.5 * random.random() + 1.5
        low_img = beta * np.power(alpha * low_img, gamma)
        low_img = low_img * 255.0
        low_img = (low_img.clip(0, 255)).astype("uint8")
        stem = os.path.splitext(name)[0]
        init_img.save(os.path.join(out, f"{stem}_high.png"))
        Image.fromarray(low_img).save(os.path.join(out, f"{stem}_low.png"))


def run_variant(name, overrides, inputs, tmp, args, results):
    """Time pipeline vs floor for one config; store medians in results."""
    cfg = config_from_dict({"input": inputs, "output": os.path.join(tmp, "pipe"), "workers": args.workers,
                            "backend": "numpy", **overrides})
    jobs = planned_arrays(cfg)
    pixels = sum(a.shape[0] * a.shape[1] for _, outs in jobs for _, a in outs[:1])
    n = len(jobs)

    floor_out = os.path.join(tmp, "floor")

    def pipe():
        pipeline.run(cfg)

    def floor():
        floor_run(jobs, floor_out, args.workers, cfg.save.compress_level, cfg.max_pixels)

    settled_time(pipe, cfg.output)  # warm-up: compiles kernels, fills caches
    t_pipe, t_floor = [], []
    for _ in range(args.repeat):  # interleaved, so drifting load hits both alike; each starts with a clean disk cache
        t_pipe.append(settled_time(pipe, cfg.output))
        t_floor.append(settled_time(floor, floor_out))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    results[name] = {"pairs/s": n / med(t_pipe), "floor pairs/s": n / med(t_floor),
                     "ratio": med(t_floor) / med(t_pipe), "images": n, "MP/image": pixels / n / 1e6}
    print(f"{name:<28} pipeline {n / med(t_pipe):6.2f} pairs/s  floor {n / med(t_floor):6.2f} pairs/s  "
          f"ratio {med(t_floor) / med(t_pipe):.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.count} JPEG inputs of ~{args.megapixels} MP; "
          f"{args.workers} workers; median of {args.repeat}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(os.path.join(tmp, "in"), args.count, args.megapixels)
        variants = {
            "noise off": {"noise": {"model": "none"}},
            "default (noise on)": {},
            "progressive T=10 save all": {"progressive": {"enabled": True, "steps": 10, "save": "all"}},
        }
        try:
            from lowlight_gpu.synth import cpu_kernel
        except ImportError:
            cpu_kernel = None
        for name, over in variants.items():
            if args.only and name not in args.only.split(","):
                continue
            run_variant(name, over, inputs, tmp, args, results)
            if cpu_kernel is not None and cpu_kernel.AVAILABLE and over.get("noise", {}).get("model") != "none":
                cpu_kernel.AVAILABLE = False  # the same variant on the pure-numpy noise path
                try:
                    run_variant(name + " [pure numpy]", over, inputs, tmp, args, results)
                finally:
                    cpu_kernel.AVAILABLE = True
        if not args.only or "seed" in args.only:
            cfg = config_from_dict({"input": inputs, "output": os.path.join(tmp, "pipe"), "workers": args.workers,
                                    "backend": "numpy"})
            seed_out = os.path.join(tmp, "seed")
            t_seed = statistics.median(settled_time(lambda: seed_loop(inputs, seed_out), seed_out)
                                       for _ in range(args.repeat))
            t_default = statistics.median(settled_time(lambda: pipeline.run(cfg), cfg.output)
                                          for _ in range(args.repeat))
            n = args.count
            print(f"{'seed document loop':<28} {n / t_seed:6.2f} pairs/s; default config {n / t_default:6.2f} "
                  f"pairs/s; speed-up {t_seed / t_default:.2f}x")
            results["seed loop"] = {"pairs/s": n / t_seed, "speedup of default config": t_seed / t_default}
    print("\n| variant | pairs/s | floor pairs/s | ratio |\n|---|---|---|---|")
    for name, r in results.items():
        if "ratio" in r:
            print(f"| {name} | {r['pairs/s']:.2f} | {r['floor pairs/s']:.2f} | {r['ratio']:.2f} |")
    if "seed loop" in results:
        r = results["seed loop"]
        print(f"| seed document loop | {r['pairs/s']:.2f} | | default config is {r['speedup of default config']:.2f}x faster |")


if __name__ == "__main__":
    main()
