"""Bytes through the merging process: --merge of a webdataset run of N shard jobs, tar_boundaries job vs global.

For N = 1, 8 and 64 shard jobs over the same tree of tiny images, the jobs run (untimed, in this process),
then ``--merge`` runs in a process of its own: a small wrapper around ``lowlight_gpu.cli.main`` that reads
/proc/self/io (``rchar``, ``wchar``: bytes through read/write/copy_file_range calls, page cache or not)
after its imports and at the end of the merge step (before the end report, measured apart).  Each merge
runs on a fresh copy of the jobs' output (a merge is not repeatable in place: the second one finds the
tars built), in turn for job and global within each repetition; medians over the repetitions.  N = 1 is
a whole run stopped before its own merge, so its --merge does what the end of a whole run does.

Two input trees: a few thousand tiny PNGs (many pairs, so the per-pair cost of the merge shows) and about a
hundred photo-like 768x512 JPEGs (pairs of about a megabyte, so the fraction of the dataset shows).

Usage: python benchmarks/bench_merge.py [--count 2000] [--size 32x24] [--photos 120] [--jobs 1,8,64]
                                        [--repeat 3] [--shard-pairs 100]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import REPO, machine, make_photo_crops  # noqa: E402

WRAPPER = r"""
import json, sys, time
import lowlight_gpu.cli as cli
from lowlight_gpu import pipeline, merging, manifest, run_record  # imported before the first reading
from lowlight_gpu.containers import tars, metainfo
from lowlight_gpu.tools import report

def io():
    with open("/proc/self/io") as f:
        values = dict(line.split(": ") for line in f.read().splitlines())
    return {k: int(values[k]) for k in ("rchar", "wchar")}

marks = {}
real_report = cli._end_report
def end_report(config):
    marks["merged"] = (io(), time.perf_counter())
    real_report(config)
cli._end_report = end_report
start = (io(), time.perf_counter())
code = cli.main(sys.argv[1:])
end = (io(), time.perf_counter())
merged = marks.get("merged", end)
def delta(a, b):
    return {"rchar": b[0]["rchar"] - a[0]["rchar"], "wchar": b[0]["wchar"] - a[0]["wchar"], "seconds": b[1] - a[1]}
print(json.dumps({"code": code, "merge": delta(start, merged), "report": delta(merged, end)}))
"""


def make_tree(folder, count, size, seed=0):
    """count random RGB PNGs of size (w, h), 100 per subfolder."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = os.path.join(folder, f"d{i // 100:03d}", f"img{i:05d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return folder


def sets(inputs, out, boundaries, shard_pairs):
    """The config items of every job and merge of one variant."""
    return [f"input={inputs}", f"output={out}", "workers=2", "backend=numpy", "noise.model=none",
            "save.container=webdataset", f"save.shard_pairs={shard_pairs}", f"save.tar_boundaries={boundaries}"]


def run_jobs(items, count):
    """The count shard jobs of a variant, in this process; a whole run (count 1) stops before its merge."""
    from lowlight_gpu import merging, pipeline
    from lowlight_gpu.config import load_config

    config = load_config(None, items)
    real = merging.merge
    if count == 1:
        merging.merge = lambda *a, **k: {}  # the done-marker is written: --merge does the whole run's merge
    try:
        for i in range(count):
            result = pipeline.run(config, shard=(i, count))
            assert result.errors == 0, result
    finally:
        merging.merge = real


def measured_merge(items):
    """{merge: {rchar, wchar, seconds}, report: {...}} of one --merge in its own process."""
    argv = ["--quiet"] + [a for item in items for a in ("--set", item)] + ["--merge"]
    res = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO))
    if res.returncode != 0:
        raise SystemExit(f"--merge failed: {res.stderr.strip()}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["code"] == 0, out
    return out


def tars_bytes(out):
    """Bytes of the final tars under out/shards."""
    folder = os.path.join(out, "shards")
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(".tar"))


def measure(inputs, tmp, label, counts, repeat, shard_pairs):
    """Rows of the table for one input tree: (label, N, boundaries, pairs, dataset bytes, medians, moved, report)."""
    rows = []
    for n in counts:
        prepared = {}
        for boundaries in ("job", "global"):
            out = os.path.join(tmp, f"pre-{n}-{boundaries}")
            t0 = time.perf_counter()
            run_jobs(sets(inputs, out, boundaries, shard_pairs), n)
            prepared[boundaries] = out
            print(f"  {label}, N={n} {boundaries}: {n} job(s) in {time.perf_counter() - t0:.1f} s", flush=True)
        results = {b: [] for b in prepared}
        for r in range(repeat):
            for boundaries, pre in prepared.items():  # in turn, so load from other users hits both alike
                out = os.path.join(tmp, f"merge-{n}-{boundaries}-{r}")
                shutil.copytree(pre, out)
                measured = measured_merge(sets(inputs, out, boundaries, shard_pairs))
                measured["dataset"] = tars_bytes(out)
                measured["pairs"] = sum(1 for _ in open(os.path.join(out, "manifest.jsonl"), encoding="utf-8"))
                results[boundaries].append(measured)
                shutil.rmtree(out)
        for boundaries, runs in results.items():
            med = {k: statistics.median(m["merge"][k] for m in runs) for k in ("rchar", "wchar", "seconds")}
            rep = statistics.median(m["report"]["rchar"] + m["report"]["wchar"] for m in runs)
            dataset, pairs = runs[0]["dataset"], runs[0]["pairs"]
            rows.append((label, n, boundaries, pairs, dataset, med, med["rchar"] + med["wchar"], rep))
            print(f"  {label}, N={n} {boundaries}: read {med['rchar']} B, wrote {med['wchar']} B, "
                  f"{med['seconds']:.2f} s; dataset {dataset} B", flush=True)
        for out in prepared.values():
            shutil.rmtree(out)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="tiny images in the first tree")
    ap.add_argument("--size", default="32x24", help="WxH of each tiny image")
    ap.add_argument("--photos", type=int, default=120, help="photo-like 768x512 JPEGs in the second tree (0: none)")
    ap.add_argument("--jobs", default="1,8,64", help="shard job counts N")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shard-pairs", type=int, default=100)
    ap.add_argument("--workdir", default=None, help="where to build (default: a temporary folder)")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    counts = [int(n) for n in args.jobs.split(",")]
    print(f"machine: {machine()}; noise off; shard_pairs {args.shard_pairs}; median of {args.repeat}")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        label = f"{args.count} tiny PNGs {args.size}"
        rows += measure(make_tree(os.path.join(tmp, "tiny"), args.count, size), tmp, label, counts, args.repeat,
                        args.shard_pairs)
        if args.photos:
            label = f"{args.photos} photo crops 768x512"
            inputs = make_photo_crops(os.path.join(tmp, "photos"), args.photos, (768, 512))
            rows += measure(inputs, tmp, label, counts, args.repeat, args.shard_pairs)
    print()
    print("| input tree | N jobs | tar_boundaries | pairs | dataset (tars) | merge read | merge written | per pair | "
          "of the dataset | merge wall time | end report (read+written) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, n, boundaries, pairs, dataset, med, moved, rep in rows:
        print(f"| {label} | {n} | {boundaries} | {pairs} | {dataset / 1e6:.2f} MB | {med['rchar'] / 1e6:.2f} MB | "
              f"{med['wchar'] / 1e6:.2f} MB | {moved / pairs / 1e3:.2f} kB | {100 * moved / dataset:.2f}% | "
              f"{med['seconds']:.2f} s | {rep / 1e6:.2f} MB |")


if __name__ == "__main__":
    main()
