"""Overhead of distributed.engine: dask against local threads, on the same machine and worker count.

Three ways to run the same inputs with the same config, interleaved, median of --repeat each:

* local threads:   distributed.engine: none (the default).
* dask, new cluster: engine dask with address null, so each run starts and closes a LocalCluster of
                     --workers single-threaded processes (startup included: that is what such a run costs).
* dask, running:   engine dask pointed at a LocalCluster started once beforehand (address given), which is
                     how a real cluster is used: only the per-task overhead is left.

Every dask run's manifest, errors and images are checked to be byte-identical to the local run's.
The ratio is dask wall time / local wall time (1.00 = no overhead; above 1 = slower).

Usage: python benchmarks/bench_dask.py [--count 24] [--megapixels 0.5] [--repeat 3] [--workers 2]
"""

import argparse
import filecmp
import logging
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import fresh, machine, make_inputs, settled_time  # noqa: E402
from lowlight_gpu import pipeline  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402


def same_dataset(a, b):
    """Whether two outputs hold the same manifest, errors, dataset.json and images, byte for byte."""
    names = []
    for root, _, files in os.walk(a):
        rel = os.path.relpath(root, a)
        if rel.split(os.sep)[0] == "parts":
            continue
        names += [os.path.normpath(os.path.join(rel, f)) for f in files]
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors and len(match) > 3


def main():
    """Time the three variants and print pairs/s, the ratios and a README table row."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--megapixels", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from distributed import LocalCluster  # the dask extra: pip install -e '.[dask]'

    from lowlight_gpu.distributed import DaskEngine

    print(f"machine: {machine()}; {args.count} JPEG inputs of ~{args.megapixels} MP; "
          f"{args.workers} workers; median of {args.repeat}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(os.path.join(tmp, "in"), args.count, args.megapixels)

        def config(name, engine):
            return config_from_dict({"input": inputs, "output": os.path.join(tmp, name), "workers": args.workers,
                                     "backend": "numpy", "distributed": {"engine": engine, "address": None}})

        local, new, running = config("local", "none"), config("dask-new", "dask"), config("dask-running", "dask")
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR, memory_limit=0)
        try:
            runs = {
                "local threads": lambda: pipeline.run(local),
                "dask, new LocalCluster per run": lambda: pipeline.run(new, engine=DaskEngine(None)),
                "dask, running LocalCluster": lambda: pipeline.run(
                    running, engine=DaskEngine(cluster.scheduler_address)),
            }
            outputs = dict(zip(runs, (local.output, new.output, running.output)))
            for name, fn in runs.items():  # warm-up: imports, kernel compilation, worker caches
                fresh(outputs[name])
                fn()
            times = {name: [] for name in runs}
            for _ in range(args.repeat):  # interleaved, so drifting load hits every variant alike
                for name, fn in runs.items():
                    times[name].append(settled_time(fn, outputs[name]))
            for name in list(runs)[1:]:
                assert same_dataset(local.output, outputs[name]), f"{name}: output differs from the local run"
        finally:
            cluster.close()

    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["local threads"]
    for name, t in med.items():
        runs = ", ".join(f"{x:.2f}" for x in times[name])
        print(f"{name:<32} {args.count / t:6.2f} pairs/s  ({t:.2f} s; runs {runs})"
              + ("" if name == "local threads" else f"  dask/local time ratio {t / base:.2f}"))
    print("output: byte-identical to the local run (manifest, errors, dataset.json, images)")
    new_t, run_t = med["dask, new LocalCluster per run"], med["dask, running LocalCluster"]
    print("\n| engine (same machine, {w} workers, {n} x {mp} MP) | pairs/s | dask/local time |\n|---|---|---|".format(
        w=args.workers, n=args.count, mp=args.megapixels))
    print(f"| local threads | {args.count / base:.2f} | 1.00 |")
    print(f"| dask, running LocalCluster | {args.count / run_t:.2f} | {run_t / base:.2f} |")
    print(f"| dask, LocalCluster started per run | {args.count / new_t:.2f} | {new_t / base:.2f} |")


if __name__ == "__main__":
    main()
