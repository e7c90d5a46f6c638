"""--report (and the end of every run): OUTPUT/report.png and OUTPUT/report.md, plotted with matplotlib.

Panels: a histogram of each sampled parameter over every manifest row
(alpha, beta, gamma, peak, read_sigma, sigma, as the rows have them); the mean
brightness of high against low; the estimated noise level of the low image
against the declared one; and, when the dataset has ``noise.model: physics``
pairs, a photon-transfer panel (noise variance against mean in DN on the raw
mosaic, with the declared K * x + read^2 + row^2).

Cost is bounded by pixels, not by the dataset: at most SAMPLE_ROWS pairs spread
evenly over the manifest, and PIXEL_BUDGET pixels of each side (high, low)
decoded over all of them.  Each pair gets an equal share: a small image is read
whole, a big one only down to the rows its share holds (a PNG is decoded from
the top, so the rows left out are never inflated).  A 12 MP dataset therefore
costs about what a 768x512 one does.

Noise estimate (exact, not a blind estimator): the clean low signal y of a pair
is recomputed from its high image and params (what ``noisy=False`` renders,
before 8-bit rounding); the estimate is the RMS of (low - y) over the pixels
whose y lies 3 declared sigmas inside [0, 1], so clipping does not shrink it.
It is compared with the declared std there, sqrt(mean(y / peak +
read_sigma^2)) (sigma^2 for the gaussian model), plus the 8-bit rounding
variance (1 LSB^2 / 12).  With ``noise.space: linear`` both sides are taken in
linear light.  Pairs with ``noise.model: none`` or ``noise.order: before`` get
no estimate.

matplotlib is imported only inside draw_report(), so importing this module, the
package, or running with no report never loads it.  The figure is rendered by
Agg to pixels and encoded by Pillow without metadata: the same inputs give the
same report.png bytes, and a rerun that changes nothing leaves the file alone.
"""

import io
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .. import fsutil, imageio, paths
from ..errors import UntrustedDataset
from ..config import ConfigError
from ..containers import container_of
from ..containers.readers import shared_reader
from ..manifest import read_rows
from ..synth.signal import declared_variance, srgb_to_linear, step_signal, to_output, working_codes
from . import manifest_path, recorded_config, sample, spread

SAMPLE_ROWS = 64
PIXEL_BUDGET = 1 << 22  # pixels of each side (high, low) decoded over all sampled pairs together
MIN_NOISE_VALUES = 1000
TRANSFER_PAIRS = 6  # physics pairs in the photon-transfer panel (one colour each), spread over the sampled ones
TRANSFER_SITES = 1 << 16  # raw mosaic sites measured over those pairs together (re-rendering costs ~3 us a site)
PANEL_W, PANEL_H, COLUMNS, TITLE_H, DPI = 420, 300, 3, 40, 100
MARGIN = (62, 30, 16, 46)  # left, top, right, bottom of the plot area inside a panel, in pixels
HIST_KEYS = ("alpha", "beta", "gamma", "peak", "read_sigma", "sigma")
LOG_KEYS = ("peak",)  # sampled log-uniformly, so a log axis shows them flat
INK, BAR, DOT, REF = "#1e1e1e", "#4682b4", "#d62728", "#969696"
MAX_PIXELS = 1 << 40  # our own outputs: the decompression-bomb guard is for untrusted sources
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


def write_report(output_dir, sample_rows=SAMPLE_ROWS, pixel_budget=PIXEL_BUDGET):
    """Write output_dir/report.png and report.md; returns [png_path, md_path]."""
    output_dir = os.fspath(output_dir)
    values = parameter_values(read_rows(manifest_path(output_dir)))
    ranges = config_ranges(recorded_config(output_dir, None))
    total, rows = sample(output_dir, sample_rows)
    if not total:
        raise ConfigError(f"output: the manifest in '{output_dir}' has no pairs; nothing to report")
    rows = list(rows)
    share = pair_share(pixel_budget, len(rows))
    measured = transfer_rows(rows)
    sites = pair_share(TRANSFER_SITES, len(measured)) if measured else 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        stats = [s for s in pool.map(lambda i: image_stats(output_dir, rows[i], share, sites * (i in measured)),
                                     range(len(rows))) if s is not None]
    transfer = [s["transfer"] for s in stats if s.get("transfer")]
    png = os.path.join(output_dir, "report.png")
    md = os.path.join(output_dir, "report.md")
    fsutil.write_atomic(png, draw_report(values, stats, total, ranges, transfer))
    text = markdown(output_dir, values, stats, total, ranges, transfer, share)
    fsutil.write_atomic(md, text.encode("utf-8"))
    return [png, md]


