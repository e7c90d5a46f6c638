"""End-to-end codec checks on a GPU machine: numpy vs cupy (CPU and GPU decoding) vs both codec floors.

Run by scripts/gpu_check.sh, one section per call so that each has its own timeout:

    python scripts/gpu_codec_check.py OUTDIR SECTION [--workers 16] [--count N] [--repeat R]

Sections (issue 11's GPU targets, printed next to each number):
  small        >= 960 JPEGs of 768x512, default config: numpy, cupy, cupy + decode.device gpu, the Pillow floor
               and the fast floor; plus GPU-decoded vs Pillow-decoded high images and --verify of that dataset
  large        >= 24 JPEGs of 12 MP, the same variants
  progressive  96 JPEGs of 768x512, progressive T=10 with all steps saved: numpy vs cupy
  workers      1 vs N workers for numpy (threads, processes) and cupy (threads, processes = a CUDA context per
               worker process, encode-pool = one CUDA process + encoding processes)

Every variant is the CLI as a user runs it (python generate.py in a subprocess, wall clock, start-up and the
end-of-run report included); floors run in this process.  Results: OUTDIR/codec_SECTION.json and a summary.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_pipeline import cli_time, floor_run, output_bytes, planned_arrays  # noqa: E402
from benchmarks.common import make_photo_crops, settle, settled_time  # noqa: E402
from lowlight_gpu import encode, imageio, pipeline  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402

SMALL, LARGE = (768, 512), (4000, 3000)
TARGETS = {"cupy/numpy": 1.5, "cupy+gpu decode/numpy": 3.0, "cupy+gpu decode pairs/s": 1000.0,
           "progressive cupy/numpy": 4.0, "workers N/1": 10.0}


def versions():
    """Library versions and the encoder/decoder this machine resolves."""
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "encoder": encode.resolve("auto", 1, quiet=True).label}
    try:
        from lowlight_gpu import decode_gpu

        info["nvimgcodec"] = decode_gpu.version()
    except Exception as exc:  # noqa: BLE001 - reported, the CPU variants still run
        info["nvimgcodec"] = f"unavailable: {exc}"
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except Exception as exc:  # noqa: BLE001
        info["cupy"] = f"unavailable: {type(exc).__name__}"
    return info


def timed_variants(inputs, tmp, variants, repeat, floors=None):
    """CLI seconds of each variant (name -> (--set overrides, executor)), interleaved; floors: name -> callable."""
    times = {name: [] for name in variants}
    times.update({name: [] for name in floors or {}})
    errors = {}
    for _ in range(repeat):
        for name, (over, executor) in variants.items():
            if name in errors:
                continue
            try:
                times[name].append(cli_time(inputs, os.path.join(tmp, "cli"), over, executor))
            except Exception as exc:  # noqa: BLE001 - one variant failing (no GPU decoder, say) must not stop the rest
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
        for name, fn in (floors or {}).items():
            times[name].append(settled_time(fn, os.path.join(tmp, "floor")))
    return {k: statistics.median(v) for k, v in times.items() if v}, errors


def codec_floors(inputs, tmp, workers, overrides):
    """The Pillow-level-1 and fast-encoder floors of the pipeline's arrays for a config (precomputed, untimed)."""
    cfg = config_from_dict({"input": inputs, "output": os.path.join(tmp, "unused"), "backend": "numpy", **overrides})
    store = settle(os.path.join(tmp, "arrays"))
    jobs = planned_arrays(cfg, store)
    out = os.path.join(tmp, "floor")
    pillow, fast = encode.resolve("pillow", 1), encode.resolve("auto", 1, quiet=True)
    floor_run(jobs, out, workers, fast, cfg.max_pixels, "processes")  # warm-up: worker processes
    return {"pillow floor": lambda: floor_run(jobs, out, workers, pillow, cfg.max_pixels, "processes"),
            "fast floor": lambda: floor_run(jobs, out, workers, fast, cfg.max_pixels, "processes")}


