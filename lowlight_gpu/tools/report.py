"""--report (and the end of every run): OUTPUT/report.png and OUTPUT/report.md.

Panels: a histogram of each sampled parameter over every manifest row
(alpha, beta, gamma, peak, read_sigma, sigma, as the rows have them); the mean
brightness of high against low; the estimated noise level of the low image
against the declared one; and, when the dataset has ``noise.model: physics``
pairs, a photon-transfer panel (noise variance against mean in DN on the raw
mosaic, with the declared K * x + read^2 + row^2).

The statistics (and how many pairs are decoded) are report_stats.py's, the picture report_draw.py's;
this module writes both files and the text of report.md.  A rerun that changes nothing leaves the files alone.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ConfigError
from ..manifest import read_rows
from . import manifest_path, recorded_config, sample, write_file
from .report_draw import draw_report
from .report_stats import (MIN_NOISE_VALUES, PIXEL_BUDGET, SAMPLE_ROWS, TRANSFER_SITES, config_ranges, image_stats,
                           pairs_within, parameter_values, transfer_rows)


def write_report(output_dir, sample_rows=SAMPLE_ROWS, pixel_budget=PIXEL_BUDGET):
    """Write output_dir/report.png and report.md; returns [png_path, md_path]."""
    output_dir = os.fspath(output_dir)
    pixels = []
    values = parameter_values(read_rows(manifest_path(output_dir)), pixels)
    ranges = config_ranges(recorded_config(output_dir, None))
    n = pairs_within(pixels, pixel_budget, sample_rows)
    total, rows = sample(output_dir, n)
    if not total:
        raise ConfigError(f"output: the manifest in '{output_dir}' has no pairs; nothing to report")
    rows = list(rows)
    measured = transfer_rows(rows)
    sites = max(1, TRANSFER_SITES // len(measured)) if measured else 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        stats = [s for s in pool.map(lambda i: image_stats(output_dir, rows[i], sites * (i in measured)),
                                     range(len(rows))) if s is not None]
    transfer = [s["transfer"] for s in stats if s.get("transfer")]
    png = write_file(output_dir, "report.png", draw_report(values, stats, total, ranges, transfer))
    limited = n < min(sample_rows, total)  # bigger images: fewer pairs, each read whole
    text = markdown(output_dir, values, stats, total, ranges, transfer, pixel_budget if limited else None)
    md = write_file(output_dir, "report.md", text.encode("utf-8"))
    return [png, md]


# ---------------------------------------------------------------- report.md


def markdown(output_dir, values, stats, total, ranges, transfer=(), budget=None):
    """The short text report; budget: the pixel budget of each side when it, not SAMPLE_ROWS, limited the sample."""
    cfg = recorded_config(output_dir, None)
    lines = ["# lowlight_gpu dataset report", "",
             f"{total} pairs in `{output_dir}`" + (f", layout `{cfg.layout}`, seed {cfg.seed}, "
                                                  f"noise model `{cfg.noise.model}`" if cfg else "") + ".", "",
             "![report](report.png)", "", f"## Sampled parameters (all {total} rows)", "",
             "| parameter | min | median | max | configured range |", "|---|---|---|---|---|"]
    for name, vals in values.items():
        rng = ranges.get(name)
        rng = f"[{rng[0]:.4g}, {rng[1]:.4g}]" if rng else "-"
        lines.append(f"| {name} | {min(vals):.4g} | {float(np.median(vals)):.4g} | {max(vals):.4g} | {rng} |")
    lines += ["", f"## Images ({len(stats)} pairs sampled evenly over the manifest)", "",
              read_extent(stats, budget)]
    if stats:
        hi, lo = (float(np.median([s[k] for s in stats])) for k in ("high", "low"))
        ratio = float(np.median([s["low"] / s["high"] for s in stats if s["high"] > 0] or [0]))
        lines += ["", f"Mean brightness (mean 8-bit value / 255), median over pairs: high {hi:.3f}, "
                      f"low {lo:.3f}; low / high {ratio:.3f}."]
    lines += ["", noise_summary(stats), "",
              "Noise method: the low image minus its clean signal (the same pair rendered with `noisy=False`, "
              "before 8-bit rounding, recomputed from the high image and the row's params), RMS over the pixels "
              "whose clean value lies 3 declared sigmas inside [0, 1] so clipping does not shrink it; declared: "
              "sqrt(mean(y / peak + read_sigma^2)) over the same pixels (sigma^2 for `gaussian`) plus the 8-bit "
              "rounding variance (1/12 LSB^2). Linear-space noise is compared in linear light. "
              "Pairs with `noise.model: none` or `noise.order: before` get no estimate.", ""]
    if transfer:
        lines += transfer_summary(transfer)
    return "\n".join(lines)


def read_extent(stats, budget=None):
    """One sentence: how the sampled images were read, and (budget) that the pixel budget limited their number."""
    if not stats:
        return "No sampled image could be read."
    if budget is not None:
        return (f"Every sampled image was read whole; {len(stats)} pair(s) are as many as the report's budget of "
                f"{budget} pixels of each side (high, low) holds.")
    return "Every sampled image was read whole."


def noise_summary(stats):
    """One paragraph: how the estimated noise compares with the declared one."""
    ratios = sorted((s["estimated"] / s["declared"], s["source"]) for s in stats if s["estimated"])
    if not ratios:
        return ("Noise: no pair with an estimate (no noise, noise before darkening, physics noise: see the photon "
                "transfer, or too few unclipped pixels).")
    r = [x for x, _ in ratios]
    worst = max(ratios, key=lambda item: abs(math.log(item[0])))
    skipped = len(stats) - len(ratios)
    return (f"Noise std, estimated / declared over {len(ratios)} pairs: median {float(np.median(r)):.3f}, "
            f"range {r[0]:.3f} .. {r[-1]:.3f} (furthest from 1: `{worst[1]}`, {worst[0]:.3f})"
            + (f"; {skipped} pairs without an estimate (no noise, noise before darkening, physics noise, or fewer than "
               f"{MIN_NOISE_VALUES} values 3 sigmas clear of 0 and 1)." if skipped else "."))


def transfer_summary(transfer):
    """Lines on the photon-transfer panel: measured / declared raw variance over the physics pairs."""
    ratios = []
    for p in transfer:
        measured, declared = np.asarray(p["measured"], np.float64), np.asarray(p["declared"], np.float64)
        ok = declared > 0
        if ok.any():
            ratios.append(float(np.median(measured[ok] / declared[ok])))
    head = f"## Photon transfer ({len(transfer)} physics pairs, raw mosaic in DN)"
    if not ratios:
        return [head, "", "No physics pair had a measurable raw variance.", ""]
    return [head, "", f"Measured / declared noise variance (K x + read^2 + row^2), median per pair: median "
                      f"{float(np.median(ratios)):.3f}, range {min(ratios):.3f} .. {max(ratios):.3f}.", ""]
