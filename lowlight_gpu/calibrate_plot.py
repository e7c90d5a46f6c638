"""The picture beside a calibrated preset (CAMERA.png): is the calibration trustworthy at a glance?

Top rows: the photon transfer of each setting (temporal variance against mean
above dark, points and fitted line per CFA colour, and the joint fit that gives
K).  Bottom row: the PPCC curve over the Tukey lambda of each setting (its
maximum is the shape), the log sigma_TL and log sigma_g against log K fits with
their points, the row-noise fit, and the colour bias per setting.  Drawn by Agg
(matplotlib's own figure, no pyplot state), written as PNG without metadata.
"""

import io
import math

import numpy as np

COLOURS = ("#d62728", "#2ca02c", "#17becf", "#1f77b4")  # R, G (R's row), G (B's row), B
LABELS = ("R", "G (R row)", "G (B row)", "B")
COLUMNS = 4


def draw(preset, settings, order):
    """PNG bytes of the calibration picture of a preset and its analysed settings; order: the raster positions
    of R, G, G, B in the preset's CFA (calibrate.model_order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = sorted(settings, key=lambda s: s.results["K"])
    ptc_rows = math.ceil(len(settings) / COLUMNS)
    fig = Figure(figsize=(4 * COLUMNS, 3.2 * (ptc_rows + 1)), dpi=80)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(ptc_rows + 1, COLUMNS)
    for i, s in enumerate(settings):
        draw_transfer(fig.add_subplot(grid[i // COLUMNS, i % COLUMNS]), s, order)
    bottom = [fig.add_subplot(grid[ptc_rows, j]) for j in range(COLUMNS)]
    draw_ppcc(bottom[0], settings)
    log_k = [math.log(s.results["K"]) for s in settings]
    draw_profile(bottom[1], log_k, settings, (("tukey", "sigma_TL", "#9467bd"), ("gauss", "sigma_g", "#8c564b")),
                 preset, "read noise: log sigma vs log K")
    draw_profile(bottom[2], log_k, settings, (("row", "sigma_R", "#e377c2"),), preset,
                 "row noise: log sigma_R vs log K")
    draw_bias(bottom[3], settings, order)
    fig.suptitle(f"{preset['name']}: {preset['note']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def draw_transfer(ax, s, order):
    """Photon transfer of one setting: points and line per colour, the joint fit's K in the title."""
    r = s.results
    mean, var = np.asarray(r["ptc_mean"]), np.asarray(r["ptc_var"])
    xs = np.linspace(0.0, float(mean.max()) * 1.05, 2)
    for colour, pos in enumerate(order):
        k, c = r["fits_raster"][pos]
        ax.plot(mean[:, pos], var[:, pos], "o", ms=4, color=COLOURS[colour], label=LABELS[colour])
        ax.plot(xs, k * xs + c, "-", lw=0.8, color=COLOURS[colour])
    ax.plot(xs, r["K"] * xs + r["intercept"], "--", lw=1, color="k", label="joint fit")
    ax.set_title(f"{s.name}: K = {r['K']:.4g} DN/e-", fontsize=9)
    ax.set_xlabel("mean above dark (DN)", fontsize=8)
    ax.set_ylabel("variance / 2 of differences (DN^2)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left")


def draw_ppcc(ax, settings):
    """PPCC against the Tukey lambda per setting, with the chosen maximum marked."""
    for s in settings:
        curve = s.results["ppcc"]
        line, = ax.plot(curve["lambda"], curve["r"], "-", lw=1, label=f"{s.name} ({s.results['lambda']:.3f})")
        ax.axvline(s.results["lambda"], color=line.get_color(), lw=0.6, ls=":")
    ax.set_title("Tukey-lambda shape: PPCC of the read noise", fontsize=9)
    ax.set_xlabel("lambda", fontsize=8)
    ax.set_ylabel("probability-plot correlation", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def draw_profile(ax, log_k, settings, series, preset, title):
    """Measured log sigma per setting and the fitted line (with its slope and jitter) for each series."""
    xs = np.linspace(min(log_k) - 0.1, max(log_k) + 0.1, 2)
    for key, attr, colour in series:
        slope, bias, jitter = preset[key]
        ax.plot(log_k, [math.log(s.results[attr]) for s in settings], "o", color=colour)
        ax.plot(xs, slope * xs + bias, "-", color=colour,
                label=f"{attr}: slope {slope:.3f}, bias {bias:.3f}, jitter {jitter:.3f}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("log K", fontsize=8)
    ax.set_ylabel("log sigma (DN)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def draw_bias(ax, settings, order):
    """Colour bias (mean minus black) per setting and colour."""
    x = np.arange(len(settings))
    for colour, pos in enumerate(order):
        ax.plot(x, [s.results["bias_raster"][pos] for s in settings], "o-", ms=4, color=COLOURS[colour],
                label=LABELS[colour])
    ax.set_xticks(x, [s.name for s in settings], fontsize=7, rotation=30)
    ax.set_title("colour bias (mean of bias frames - black)", fontsize=9)
    ax.set_ylabel("DN", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
