"""Pairs/s of each output container (files, webdataset, lmdb) on the same inputs, interleaved, medians.

Each timed run starts from an empty output folder with every earlier write synced
to disk (untimed), and includes everything a user waits for: the pairs, the
container's assembly (tar shards, LMDB commits), the end-of-run sync, the merge
and meta_info.txt (not the report, which only the CLI writes).  The variants run
in turn within each repetition, so load from other users of the machine hits
them alike.

Usage: python benchmarks/bench_containers.py [--count 24] [--megapixels 1] [--repeat 5] [--workers 2]
                                             [--shard-pairs 8] [--noise]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine, make_inputs, settle  # noqa: E402
from lowlight_gpu import pipeline  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402

CONTAINERS = ("files", "webdataset", "lmdb")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-pairs", type=int, default=8, help="save.shard_pairs (several tar shards per run)")
    ap.add_argument("--noise", action="store_true", help="default noise instead of noise off")
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.count} JPEG inputs of ~{args.megapixels} MP; {args.workers} workers; "
          f"noise {'on' if args.noise else 'off'}; shard_pairs {args.shard_pairs}; median of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(os.path.join(tmp, "in"), args.count, args.megapixels)
        configs = {c: config_from_dict({
            "input": inputs, "output": os.path.join(tmp, c), "workers": args.workers, "backend": "numpy",
            "save": {"container": c, "shard_pairs": args.shard_pairs},
            **({} if args.noise else {"noise": {"model": "none"}})}) for c in CONTAINERS}
        times = {c: [] for c in CONTAINERS}
        for c in CONTAINERS:  # warm-up: compile, import, page in the inputs
            settle(configs[c].output)
            pipeline.run(configs[c])
        for _ in range(args.repeat):
            for c in CONTAINERS:
                settle(configs[c].output)
                t0 = time.perf_counter()
                result = pipeline.run(configs[c])
                times[c].append(time.perf_counter() - t0)
                assert result.pairs == args.count and result.errors == 0, result
        sizes = {c: folder_bytes(configs[c].output) for c in CONTAINERS}
    base = statistics.median(times["files"])
    print(f"{'container':<12} {'pairs/s':>8} {'vs files':>9} {'MB written':>11}   runs (s)")
    for c in CONTAINERS:
        med = statistics.median(times[c])
        print(f"{c:<12} {args.count / med:8.2f} {base / med:9.2f} {sizes[c] / 1e6:11.1f}   "
              + " ".join(f"{t:.2f}" for t in times[c]))


def folder_bytes(folder):
    """Bytes of every file under folder (the last run's output)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


if __name__ == "__main__":
    main()
