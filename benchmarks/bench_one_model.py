"""The model's one source (the C library) against the numba version it replaced, side by side in one run.

Two checkouts run the same command lines, interleaved, each in its own fresh interpreter:

* this one (the model's C library, built at install);
* a baseline (--baseline PATH: a checkout of the version with the numba twins, e.g. made with
  ``git worktree add ../baseline 3ea45eb``; numba must be importable for it).

Measured, wall clock of ``python generate.py`` as a user runs it (start-up and end-of-run report
included), medians of --repeat runs:

* first run on a fresh machine: the 4 bundled sample photos, default noise and physics noise.  The
  baseline gets an empty numba cache (NUMBA_CACHE_DIR in a new temp folder) and no __pycache__ of its
  own kernels, as a new container or cluster node has; this checkout has nothing to compile.
* warm runs: the same with caches filled.
* throughput: --count JPEGs of 768x512 (random crops of the samples), --workers workers, default
  noise and physics noise.

Also the kernel alone: milliseconds per 768x512 noisy image in one process, for both (the baseline's
numba kernels imported from its checkout), with the widest instruction set this CPU runs and capped to
AVX2 (the library's x86-64-v3 build against numba compiling for haswell).  Ratios are baseline time / this time (> 1: this is faster).

Usage: python benchmarks/bench_one_model.py --baseline ../baseline [--count 96] [--repeat 5] [--workers 2]
       [--write docs/performance.md]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, SAMPLES, machine, make_photo_crops, settle  # noqa: E402

MODELS = {"default": [], "physics": ["--set", "noise.model=physics"]}

KERNEL_SCRIPT = r"""
import json, statistics, sys, time
import numpy as np
from PIL import Image
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.hashing import pair_seed
from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import numpy_backend
rgb = np.asarray(Image.open(sys.argv[1]).convert("RGB").resize((768, 512)))
out = {}
for name, cfg in (("default", {}), ("physics", {"noise": {"model": "physics"}})):
    params = sample_params(pair_seed(0, "a.jpg"), config_from_dict(cfg))
    numpy_backend.render(rgb, params)  # load (the baseline: numba's compile or cache)
    times = []
    for _ in range(int(sys.argv[2])):
        t0 = time.process_time()
        numpy_backend.render(rgb, params)
        times.append(time.process_time() - t0)
    out[name] = statistics.median(times) * 1e3
print(json.dumps(out))
"""


def run_cli(checkout, inputs, out, extra, env):
    """Wall seconds of python generate.py in checkout, writing out (made fresh, earlier writes synced first)."""
    settle(out)
    cmd = [sys.executable, os.path.join(checkout, "generate.py"), "--quiet", "--set", f"input={inputs}",
           "--set", f"output={out}", "--set", "backend=numpy", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{checkout}: generate.py failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    return seconds


def env_for(checkout, cache=None):
    """The environment of one run: the checkout first on the path, numba's cache in the folder cache if given."""
    env = dict(os.environ, PYTHONPATH=checkout)
    env.pop("LOWLIGHT_CPU_LEVEL", None)
    env.pop("NUMBA_CPU_NAME", None)
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    return env


def clear_kernel_caches(checkout):
    """Remove numba's cache files the checkout keeps beside its modules (a fresh clone has none)."""
    for root, _, files in os.walk(os.path.join(checkout, "lowlight_gpu")):
        for name in files:
            if name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(root, name))


def first_runs(checkouts, tmp, repeat, workers):
    """{(model, checkout name, 'cold'|'warm'): [seconds]} on the bundled samples."""
    results = {}
    for _ in range(repeat):
        for model, extra in MODELS.items():
            for name, path in checkouts.items():
                clear_kernel_caches(path)
                args = [*extra, "--set", f"workers={workers}"]
                cache = tempfile.mkdtemp(prefix="numba-cache-", dir=tmp)  # empty: the first run compiles
                cold = run_cli(path, SAMPLES, os.path.join(tmp, "out"), args, env_for(path, cache))
                warm = run_cli(path, SAMPLES, os.path.join(tmp, "out"), args, env_for(path, cache))
                results.setdefault((model, name, "cold"), []).append(cold)
                results.setdefault((model, name, "warm"), []).append(warm)
    return results


