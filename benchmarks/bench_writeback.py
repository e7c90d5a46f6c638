"""Early write-back vs none: run time, end-of-run flush time, and both against the decode+encode floor.

fsutil.write_atomic starts each new file's write-back at once (sync_file_range,
no waiting), so the syncfs that makes a finished shard durable finds little left
to write.  This runs the pipeline with and without that hint and the floor of
benchmarks/bench_pipeline.py, interleaved, and reports medians.

Usage: python benchmarks/bench_writeback.py [--count 48] [--megapixels 1] [--repeat 7] [--workers 2] [--noise]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_pipeline import floor_run, planned_arrays  # noqa: E402
from benchmarks.common import machine, make_inputs, settle, settled_time, timing_flushes  # noqa: E402
from lowlight_gpu import fsutil, pipeline  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noise", action="store_true", help="default noise instead of noise off")
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.count} JPEG inputs of ~{args.megapixels} MP; {args.workers} workers; "
          f"noise {'on' if args.noise else 'off'}; median of {args.repeat}")
    real_writeback = fsutil.start_writeback
    with tempfile.TemporaryDirectory() as tmp, timing_flushes() as flushes:
        inputs = make_inputs(os.path.join(tmp, "in"), args.count, args.megapixels)
        cfg = config_from_dict({"input": inputs, "output": os.path.join(tmp, "pipe"), "workers": args.workers,
                                "backend": "numpy", **({} if args.noise else {"noise": {"model": "none"}})})
        jobs = planned_arrays(cfg)
        times = {"early write-back": [], "no early write-back": [], "floor": []}
        flush = {"early write-back": [], "no early write-back": []}
        try:
            settled_time(lambda: pipeline.run(cfg), cfg.output)  # warm-up
            for _ in range(args.repeat):  # interleaved, so drifting load hits every variant alike
                for name in flush:
                    fsutil.start_writeback = real_writeback if name == "early write-back" else (lambda fd: None)
                    settle(cfg.output)
                    flushes.clear()
                    t0 = time.perf_counter()
                    pipeline.run(cfg)
                    times[name].append(time.perf_counter() - t0)
                    flush[name].append(sum(flushes))
                out = os.path.join(tmp, "floor")
                times["floor"].append(settled_time(
                    lambda: floor_run(jobs, out, args.workers, cfg.save.compress_level, cfg.max_pixels), out))
        finally:
            fsutil.start_writeback = real_writeback
    med = statistics.median
    print("\n| variant | run s | end-of-run flush s | pipeline / floor |\n|---|---|---|---|")
    for name, ts in times.items():
        f = f"{med(flush[name]):.3f}" if name in flush else ""
        print(f"| {name} | {med(ts):.3f} | {f} | {med(times['floor']) / med(ts):.3f} |")


if __name__ == "__main__":
    main()