def end_to_end(inputs, tmp, workers, repeat, extra=None, with_floors=True):
    """numpy, cupy and cupy + GPU decoding through the CLI, and both floors: pairs/s and ratios."""
    extra = extra or {}
    n = len(os.listdir(inputs))
    base = {"workers": workers, **extra}
    variants = {"numpy": ({**base, "backend": "numpy"}, None),
                "cupy": ({**base, "backend": "cupy"}, None),
                "cupy+gpu decode": ({**base, "backend": "cupy", "decode.device": "gpu"}, None)}
    floors = codec_floors(inputs, tmp, workers, _nested(extra)) if with_floors else None
    for name, (over, executor) in variants.items():  # warm-up: compile caches, first CUDA start
        try:
            cli_time(inputs, os.path.join(tmp, "cli"), dict(over, **{"workers": workers}), executor)
        except Exception:  # noqa: BLE001 - the timed loop records the error
            pass
    seconds, errors = timed_variants(inputs, tmp, variants, repeat, floors)
    rates = {k: n / s for k, s in seconds.items()}
    result = {"pairs": n, "workers": workers, "repeat": repeat, "pairs_per_s": rates, "errors": errors}
    if "numpy" in rates:
        for k in ("cupy", "cupy+gpu decode"):
            if k in rates:
                result[f"{k}/numpy"] = rates[k] / rates["numpy"]
    if "pillow floor" in rates:
        result["vs pillow floor"] = {k: v / rates["pillow floor"] for k, v in rates.items()}
    return result


def gpu_decode_quality(inputs, tmp, workers, count=32):
    """Max/mean |GPU - Pillow| of high images over count JPEGs, decoder rows, and --verify of that dataset."""
    out = os.path.join(tmp, "gpudec")
    settle(out)
    args = [sys.executable, str(REPO / "generate.py"), "--quiet", "--limit", str(count), "--set", f"input={inputs}",
            "--set", f"output={out}", "--set", "backend=cupy", "--set", "decode.device=gpu",
            "--set", f"workers={workers}"]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": f"generate.py exit {run.returncode}: {run.stderr.strip()[-400:]}"}
    rows = [json.loads(line) for line in Path(out, "manifest.jsonl").read_text().splitlines()]
    diffs = []
    for row in rows:
        gpu = imageio.decode(os.path.join(out, row["high"]), 10**9).rgb.astype(np.int16)
        cpu = imageio.decode(os.path.join(inputs, row["source"]), 10**9).rgb.astype(np.int16)
        diffs.append(np.abs(gpu - cpu))
    verify = subprocess.run(args[:3] + ["--verify", "--set", f"input={inputs}", "--set", f"output={out}",
                                        "--set", "decode.device=gpu"], capture_output=True, text=True)
    return {"rows": len(rows), "decoders": sorted({r.get("decoder") for r in rows}),
            "max_abs_diff": int(max(d.max() for d in diffs)), "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
            "identical_fraction": float(np.mean([(d == 0).mean() for d in diffs])),
            "verify_rc": verify.returncode, "verify": (verify.stdout + verify.stderr).strip()[-300:]}


def workers_scaling(inputs, tmp, workers, repeat):
    """1 vs N workers: numpy in threads and processes; cupy in threads, processes and encode-pool."""
    n = len(os.listdir(inputs))
    variants = {}
    for backend, executors in (("numpy", ("threads", "processes")), ("cupy", ("threads", "processes", "encode-pool"))):
        variants[f"{backend} 1 worker"] = ({"backend": backend, "workers": 1}, "threads")
        for ex in executors:
            variants[f"{backend} {workers} {ex}"] = ({"backend": backend, "workers": workers}, ex)
    seconds, errors = timed_variants(inputs, tmp, variants, repeat)
    rates = {k: n / s for k, s in seconds.items()}
    result = {"pairs": n, "workers": workers, "pairs_per_s": rates, "errors": errors}
    for name, rate in rates.items():
        one = rates.get(name.split()[0] + " 1 worker")
        if one and "1 worker" not in name:
            result[f"{name} / 1 worker"] = rate / one
    return result


def _nested(flat):
    """{'a.b': v} -> {'a': {'b': v}}."""
    out = {}
    for key, value in flat.items():
        section, _, leaf = key.partition(".")
        if leaf:
            out.setdefault(section, {})[leaf] = value
        else:
            out[section] = value
    return out