def throughput(checkouts, inputs, tmp, repeat, workers):
    """{(model, checkout name): [seconds]} for the generated JPEGs, warm caches."""
    results = {}
    for path in checkouts.values():  # fill the baseline's numba cache once, untimed
        for extra in MODELS.values():
            run_cli(path, SAMPLES, os.path.join(tmp, "out"), extra, env_for(path))
    for _ in range(repeat):
        for model, extra in MODELS.items():
            for name, path in checkouts.items():
                seconds = run_cli(path, inputs, os.path.join(tmp, "out"), [*extra, "--set", f"workers={workers}"],
                                  env_for(path))
                results.setdefault((model, name), []).append(seconds)
    return results


# Instruction sets compared for the kernel alone: (label, the library's LOWLIGHT_CPU_LEVEL, numba's NUMBA_CPU_NAME).
ISAS = [("widest this CPU runs", None, None), ("AVX2 (x86-64-v3; numba: haswell)", "3", "haswell")]


def kernels(checkouts, repeat, level=None, numba_cpu=None):
    """{checkout name: {model: ms per 768x512 image}} in one process each (process CPU time, median)."""
    photo = os.path.join(SAMPLES, sorted(n for n in os.listdir(SAMPLES) if n.endswith(".png"))[0])
    out = {}
    for name, path in checkouts.items():
        env = env_for(path)
        if level:
            env["LOWLIGHT_CPU_LEVEL"] = level
        if numba_cpu:
            env["NUMBA_CPU_NAME"] = numba_cpu
            env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-isa-")  # no kernel cached for another CPU
        proc = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT, photo, str(repeat)], cwd=path,
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{path}: kernel timing failed: {proc.stderr.strip()[-400:]}")
        out[name] = json.loads(proc.stdout)
    return out


def table(args, first, through, kern, count):
    """The results as a markdown section."""
    med = statistics.median
    lines = [f"Machine: {machine()}; `python benchmarks/bench_one_model.py --baseline BASELINE --count {count} "
             f"--repeat {args.repeat} --workers {args.workers}`; BASELINE is the numba version (3ea45eb).", "",
             "| run | model | numba version (s) | C library (s) | speed-up |", "|---|---|---|---|---|"]
    for kind, label in (("cold", "first run, fresh machine, 4 samples"), ("warm", "warm run, 4 samples")):
        for model in MODELS:
            b, o = med(first[(model, "numba", kind)]), med(first[(model, "library", kind)])
            lines.append(f"| {label} | {model} | {b:.2f} | {o:.2f} | {b / o:.2f}x |")
    for model in MODELS:
        b, o = med(through[(model, "numba")]), med(through[(model, "library")])
        lines.append(f"| {count} JPEGs 768x512, {args.workers} workers | {model} | {b:.2f} | {o:.2f} | {b / o:.2f}x |")
    lines += ["", "| kernel alone, one core, ms per noisy 768x512 | instruction set | numba | C library | speed-up |",
              "|---|---|---|---|---|"]
    for label, result in kern.items():
        for model in MODELS:
            b, o = result["numba"][model], result["library"][model]
            lines.append(f"| {model} | {label} | {b:.1f} | {o:.1f} | {b / o:.2f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a checkout of the numba version")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", help="replace the section between the bench_one_model markers of this file")
    args = ap.parse_args()
    checkouts = {"numba": os.path.abspath(args.baseline), "library": REPO}
    tmp = tempfile.mkdtemp(prefix="bench-one-model-")
    try:
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count)
        kern = {label: kernels(checkouts, 15, level, cpu) for label, level, cpu in ISAS}
        first = first_runs(checkouts, tmp, args.repeat, args.workers)
        through = throughput(checkouts, inputs, tmp, args.repeat, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(args, first, through, kern, args.count)
    print(text)
    if args.write:
        with open(args.write) as f:
            doc = f.read()
        start, end = "<!-- bench_one_model -->", "<!-- /bench_one_model -->"
        head, rest = doc.split(start, 1)
        doc = head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1]
        with open(args.write, "w") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