def pair_share(pixel_budget, n_pairs):
    """Pixels of each image of a pair the report may decode: the budget split evenly, at least one."""
    return max(1, pixel_budget // max(1, n_pairs))


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
    if cfg.noise.model not in ("brooks", "physics"):  # those draw their own levels, not noise.peak / read_sigma
        ranges.update(peak=cfg.noise.peak, read_sigma=cfg.noise.read_sigma)
    return {k: tuple(v) for k, v in ranges.items()}


# ---------------------------------------------------------------- reading a bounded part of an image


def png_rows_kept(header, max_pixels):
    """(width, rows, bytes per raw row) for the top rows of a PNG holding at most max_pixels; None if not one.

    None too for an interlaced PNG, whose passes cover the whole image, so no top band is cheaper.
    """
    if len(header) < 33 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", header[16:26])
    if header[28] != 0 or colour not in PNG_CHANNELS or width == 0:
        return None
    rows = min(height, max(1, max_pixels // width))
    return width, rows, 1 + math.ceil(width * PNG_CHANNELS[colour] * depth / 8)


def with_height(data, rows):
    """PNG bytes whose IHDR says `rows` rows: a decoder stops after them and never inflates the rest."""
    ihdr = b"IHDR" + data[16:20] + struct.pack(">I", rows) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def read_top(path, max_pixels):
    """(uint8 RGB, cut) of the top rows of an image file holding at most max_pixels pixels (at least one row).

    cut says whether rows were left out.  Only a non-interlaced PNG can be cut; any other image is read whole.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(33)
            kept = png_rows_kept(header, max_pixels)
            if kept is None or kept[1] == struct.unpack(">I", header[20:24])[0]:
                f.seek(0)
                return imageio.decode_bytes(f.read(), MAX_PIXELS, os.fspath(path)).rgb, False
            # Enough of the file for those rows: raw size, deflate's worst case and chunk headers,
            # plus slack; a stream that needs more (very rare) is read whole below.
            width, rows, row_bytes = kept
            raw = rows * row_bytes
            f.seek(0)
            data = f.read(33 + raw + raw // 64 + (1 << 16))
            whole = f.read(1) == b""
    except OSError as e:
        raise imageio.DecodeError(f"cannot read file: {e.strerror or e}") from e
    try:
        return _decode_top(data, rows, path), True
    except imageio.DecodeError:
        if whole:
            raise
    with open(path, "rb") as f:
        return _decode_top(f.read(), rows, path), True


def _decode_top(data, rows, path):
    """The first `rows` rows of PNG bytes, decoded by the project's decoder."""
    return imageio.decode_bytes(with_height(data, rows), MAX_PIXELS, os.fspath(path)).rgb


def decode_top(data, max_pixels, name):
    """(uint8 RGB, cut) of in-memory image bytes by the rules of read_top (a container's member, say)."""
    kept = png_rows_kept(data[:33], max_pixels)
    if kept is None or kept[1] == struct.unpack(">I", data[20:24])[0]:
        return imageio.decode_bytes(data, MAX_PIXELS, name).rgb, False
    return _decode_top(data, kept[1], name), True


# ---------------------------------------------------------------- image statistics


def image_stats(output_dir, row, max_pixels=PIXEL_BUDGET // SAMPLE_ROWS, transfer_sites=0):
    """Mean brightness of high and low, and the (estimated, declared) noise std of one pair; None if unreadable.

    Only the top rows of each image holding at most max_pixels pixels are read.  With transfer_sites, the
    stats also hold the pair's photon-transfer points on that many raw sites ("transfer", see photon_transfer).
    """
    try:
        if container_of(row) == "files":
            root = paths.Root(output_dir)
            high, cut = read_top(root.path(row["high"]), max_pixels)
            low, _ = read_top(root.path(row["low"]), max_pixels)
        else:  # a tar member or an LMDB value: its bytes are read whole, but only the top rows decoded
            reader = shared_reader(output_dir)
            (high, cut), (low, _) = (decode_top(reader.for_row(row, row[k]), max_pixels, row[k])
                                     for k in ("high", "low"))
    except (imageio.DecodeError, KeyError, OSError):
        return None
    if high.shape != low.shape:
        return None
    estimated, declared = noise_levels(high, low, row["params"])
    stats = {"source": row["source"], "high": float(high.mean()) / 255, "low": float(low.mean()) / 255,
             "estimated": estimated, "declared": declared, "cut": cut}
    if transfer_sites:
        stats["transfer"] = photon_transfer(output_dir, row, high, transfer_sites)
    return stats


def noise_levels(high, low, params):
    """(estimated, declared) std of the low image's noise in the working space, or (None, None)."""
    noise = params.get("noise", {})
    if noise.get("order") != "after":
        return None, None
    space = noise.get("space", "srgb")
    y = step_signal(working_codes(space), params, None)  # the clean, unrounded low signal of each high code
    var = declared_variance(y, noise)
    if var is None:
        return None, None
    sd = np.sqrt(var)
    keep = (y - 3 * sd > 0) & (y + 3 * sd < 1)
    # Every quantity below depends on a value's (high code, low code) only, so the sums run over the
    # 256 x 256 table of their counts instead of over the pixels: one pass over the image.
    joint = np.bincount((high.astype(np.uint16) << 8 | low).ravel(), minlength=1 << 16).reshape(256, 256)[keep]
    n = int(joint.sum())
    if n < MIN_NOISE_VALUES:
        return None, None
    z = np.arange(256) / 255
    # Rounding to 8 bits happens on sRGB values: its variance maps into the working space by the curve's slope.
    slope = np.ones_like(y) if space == "srgb" else _linear_slope(to_output(y, space))
    if space != "srgb":
        z = srgb_to_linear(z)
    estimated = math.sqrt(float(np.sum(joint * (z[None, :] - y[keep, None]) ** 2)) / n)
    declared = math.sqrt(float(np.sum(joint.sum(axis=1) * (var[keep] + (slope[keep] / 255) ** 2 / 12))) / n)
    return estimated, declared


def _linear_slope(s, h=1e-4):
    """d linear / d sRGB at sRGB values s (central difference)."""
    return (srgb_to_linear(np.minimum(s + h, 1)) - srgb_to_linear(np.maximum(s - h, 0))) / (2 * h)


# ---------------------------------------------------------------- photon transfer (physics pairs)


def transfer_rows(rows):
    """Indices into rows of the physics pairs that get photon-transfer points: at most TRANSFER_PAIRS, spread."""
    physics = [i for i, row in enumerate(rows)
               if row.get("params", {}).get("noise", {}).get("model") == "physics"]
    return {physics[j] for j in spread(len(physics), TRANSFER_PAIRS)}


def photon_transfer(output_dir, row, high, sites):
    """{source, mean, measured, declared} arrays of one physics pair's raw mosaic in DN; None if not measurable.

    The mosaics are the top rows of the pair's saved raw_clean/raw_low (save.raw), else re-rendered from
    the top rows of its high image (the noise is keyed by sensor site, so these are the top rows of the
    pair's own mosaic); either way at most `sites` sites, in whole 2x2 CFA cells.
    physics.photon_transfer bins the sites by clean level.
    """
    from ..synth import numpy_backend, physics

    try:
        if row.get("raw_clean") and row.get("raw_low"):
            clean, low = (mosaic_top(output_dir, row, row[k], sites) for k in ("raw_clean", "raw_low"))
        else:
            clean, low = numpy_backend.render_raw(high[:cell_rows(sites, high.shape[1])], row["params"])
        points = physics.photon_transfer(clean, low, row["params"]["noise"])
    except UntrustedDataset:
        raise
    except (OSError, ValueError, KeyError):
        return None
    if len(points["mean"]) == 0:
        return None
    return {"source": row["source"], "mean": points["mean"], "measured": points["variance"],
            "declared": points["declared"]}


def mosaic_top(output_dir, row, rel, max_pixels):
    """The top rows of a saved 2-D .npy mosaic holding at most max_pixels values (whole 2x2 CFA cells)."""
    if container_of(row) == "files":
        arr = np.load(paths.Root(output_dir).path(rel), mmap_mode="r", allow_pickle=False)  # reads only those rows
    else:
        arr = np.load(io.BytesIO(shared_reader(output_dir).for_row(row, rel)), allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{rel}: not a 2-D mosaic")
    return np.array(arr[:cell_rows(max_pixels, arr.shape[1])])


def cell_rows(sites, width):
    """An even row count (whole CFA cells, at least one cell row) holding at most `sites` sites of a width."""
    return max(2, sites // max(1, width)) // 2 * 2


# ---------------------------------------------------------------- drawing


def sheet_size(n_panels):
    """(width, height) of report.png in pixels with n_panels panels."""
    return COLUMNS * PANEL_W, TITLE_H + math.ceil(n_panels / COLUMNS) * PANEL_H


def panels(values, stats, ranges=None, transfer=()):
    """[(name, draw(ax))] of the report's panels in sheet order."""
    out = [(name, _bind(histogram, name, vals, (ranges or {}).get(name))) for name, vals in values.items()]
    out += [("brightness", _bind(brightness_panel, stats)), ("noise", _bind(noise_panel, stats))]
    if transfer:
        out.append(("photon transfer", _bind(photon_transfer_panel, transfer)))
    return out


def _bind(fn, *args):
    """fn(ax, *args) as a one-argument drawer."""
    return lambda ax: fn(ax, *args)


def draw_report(values, stats, total, ranges=None, transfer=()):
    """The report figure as PNG bytes: one histogram per parameter, then the image panels."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = panels(values, stats, ranges, transfer)
    width, height = sheet_size(len(chosen))
    # The default style, whatever a user's matplotlibrc says, so the picture depends on the data alone.
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.size": 8, "axes.titlesize": 9}):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        fig.text(12 / width, 1 - 10 / height, f"lowlight_gpu report: {total} pairs (parameters: all rows; "
                 f"images: {len(stats)} sampled pairs)", fontsize=13, color=INK, va="top")
        for i, (_, draw) in enumerate(chosen):
            draw(fig.add_axes(_axes_rect(i, width, height)))
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=6)  # no metadata chunks
    return buf.getvalue()


def _axes_rect(i, width, height):
    """[left, bottom, width, height] in figure fractions of the plot area of panel i."""
    left = (i % COLUMNS) * PANEL_W + MARGIN[0]
    top = TITLE_H + (i // COLUMNS) * PANEL_H + MARGIN[1]
    w, h = PANEL_W - MARGIN[0] - MARGIN[2], PANEL_H - MARGIN[1] - MARGIN[3]
    return [left / width, 1 - (top + h) / height, w / width, h / height]


def histogram(ax, name, vals, configured=None):
    """A histogram of one parameter over all rows, over its configured range when every value lies in it."""
    from matplotlib.ticker import MaxNLocator

    log = name in LOG_KEYS and min(vals) > 0
    lo, hi = min(vals), max(vals)
    if configured and configured[0] < configured[1] and configured[0] <= lo and hi <= configured[1]:
        lo, hi = configured  # shows how the values cover the range they were drawn from
    lo, hi = widen(lo, hi, log)
    bins = max(5, min(24, round(math.sqrt(len(vals)))))
    edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(vals, edges)
    # One artist for all bins (ax.bar makes a patch per bin), with white lines between them.
    ax.stairs(counts, edges, fill=True, color=BAR)
    ax.vlines(edges[1:-1], 0, np.minimum(counts[:-1], counts[1:]), colors="white", linewidth=0.5)
    if log:
        _log_scale(ax, "x")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, max(1, int(counts.max())) * 1.1)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    _label(ax, f"{name} (n={len(vals)})", name + (" (log axis)" if log else ""), "pairs per bin")


def brightness_panel(ax, stats):
    """Mean brightness of low against that of high, one dot per sampled pair."""
    top = max([s["low"] for s in stats] + [0.01]) * 1.15
    ax.scatter([s["high"] for s in stats], [s["low"] for s in stats], s=12, color=DOT, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, min(1.0, top))
    _label(ax, f"mean brightness, {len(stats)} sampled pairs", "high: mean value / 255", "low: mean value / 255")


def noise_panel(ax, stats):
    """Estimated noise std against the declared one (log-log), with the line estimated = declared."""
    pts = [(s["declared"], s["estimated"]) for s in stats if s["estimated"]]
    if not pts:
        _note(ax, "n/a: no pair with a noise estimate")
        _label(ax, "noise std of the low image", "declared std", "estimated std")
        return
    lo, hi = widen(min(min(p) for p in pts) / 1.3, max(max(p) for p in pts) * 1.3, True)
    ax.plot([lo, hi], [lo, hi], color=REF, linewidth=1, zorder=2)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color=DOT, zorder=3)
    _log_scale(ax, "xy")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _label(ax, f"noise std of the low image, {len(pts)} pairs",
           "declared std (log axis; line: estimated = declared)", "estimated std")


def photon_transfer_panel(ax, transfer):
    """Measured raw noise variance against mean (DN, log-log): dots measured, lines declared, one colour a pair."""
    colours = [f"C{i % 10}" for i in range(len(transfer))]
    lo, hi = math.inf, 0.0
    for p, colour in zip(transfer, colours):
        mean, measured, declared = (np.asarray(p[k], np.float64) for k in ("mean", "measured", "declared"))
        ok = (mean > 0) & (measured > 0) & (declared > 0)
        if not ok.any():
            continue
        order = np.argsort(mean[ok])
        ax.plot(mean[ok][order], declared[ok][order], color=colour, linewidth=1, zorder=2)
        ax.scatter(mean[ok], measured[ok], s=8, color=colour, zorder=3)
        lo, hi = min(lo, float(mean[ok].min())), max(hi, float(mean[ok].max()))
    if hi > 0:
        _log_scale(ax, "xy")
        ax.set_xlim(*widen(lo / 1.2, hi * 1.2, True))
    else:
        _note(ax, "n/a: no raw mean above zero")
    _label(ax, f"photon transfer (raw mosaic), {len(transfer)} physics pairs",
           "mean (DN, log axis; lines: K x + read^2 + row^2)", "noise variance (DN^2)")


def _label(ax, title, xlabel, ylabel):
    """Title, axis labels and a light grid under the data."""
    # A plain text, not set_title: placing a title measures every tick label of the axes, a third of the drawing.
    ax.text(0, 1.03, title, transform=ax.transAxes, fontsize=9, color=INK, va="bottom")
    ax.set_xlabel(xlabel, color=INK)
    ax.set_ylabel(ylabel, color=INK)
    ax.grid(True, color="#e1e1e1", linewidth=0.6)
    ax.set_axisbelow(True)


def _log_scale(ax, which):
    """A log scale on ax's x and/or y axis ("x", "y", "xy"): round 1-2-5 ticks labelled as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        # Plain labels: matplotlib's default 10^k labels go through mathtext, which costs more than the
        # rest of the figure together.
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
        axis.set_minor_formatter(NullFormatter())


def _note(ax, text):
    """A line of text in the middle of an empty plot."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=INK)


def widen(lo, hi, log):
    """A non-empty range around [lo, hi] (a fixed parameter gives lo == hi)."""
    if hi > lo:
        return lo, hi
    if log:
        return lo / 1.5, hi * 1.5
    pad = abs(lo) * 0.1 or 0.5
    return lo - pad, hi + pad


# ---------------------------------------------------------------- report.md


def markdown(output_dir, values, stats, total, ranges, transfer=(), share=PIXEL_BUDGET // SAMPLE_ROWS):
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
    lines += ["", f"## Images ({len(stats)} pairs sampled evenly over the manifest)", "", read_extent(stats, share)]
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


def read_extent(stats, share):
    """One sentence: how much of each sampled image the statistics read."""
    if not stats:
        return "No sampled image could be read."
    cut = sum(1 for s in stats if s["cut"])
    if not cut:
        return f"Every sampled image was read whole (each pair may use up to {share} pixels of each image)."
    return (f"Each image is read down to the rows that hold at most {share} pixels (the report's pixel budget "
            f"split over the sampled pairs): {cut} of {len(stats)} pairs are larger and are measured on their "
            "top rows.")


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
