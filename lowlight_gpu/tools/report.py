"""--report (and the end of every run): OUTPUT/report.png and OUTPUT/report.md, drawn with Pillow.

Panels: a histogram of each sampled parameter over every manifest row
(alpha, beta, gamma, peak, read_sigma, sigma, as the rows have them); the mean
brightness of high against low; and the estimated noise level of the low image
against the declared one.  The two image panels use at most SAMPLE_ROWS pairs
spread evenly over the manifest (and at most MAX_VALUES values of each), so the
report stays cheap on big datasets.

Noise estimate (exact, not a blind estimator): the clean low signal y of a pair
is recomputed from its high image and params (what ``noisy=False`` renders,
before 8-bit rounding); the estimate is the RMS of (low - y) over the pixels
whose y lies 3 declared sigmas inside [0, 1], so clipping does not shrink it.
It is compared with the declared std there, sqrt(mean(y / peak +
read_sigma^2)) (sigma^2 for the gaussian model), plus the 8-bit rounding
variance (1 LSB^2 / 12).  With ``noise.space: linear`` both sides are taken in
linear light.  Pairs with ``noise.model: none`` or ``noise.order: before`` get
no estimate.
"""

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageDraw

from .. import imageio
from ..config import ConfigError
from ..manifest import read_rows
from ..synth.signal import srgb_to_linear, step_signal, to_output, working_codes
from . import manifest_path, recorded_config, sample
from .preview import load_font

SAMPLE_ROWS = 64
MAX_VALUES = 1 << 20
MIN_NOISE_VALUES = 1000
PANEL_W, PANEL_H, COLUMNS, TITLE_H = 420, 300, 3, 40
MARGIN = (64, 44, 18, 44)  # left, top, right, bottom of the plot area inside a panel
HIST_KEYS = ("alpha", "beta", "gamma", "peak", "read_sigma", "sigma")
LOG_KEYS = ("peak",)  # sampled log-uniformly, so a log axis shows them flat
INK, GRID, BAR, DOT, REF = (30, 30, 30), (225, 225, 225), (70, 130, 180), (214, 39, 40), (150, 150, 150)
MAX_PIXELS = 1 << 40  # our own outputs: the decompression-bomb guard is for untrusted sources


def write_report(output_dir, sample_rows=SAMPLE_ROWS):
    """Write output_dir/report.png and report.md; returns [png_path, md_path]."""
    output_dir = os.fspath(output_dir)
    values = parameter_values(read_rows(manifest_path(output_dir)))
    ranges = config_ranges(recorded_config(output_dir, None))
    total, rows = sample(output_dir, sample_rows)
    if not total:
        raise ConfigError(f"output: the manifest in '{output_dir}' has no pairs; nothing to report")
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        stats = [s for s in pool.map(lambda row: image_stats(output_dir, row), rows) if s is not None]
    png = os.path.join(output_dir, "report.png")
    md = os.path.join(output_dir, "report.md")
    imageio.write_atomic(png, draw_report(values, stats, total, ranges))
    imageio.write_atomic(md, markdown(output_dir, values, stats, total, ranges).encode("utf-8"))
    return [png, md]


def parameter_values(rows):
    """{name: [value per row]} of the sampled scalars of every row, in HIST_KEYS order."""
    values = {k: [] for k in HIST_KEYS}
    for row in rows:
        p = row.get("params", {})
        for k in HIST_KEYS:
            v = p.get(k, p.get("noise", {}).get(k))
            if isinstance(v, (int, float)):
                values[k].append(float(v))
    return {k: v for k, v in values.items() if v}


def config_ranges(cfg):
    """{name: (lo, hi)} the dataset's config samples each parameter from; {} without a recorded config."""
    if cfg is None:
        return {}
    ranges = {"alpha": cfg.darken.alpha, "beta": cfg.darken.beta, "gamma": cfg.darken.gamma,
              "sigma": cfg.noise.sigma}
    if cfg.noise.model != "brooks":  # brooks draws its own levels, not from noise.peak / read_sigma
        ranges.update(peak=cfg.noise.peak, read_sigma=cfg.noise.read_sigma)
    return {k: tuple(v) for k, v in ranges.items()}


