"""Run this checkout's CLI and another checkout's on the same odd inputs and configs; compare every output's pixels.

For a change that must not move a byte (a restructure, a new build of the model): point --baseline at a
checkout of the version before it (``git worktree add ../baseline REV``).  The inputs are made here: RGBA,
16-bit grey, palette, CMYK JPEG, an EXIF-rotated JPEG, 2x2 and a larger RGB.  Every image (decoded) and raw
``.npy`` array of every config must be equal; the script prints one line per config and exits 1 on any
difference.

Usage: python scripts/compare_with_checkout.py --baseline ../baseline
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CONFIGS = [
    [], ["noise.model=poisson"], ["noise.model=gaussian"], ["noise.model=brooks"],
    ["noise.model=none", "save.clean_low=true"], ["noise.order=before", "noise.space=linear"],
    ["progressive.enabled=true", "progressive.save=all"],
    ["noise.model=physics", "noise.camera=SonyA7S2", "save.raw=true"],
    ["noise.model=physics", "noise.camera=IMX686", "noise.components=pgrqc"],
    ["noise.model=physics", "progressive.enabled=true", "progressive.steps=3", "progressive.save=all", "save.raw=true"],
]


def make_inputs(folder):
    """Odd inputs: modes, depths, an EXIF rotation, the smallest physics image."""
    folder.mkdir(parents=True)
    g = np.random.default_rng(3)
    Image.fromarray(g.integers(0, 256, (23, 37, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(g.integers(0, 65536, (29, 31), dtype=np.uint16)).save(folder / "grey16.png")
    Image.fromarray(g.integers(0, 256, (17, 19, 3), dtype=np.uint8)).convert(
        "P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(g.integers(0, 256, (21, 33, 3), dtype=np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.fromarray(g.integers(0, 256, (25, 41, 3), dtype=np.uint8)).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(g.integers(0, 256, (2, 2, 3), dtype=np.uint8)).save(folder / "tiny2x2.png")
    Image.fromarray(g.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / "mid.png")


def run(checkout, inputs, out, settings):
    """python generate.py of a checkout, CPU backend, one worker; returns its exit code."""
    args = [sys.executable, str(Path(checkout) / "generate.py"), "--quiet", "--set", f"input={inputs}",
            "--set", f"output={out}", "--set", "backend=numpy", "--set", "workers=1"]
    for s in settings:
        args += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(checkout))
    return subprocess.run(args, env=env, capture_output=True, text=True).returncode


def outputs(folder):
    """Relative paths of the images and raw arrays of an output (not the report)."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.suffix in (".png", ".npy")
                  and "parts" not in p.parts and p.name != "report.png")


def same(a, b):
    """Equal decoded pixels (PNG) or arrays (.npy)."""
    if a.suffix == ".npy":
        return np.array_equal(np.load(a), np.load(b))
    return np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a checkout of the version to compare with")
    args = ap.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "in")
        for settings in CONFIGS:
            codes = [run(c, tmp / "in", tmp / name / str(CONFIGS.index(settings)), settings)
                     for c, name in ((args.baseline, "old"), (REPO, "new"))]
            old, new = (tmp / name / str(CONFIGS.index(settings)) for name in ("old", "new"))
            files = outputs(old)
            differ = [f for f in files if not (new / f).exists() or not same(old / f, new / f)]
            extra = sorted(set(outputs(new)) - set(files))
            bad += len(differ) + len(extra) + (codes[0] != codes[1])
            print(f"{' '.join(settings) or 'default'}: exit codes {codes}, {len(files)} files, "
                  f"{len(differ)} differ{', ' + str(len(extra)) + ' only in this checkout' if extra else ''}"
                  + (f" (first: {differ[0]})" if differ else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