def run_section(name, args, tmp):
    """One section's result dict."""
    small = args.size_small
    if name == "small":
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count or 960, small)
        result = end_to_end(inputs, tmp, args.workers, args.repeat)
        result["gpu_decode_quality"] = _guard(gpu_decode_quality, inputs, tmp, args.workers)
        result["dataset_bytes_vs_pillow"] = _guard(size_ratio, inputs, tmp, args.workers)
        return result
    if name == "large":
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count or 24, args.size_large, quality=92)
        return end_to_end(inputs, tmp, args.workers, args.repeat)
    if name == "progressive":
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count or 96, small)
        prog = {"progressive.enabled": "true", "progressive.steps": 10, "progressive.save": "all"}
        return end_to_end(inputs, tmp, args.workers, args.repeat, extra=prog, with_floors=False)
    if name == "workers":
        inputs = make_photo_crops(os.path.join(tmp, "in"), args.count or 192, small)
        return workers_scaling(inputs, tmp, args.workers, args.repeat)
    raise SystemExit(f"unknown section {name!r}")


def size_ratio(inputs, tmp, workers):
    """Bytes of a default-config dataset with the fast encoder vs with Pillow level 1 (same pixels)."""
    sizes = {}
    for enc in ("auto", "pillow"):
        out = os.path.join(tmp, f"size-{enc}")
        cli_time(inputs, out, {"workers": workers, "backend": "numpy", "save.encoder": enc})
        sizes[enc] = output_bytes(out)
    return {"bytes": sizes, "ratio": sizes["auto"] / sizes["pillow"]}


def _guard(fn, *args):
    """fn(*args), or {'error': ...} when it raises."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}


def summary(name, result):
    """Readable lines of a section's result, with the issue's targets."""
    lines = [f"== codec {name}"]
    rates = result.get("pairs_per_s", {})
    if rates:
        lines.append("pairs/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    for key in ("cupy/numpy", "cupy+gpu decode/numpy"):
        if key in result:
            target = TARGETS.get(("progressive " if name == "progressive" and key == "cupy/numpy" else "") + key)
            lines.append(f"{key}: {result[key]:.2f}x" + (f" (target >= {target}x)" if target else ""))
    if name == "small" and "cupy+gpu decode" in rates:
        lines.append(f"cupy+gpu decode: {rates['cupy+gpu decode']:.0f} pairs/s (target >= 1000, goal 2000)")
    if "vs pillow floor" in result:
        lines.append("vs Pillow floor: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["vs pillow floor"].items()))
    for key, value in result.items():
        if key.endswith("/ 1 worker"):
            lines.append(f"{key}: {value:.2f}x (target >= {TARGETS['workers N/1']}x for the default executor)")
    for key in ("gpu_decode_quality", "dataset_bytes_vs_pillow"):
        if key in result:
            lines.append(f"{key}: {json.dumps({k: v for k, v in result[key].items() if k != 'traceback'})}")
    for k, v in result.get("errors", {}).items():
        lines.append(f"ERROR {k}: {v}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("section", choices=("small", "large", "progressive", "workers"))
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--count", type=int, default=0, help="inputs (0: the section's default)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small", dest="size_small", default="768x512", help="WxH of the small JPEGs")
    ap.add_argument("--large", dest="size_large", default="4000x3000", help="WxH of the large JPEGs")
    args = ap.parse_args(argv)
    args.size_small = tuple(int(v) for v in args.size_small.split("x"))
    args.size_large = tuple(int(v) for v in args.size_large.split("x"))
    os.makedirs(args.outdir, exist_ok=True)
    report = {"section": args.section, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "versions": versions()}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report["result"] = _guard(run_section, args.section, args, tmp)
    report["seconds"] = time.perf_counter() - t0
    Path(args.outdir, f"codec_{args.section}.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"versions: {report['versions']}")
    print(summary(args.section, report["result"]))
    if "error" in report["result"]:
        print(report["result"]["error"])
        return 1
    return 1 if report["result"].get("errors") else 0  # a variant that failed (no GPU decoder, say) fails the check


if __name__ == "__main__":
    sys.exit(main())