def image_stats(output_dir, row):
    """Mean brightness of high and low, and the (estimated, declared) noise std of one pair; None if unreadable."""
    try:
        high = imageio.decode(os.path.join(output_dir, row["high"]), MAX_PIXELS).rgb
        low = imageio.decode(os.path.join(output_dir, row["low"]), MAX_PIXELS).rgb
    except (imageio.DecodeError, KeyError):
        return None
    if high.shape != low.shape:
        return None
    k = max(1, math.ceil(high.size / MAX_VALUES))  # every k-th image row keeps the cost bounded
    high, low = high[::k], low[::k]
    estimated, declared = noise_levels(high, low, row["params"])
    return {"source": row["source"], "high": float(high.mean()) / 255, "low": float(low.mean()) / 255,
            "estimated": estimated, "declared": declared}


def declared_variance(y, noise):
    """The declared noise variance at clean signal y, or None for a model without noise."""
    model = noise.get("model")
    if model == "gaussian":
        return np.full_like(y, noise["sigma"] ** 2)
    if model == "poisson":
        return y / noise["peak"]
    if model in ("poisson-gaussian", "brooks"):
        return y / noise["peak"] + noise["read_sigma"] ** 2
    return None


def noise_levels(high, low, params):
    """(estimated, declared) std of the low image's noise in the working space, or (None, None)."""
    noise = params.get("noise", {})
    if noise.get("order") != "after":
        return None, None
    space = noise.get("space", "srgb")
    y = step_signal(working_codes(space), params, None)[high]  # the clean, unrounded low signal
    var = declared_variance(y, noise)
    if var is None:
        return None, None
    sd = np.sqrt(var)
    keep = (y - 3 * sd > 0) & (y + 3 * sd < 1)
    if np.count_nonzero(keep) < MIN_NOISE_VALUES:
        return None, None
    z = low.astype(np.float64) / 255
    # Rounding to 8 bits happens on sRGB values: its variance maps into the working space by the curve's slope.
    slope = np.ones_like(y) if space == "srgb" else _linear_slope(to_output(y, space))
    if space != "srgb":
        z = srgb_to_linear(z)
    estimated = math.sqrt(float(np.mean((z[keep] - y[keep]) ** 2)))
    declared = math.sqrt(float(np.mean(var[keep] + (slope[keep] / 255) ** 2 / 12)))
    return estimated, declared


def _linear_slope(s, h=1e-4):
    """d linear / d sRGB at sRGB values s (central difference)."""
    return (srgb_to_linear(np.minimum(s + h, 1)) - srgb_to_linear(np.maximum(s - h, 0))) / (2 * h)


# ---------------------------------------------------------------- drawing


def sheet_size(n_panels):
    """(width, height) of report.png with n_panels panels."""
    return COLUMNS * PANEL_W, TITLE_H + math.ceil(n_panels / COLUMNS) * PANEL_H


