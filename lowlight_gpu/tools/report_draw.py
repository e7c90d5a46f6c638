"""The report's picture: report.png's panels drawn with matplotlib (Agg), encoded by Pillow without metadata.

matplotlib is imported only inside draw_report(), so importing this module, the package, or running with no
report never loads it.  The default style is used whatever a user's matplotlibrc says, and no metadata
chunk is written: the same inputs give the same report.png bytes.
"""

import io
import math

import numpy as np
from PIL import Image

PANEL_W, PANEL_H, COLUMNS, TITLE_H, DPI = 420, 300, 3, 40, 100
MARGIN = (62, 30, 16, 46)  # left, top, right, bottom of the plot area inside a panel, in pixels
LOG_KEYS = ("peak",)  # sampled log-uniformly, so a log axis shows them flat
INK, BAR, DOT, REF = "#1e1e1e", "#4682b4", "#d62728", "#969696"


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