def draw_report(values, stats, total, ranges=None):
    """The report figure as PNG bytes: one histogram per parameter, then the brightness and noise panels."""
    n_panels = len(values) + 2
    sheet = Image.new("RGB", sheet_size(n_panels), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font, title_font = load_font(13), load_font(18)
    draw.text((12, 10), f"lowlight_gpu report: {total} pairs (parameters: all rows; images: {len(stats)} "
                        f"sampled pairs)", fill=INK, font=title_font)

    def box(i):
        left, top = (i % COLUMNS) * PANEL_W, TITLE_H + (i // COLUMNS) * PANEL_H
        return left, top, left + PANEL_W, top + PANEL_H

    for i, (name, vals) in enumerate(values.items()):
        histogram(Panel(draw, font, box(i)), name, vals, (ranges or {}).get(name))
    brightness_panel(Panel(draw, font, box(len(values))), stats)
    noise_panel(Panel(draw, font, box(len(values) + 1)), stats)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def histogram(panel, name, vals, configured=None):
    """A histogram of one parameter over all rows, over its configured range when every value lies in it."""
    log = name in LOG_KEYS and min(vals) > 0
    lo, hi = min(vals), max(vals)
    if configured and configured[0] < configured[1] and configured[0] <= lo and hi <= configured[1]:
        lo, hi = configured  # shows how the values cover the range they were drawn from
    lo, hi = widen(lo, hi, log)
    bins = max(5, min(24, round(math.sqrt(len(vals)))))
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(vals, edges)
    panel.setup(f"{name} (n={len(vals)})", (lo, hi), (0, max(1, int(counts.max())) * 1.1), xlog=log,
                xlabel=name + (" (log axis)" if log else ""), ylabel="pairs per bin", yinteger=True)
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            panel.bar(a, b, c)
    panel.finish()


def brightness_panel(panel, stats):
    """Mean brightness of low against that of high, one dot per sampled pair."""
    top = max([s["low"] for s in stats] + [0.01]) * 1.15
    panel.setup(f"mean brightness, {len(stats)} sampled pairs", (0, 1), (0, min(1.0, top)),
                xlabel="high: mean value / 255", ylabel="low: mean value / 255")
    for s in stats:
        panel.dot(s["high"], s["low"])
    panel.finish()


def noise_panel(panel, stats):
    """Estimated noise std against the declared one (log-log), with the line estimated = declared."""
    pts = [(s["declared"], s["estimated"]) for s in stats if s["estimated"]]
    if not pts:
        panel.setup("noise std of the low image", (0, 1), (0, 1), xlabel="declared std", ylabel="estimated std")
        panel.note("n/a: no pair with a noise estimate")
        panel.finish()
        return
    lo, hi = widen(min(min(p) for p in pts) / 1.3, max(max(p) for p in pts) * 1.3, True)
    panel.setup(f"noise std of the low image, {len(pts)} pairs", (lo, hi), (lo, hi), xlog=True, ylog=True,
                xlabel="declared std (log axis; line: estimated = declared)", ylabel="estimated std")
    panel.line([(lo, lo), (hi, hi)])
    for x, y in pts:
        panel.dot(x, y)
    panel.finish()


def widen(lo, hi, log):
    """A non-empty range around [lo, hi] (a fixed parameter gives lo == hi)."""
    if hi > lo:
        return lo, hi
    if log:
        return lo / 1.5, hi * 1.5
    pad = abs(lo) * 0.1 or 0.5
    return lo - pad, hi + pad


def ticks(lo, hi, log, integer=False):
    """A few round tick values inside [lo, hi] (whole numbers only when integer)."""
    if log:
        k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        mults = (1,) if k1 - k0 > 3 else (1, 2, 5)
        return [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mults if lo <= m * 10.0 ** k <= hi]
    raw = (hi - lo) / 5
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


class Panel:
    """One plot: axes mapping data to pixels inside a panel box, drawn with ImageDraw."""

    def __init__(self, draw, font, box):
        """Remember where to draw; setup() picks the ranges."""
        self.draw, self.font = draw, font
        left, top, right, bottom = box
        self.box = box
        self.area = (left + MARGIN[0], top + MARGIN[1], right - MARGIN[2], bottom - MARGIN[3])

    def setup(self, title, xrange, yrange, xlog=False, ylog=False, xlabel="", ylabel="", yinteger=False):
        """Set the ranges and draw the title, grid and tick labels."""
        self.xrange, self.yrange, self.xlog, self.ylog = xrange, yrange, xlog, ylog
        x0, y0, x1, y1 = self.area
        d, f = self.draw, self.font
        d.text((self.box[0] + 10, self.box[1] + 8), title, fill=INK, font=f)
        for v in ticks(*xrange, xlog):
            x = self.px(v, 0)[0]
            d.line((x, y0, x, y1), fill=GRID)
            d.text((x, y1 + 4), f"{v:.4g}", fill=INK, font=f, anchor="ma")
        for v in ticks(*yrange, ylog, yinteger):
            y = self.px(xrange[0], v)[1]
            d.line((x0, y, x1, y), fill=GRID)
            d.text((x0 - 4, y), f"{v:.4g}", fill=INK, font=f, anchor="rm")
        d.text(((x0 + x1) // 2, y1 + 22), xlabel, fill=INK, font=f, anchor="ma")
        d.text((x0, y0 - 4), ylabel, fill=INK, font=f, anchor="ld")

    def finish(self):
        """Draw the axes frame over the data."""
        self.draw.rectangle(self.area, outline=INK)

    def px(self, x, y):
        """Pixel coordinates of a data point."""
        x0, y0, x1, y1 = self.area
        fx = _fraction(x, self.xrange, self.xlog)
        fy = _fraction(y, self.yrange, self.ylog)
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    def bar(self, a, b, height):
        """A histogram bar over [a, b]."""
        left, top = self.px(a, height)
        right, bottom = self.px(b, self.yrange[0])
        self.draw.rectangle((left, top, max(left, right - 1), bottom), fill=BAR)

    def dot(self, x, y):
        """A scatter point."""
        cx, cy = self.px(x, y)
        self.draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=DOT)

    def line(self, points):
        """A reference line through data points."""
        self.draw.line([self.px(x, y) for x, y in points], fill=REF, width=1)

    def note(self, text):
        """A line of text in the middle of the plot area."""
        x0, y0, x1, y1 = self.area
        self.draw.text(((x0 + x1) // 2, (y0 + y1) // 2), text, fill=INK, font=self.font, anchor="mm")


def _fraction(v, rng, log):
    """Where v falls in rng as a fraction in [0, 1] (clamped), on a linear or log axis."""
    lo, hi = rng
    if log:
        v, lo, hi = math.log(max(v, 1e-300)), math.log(lo), math.log(hi)
    return min(1.0, max(0.0, (v - lo) / (hi - lo)))


# ---------------------------------------------------------------- report.md


def markdown(output_dir, values, stats, total, ranges):
    """The short text report."""
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
    lines += ["", f"## Images ({len(stats)} pairs sampled evenly over the manifest)", ""]
    if stats:
        hi, lo = (float(np.median([s[k] for s in stats])) for k in ("high", "low"))
        ratio = float(np.median([s["low"] / s["high"] for s in stats if s["high"] > 0] or [0]))
        lines.append(f"Mean brightness (mean 8-bit value / 255), median over pairs: high {hi:.3f}, "
                     f"low {lo:.3f}; low / high {ratio:.3f}.")
    lines += ["", noise_summary(stats), "",
              "Noise method: the low image minus its clean signal (the same pair rendered with `noisy=False`, "
              "before 8-bit rounding, recomputed from the high image and the row's params), RMS over the pixels "
              "whose clean value lies 3 declared sigmas inside [0, 1] so clipping does not shrink it; declared: "
              "sqrt(mean(y / peak + read_sigma^2)) over the same pixels (sigma^2 for `gaussian`) plus the 8-bit "
              "rounding variance (1/12 LSB^2). Linear-space noise is compared in linear light. "
              "Pairs with `noise.model: none` or `noise.order: before` get no estimate.", ""]
    return "\n".join(lines)


def noise_summary(stats):
    """One paragraph: how the estimated noise compares with the declared one."""
    ratios = sorted((s["estimated"] / s["declared"], s["source"]) for s in stats if s["estimated"])
    if not ratios:
        return "Noise: no pair with an estimate (no noise, noise before darkening, or too few unclipped pixels)."
    r = [x for x, _ in ratios]
    worst = max(ratios, key=lambda item: abs(math.log(item[0])))
    skipped = len(stats) - len(ratios)
    return (f"Noise std, estimated / declared over {len(ratios)} pairs: median {float(np.median(r)):.3f}, "
            f"range {r[0]:.3f} .. {r[-1]:.3f} (furthest from 1: `{worst[1]}`, {worst[0]:.3f})"
            + (f"; {skipped} pairs without an estimate (no noise, noise before darkening, or fewer than "
               f"{MIN_NOISE_VALUES} values 3 sigmas clear of 0 and 1)." if skipped else "."))
