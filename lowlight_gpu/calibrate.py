"""lowlight-gpu calibrate: a camera's noise preset from its own bias and flat frames.

The method is ELD's calibration (Wei et al., "A Physics-based Noise Formation
Model for Extreme Low-light Raw Denoising", CVPR 2020, and "Physics-Based Noise
Modeling for Extreme Low-Light Photography", TPAMI 2021, section 4) with the
photon-transfer method of the EMVA Standard 1288 for the system gain:

* **K per setting** (EMVA 1288 photon transfer): for each flat level, the variance
  of the difference of two frames, halved, against the level's mean above the dark
  level, per CFA position.  A difference cancels everything fixed (per-pixel gain
  PRNU, column offsets, uneven light), so only temporal noise is left:
  var / 2 = K * mean + read^2 + row^2.  K is the slope of a weighted line through
  the points of all four positions; the intercept takes the read and row noise.
* **From the bias frames per setting** (ELD section 4): the per-pixel mean over the
  frames is the fixed pattern; what is left of each frame is temporal noise.
  * row noise sigma_R: the std of the row means of that residual, less the share
    of the read noise that a row mean keeps (read^2 / width);
  * read noise: the residual without its row means; its Tukey-lambda shape by
    probability-plot correlation maximisation (``scipy.stats.ppcc_max``), its
    scale sigma_TL the slope of that probability plot, and the Gaussian scale
    sigma_g its std;
  * the colour bias: the mean of each CFA position minus the black level, stored
    in the model's R, G, G, B order whatever the camera's CFA.
  Every variance is corrected for the frames and row means taken out, and for the
  ADC's rounding (Sheppard's 1/12 DN^2, which the model adds back with ``q``).
* **Across settings**: least-squares lines log sigma = slope * log K + bias for
  sigma_TL, sigma_g and sigma_R; the residual std (n - 2 degrees of freedom) is
  the jitter.  The K range is the calibrated settings' min and max; lambdas and
  biases are one entry per setting, lowest K first, the layout of the built-in
  presets (``cameras.py``).  One setting gives zero slopes (and a warning).

Inputs (``scan``): BIAS_DIR/<setting>/ frames and FLAT_DIR/<setting>/<level>/
frames; a frame is a camera raw file read by rawpy (``pip install
'lowlight-gpu[raw]'``) or a 2-D mosaic as .npy, .tif or .tiff, whose black and
white levels and CFA come from --black, --white and --cfa.  Everything refused
raises CalibrationError with one line.  The drawing is ``calibrate_plot``.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CalibrationError
from . import cameras

RAW_EXTS = frozenset(".dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .rwl .pef .srw .3fr .iiq .erf "
                     ".kdc .dcr .mrw .mos .raw .x3f".split())
ARRAY_EXTS = frozenset((".npy", ".tif", ".tiff"))
MIN_FRAMES, MIN_LEVELS = 2, 3
CLIPPED_FRACTION = 0.01  # a flat with more of its pixels at white is saturated
BLACK_FRACTION = 0.01    # a flat whose mean is less than this share of white - black above the dark level is black
PPCC_VALUES = 1 << 16    # read-noise values the Tukey shape is fitted on (spread evenly over the frames)
PPCC_GRID = 41           # lambdas of the PPCC curve drawn in the picture
INSTALL_RAW = "pip install 'lowlight-gpu[raw]'"
CITATION = ("ELD: Wei et al., A Physics-based Noise Formation Model for Extreme Low-light Raw Denoising, CVPR 2020 "
            "(TPAMI 2021, section 4); EMVA Standard 1288 photon transfer")


@dataclass(frozen=True)
class Levels:
    """The raw levels of the frames: black and white in DN, and the CFA pattern of the 2x2 cell."""

    black: int
    white: int
    cfa: str


@dataclass
class Setting:
    """One setting's frames (paths) and, once analysed, its measurements."""

    name: str
    bias: list
    flats: dict  # level name -> list of paths
    results: dict = field(default_factory=dict)


# ---------------------------------------------------------------- scanning and reading

def frame_files(folder):
    """The frame files of a folder, sorted: known raw and array extensions, hidden files left out."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in RAW_EXTS | ARRAY_EXTS)


def subfolders(folder):
    """The non-hidden subfolders of a folder, by name."""
    return sorted((p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def scan(bias_dir, flat_dir):
    """The settings of BIAS_DIR/<setting>/* and FLAT_DIR/<setting>/<level>/*; CalibrationError if unusable."""
    for flag, folder in (("--bias", bias_dir), ("--flat", flat_dir)):
        if not Path(folder).is_dir():
            raise CalibrationError(f"{flag}: '{folder}' is not a folder; give a folder with one subfolder per setting")
    bias = {p.name: p for p in subfolders(bias_dir)}
    flat = {p.name: p for p in subfolders(flat_dir)}
    if not bias:
        raise CalibrationError(f"--bias: '{bias_dir}' has no setting subfolders; put the frames of each ISO or gain "
                               f"in {os.path.join(bias_dir, '<setting>')}")
    if set(bias) != set(flat):
        only_b, only_f = sorted(set(bias) - set(flat)), sorted(set(flat) - set(bias))
        parts = ([f"only under --bias: {', '.join(only_b)}"] if only_b else []) + \
                ([f"only under --flat: {', '.join(only_f)}"] if only_f else [])
        raise CalibrationError(f"the settings under --bias and --flat differ ({'; '.join(parts)}); "
                               "give both the same setting folders")
    settings = []
    for name in sorted(bias):
        frames = frame_files(bias[name])
        if len(frames) < MIN_FRAMES:
            raise CalibrationError(f"setting '{name}' has {len(frames)} bias frame(s) in '{bias[name]}'; "
                                   f"give at least {MIN_FRAMES} (16 or more for a good read-noise shape)")
        levels = {p.name: frame_files(p) for p in subfolders(flat[name])}
        if len(levels) < MIN_LEVELS:
            raise CalibrationError(f"setting '{name}' has {len(levels)} flat level(s) in '{flat[name]}'; give at "
                                   f"least {MIN_LEVELS} level subfolders (exposures from about 5% to 70% of white)")
        for level, files in levels.items():
            if len(files) < MIN_FRAMES:
                raise CalibrationError(f"setting '{name}' level '{level}' has {len(files)} flat frame(s); give at "
                                       f"least {MIN_FRAMES} of each level")
        settings.append(Setting(name, frames, levels))
    return settings


def read_frame(path):
    """(2-D integer mosaic, Levels-like dict of what the file says or None) of one frame file."""
    path = Path(path)
    if path.suffix.lower() in RAW_EXTS:
        return read_raw(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.array(im)
    except Exception as exc:  # noqa: BLE001 - any reader failure is one bad file
        raise CalibrationError(f"cannot read frame '{path}' ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CalibrationError(f"frame '{path}' is {arr.dtype} of shape {arr.shape}; a frame is one 2-D raw mosaic "
                               "(uint16), not a demosaicked image")
    return arr, None


def read_raw(path):
    """(visible raw mosaic, {black, white, cfa}) of a camera raw file, through rawpy."""
    try:
        import rawpy
    except ImportError:
        raise CalibrationError(f"reading camera raw files ('{path.name}') needs rawpy: {INSTALL_RAW}") from None
    try:
        with rawpy.imread(str(path)) as raw:
            mosaic = np.array(raw.raw_image_visible, copy=True)
            meta = raw_levels(raw)
    except CalibrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - LibRaw's errors have many types
        raise CalibrationError(f"cannot read raw frame '{path}' ({type(exc).__name__}: {exc})") from None
    if meta["cfa"] is None:
        raise CalibrationError(f"raw frame '{path}' has no 2x2 Bayer CFA ({meta['why']}); only Bayer sensors "
                               "are supported")
    return mosaic, meta


def raw_levels(raw):
    """{black, white, cfa} of an open rawpy image: its own black level per channel, white level and CFA."""
    desc = raw.color_desc.decode("ascii", "replace")
    colors = np.asarray(raw.raw_colors_visible[:2, :2])
    letters = "".join(desc[c] if 0 <= c < len(desc) else "?" for c in colors.ravel())
    pattern = raw.raw_pattern
    bayer = pattern is not None and np.shape(pattern) == (2, 2)  # X-Trans repeats over 6x6, Foveon has none
    cfa = letters if bayer and letters in cameras.CFAS else None
    blacks = [float(b) for b in raw.black_level_per_channel]
    # The black of each CFA position, in raster order (a preset keeps one black level; the rest is colour bias).
    cell_black = [blacks[c] if 0 <= c < len(blacks) else blacks[0] for c in colors.ravel()]
    return {"black": cell_black, "white": int(raw.white_level), "cfa": cfa,
            "why": f"pattern {letters!r} of {desc!r}"}


def resolve_levels(meta, black, white, cfa, where):
    """The Levels of the frames: the flags where given, else what the raw file says; CalibrationError otherwise."""
    if meta is None and (black is None or white is None):
        missing = " and ".join(f for f, v in (("--black", black), ("--white", white)) if v is None)
        raise CalibrationError(f"frame '{where}' carries no levels; give {missing} (the raw black and white "
                               "levels in DN) and --cfa if it is not RGGB")
    if meta is not None:
        black = round(sum(meta["black"]) / 4) if black is None else black
        white = meta["white"] if white is None else white
        cfa = meta["cfa"] if cfa is None else cfa
    cfa = cfa or cameras.CFA
    if not 0 <= black < white:
        raise CalibrationError(f"the black level ({black}) must be >= 0 and below the white level ({white}); "
                               "check --black and --white")
    return Levels(int(black), int(white), cfa)


def load_stack(paths, shape=None):
    """(N, H, W) array of the frames at paths (in the files' integer type), their first file's levels, their shape."""
    frames, meta = [], None
    for p in paths:
        arr, m = read_frame(p)
        if shape is None:
            shape = arr.shape
        if arr.shape != shape:
            raise CalibrationError(f"frame '{p}' is {arr.shape[1]}x{arr.shape[0]}, others are {shape[1]}x{shape[0]}; "
                                   "every frame must come from the same camera mode and size")
        if arr.shape[0] < 4 or arr.shape[1] < 4:
            raise CalibrationError(f"frame '{p}' is {arr.shape[1]}x{arr.shape[0]}; a frame needs at least 4x4 sites")
        # The black level may move a little from file to file (LibRaw measures some from masked pixels): the
        # first file's is kept, and the colour bias takes the rest.  White level and CFA must agree.
        if m is not None and meta is not None and (m["white"], m["cfa"]) != (meta["white"], meta["cfa"]):
            raise CalibrationError(f"raw frame '{p}' has white level {m['white']} and CFA {m['cfa']}, "
                                   f"'{paths[0]}' has {meta['white']} and {meta['cfa']}; calibrate one camera "
                                   "mode at a time")
        meta = meta or m
        frames.append(arr)
    return np.stack(frames), meta, shape


# ---------------------------------------------------------------- CFA cells

def cell_planes(stack):
    """(..., 4, H/2, W/2) views of the 2x2 cell positions of frames, raster order (0,0), (0,1), (1,0), (1,1)."""
    h, w = (stack.shape[-2] // 2) * 2, (stack.shape[-1] // 2) * 2
    return [stack[..., r:h:2, c:w:2] for r in (0, 1) for c in (0, 1)]


def model_order(cfa):
    """Raster positions of R, G (in R's row), G (in B's row), B of a CFA: the model's order of a colour bias."""
    r, b = cfa.index("R"), cfa.index("B")
    return [r, (r // 2) * 2 + 1 - r % 2, (b // 2) * 2 + 1 - b % 2, b]


# ---------------------------------------------------------------- bias frames

def sheppard(var, whole_dn):
    """A variance less the ADC's rounding (1/12 DN^2) when the frames hold whole DN, never below half of it."""
    return max(var - 1.0 / 12.0, 0.5 * var) if whole_dn else var


def analyse_bias(stack, black):
    """Row noise, read-noise shape and scales, colour bias (raster) and dark level of one setting's bias frames."""
    from scipy import stats

    n, h, w = stack.shape
    fpn = stack.mean(axis=0, dtype=np.float64)  # per-pixel fixed pattern (and the dark level)
    row_means = np.empty((n, h))
    sq = 0.0
    take = max(1, (n * h * w) // PPCC_VALUES)
    sample = []
    for f in range(n):
        r = stack[f] - fpn
        row_means[f] = r.mean(axis=1)
        e = r - row_means[f][:, None]  # the row-corrected read noise
        sq += float(np.sum(e * e))
        sample.append(e.ravel()[(f * h * w) % take::take])
    # r keeps (n - 1)/n of the temporal variance (the mean took 1/n of it); e keeps (w - 1)/w of r's.
    var_read = sq / (n * h * w) * n / (n - 1) * w / (w - 1)
    var_rows = float(np.mean(row_means ** 2)) * n / (n - 1) - var_read / w
    whole = bool(np.issubdtype(stack.dtype, np.integer))
    var_g = sheppard(var_read, whole)
    e = np.concatenate(sample)
    lam = float(stats.ppcc_max(e, brack=(-0.2, 0.2), dist="tukeylambda"))
    (_, _), (slope, _, _) = stats.probplot(e, (lam,), dist="tukeylambda")
    scale = math.sqrt(var_g / var_read * n / (n - 1) * w / (w - 1))  # the same corrections as sigma_g's
    lo, hi = min(-0.3, lam - 0.2), max(0.5, lam + 0.2)
    grid, ppcc = stats.ppcc_plot(e[:: max(1, e.size // 20000)], lo, hi, dist="tukeylambda", plot=None, N=PPCC_GRID)
    dark = [float(p.mean()) for p in cell_planes(fpn)]
    return {"sigma_TL": float(slope) * scale, "lambda": lam, "sigma_g": math.sqrt(var_g),
            "sigma_R": math.sqrt(max(var_rows, 0.0)), "dark": dark, "bias_raster": [d - black for d in dark],
            "ppcc": {"lambda": [float(v) for v in grid], "r": [float(v) for v in ppcc]}}


# ---------------------------------------------------------------- flat frames (photon transfer)

def level_points(stack, dark, levels, where):
    """(mean above dark, temporal variance) per CFA position of one flat level: halved variances of differences."""
    clipped = float(np.mean(stack >= levels.white))
    if clipped > CLIPPED_FRACTION:
        raise CalibrationError(f"flat frames of {where} are saturated ({clipped:.1%} of pixels at white "
                               f"{levels.white}); expose that level lower (at most about 70% of white)")
    means = np.array([float(p.mean(dtype=np.float64)) for p in cell_planes(stack)]) - np.asarray(dark)
    if means.mean() < BLACK_FRACTION * (levels.white - levels.black):
        raise CalibrationError(f"flat frames of {where} are black (mean {means.mean():.1f} DN above the dark level, "
                               f"white is {levels.white - levels.black} above black); expose them to 5-70% of white")
    pairs = [(a, a + 1) for a in range(0, stack.shape[0] - 1, 2)]
    var = np.zeros(4)
    for a, b in pairs:
        d = stack[a].astype(np.float64) - stack[b]
        var += [float(np.var(p, ddof=1)) / 2.0 for p in cell_planes(d)]
    return means, var / len(pairs)


def fit_line(x, y, weights=None):
    """(slope, intercept) of a (weighted) least-squares line."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    a = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
    (slope, icpt), *_ = np.linalg.lstsq(a, y * np.sqrt(w), rcond=None)
    return float(slope), float(icpt)


def fit_gain(means, variances):
    """(K, intercept) of var = K mean + c: least squares, then weighted by the first fit's variance^-2."""
    x, y = np.ravel(means), np.ravel(variances)
    k, c = fit_line(x, y)
    pred = np.maximum(k * x + c, 1e-3 * max(float(y.max()), 1e-12))
    return fit_line(x, y, 1.0 / pred ** 2)  # relative errors: every level counts alike


def analyse_flats(setting, stacks, dark, levels):
    """K of one setting from its flat levels, with the photon-transfer points and per-position fits."""
    means, variances = [], []
    for level, stack in stacks.items():
        m, v = level_points(stack, dark, levels, f"setting '{setting}' level '{level}'")
        means.append(m)
        variances.append(v)
    means, variances = np.array(means), np.array(variances)
    if np.ptp(means.mean(axis=1)) < 0.05 * means.mean():
        raise CalibrationError(f"the flat levels of setting '{setting}' have nearly the same mean "
                               f"({', '.join(f'{m:.0f}' for m in means.mean(axis=1))} DN); give exposures "
                               "spread from about 5% to 70% of white")
    k, c = fit_gain(means, variances)
    if not k > 0:
        raise CalibrationError(f"setting '{setting}': the flat frames' noise does not grow with their level "
                               f"(fitted gain {k:.3g}); check that the flats are real exposures of a steady light")
    per = [fit_gain(means[:, j], variances[:, j]) for j in range(4)]
    return {"K": k, "intercept": c, "K_raster": [p[0] for p in per], "fits_raster": [list(p) for p in per],
            "ptc_mean": means.tolist(), "ptc_var": variances.tolist()}


# ---------------------------------------------------------------- across settings

def fit_profile(log_k, log_sigma):
    """(slope, bias, jitter) of log sigma = slope log K + bias: least squares, jitter the residual std (n - 2 dof)."""
    x, y = np.asarray(log_k, float), np.asarray(log_sigma, float)
    if x.size < 2:
        return (0.0, float(y[0]), 0.0)
    slope, bias = fit_line(x, y)
    res = y - (slope * x + bias)
    jitter = math.sqrt(float(np.sum(res ** 2)) / (x.size - 2)) if x.size > 2 else 0.0
    return (slope, bias, jitter)


def build_preset(name, settings, levels, note):
    """The preset mapping (cameras.to_dict layout) of analysed settings, lowest K first, plus its measurements."""
    settings = sorted(settings, key=lambda s: s.results["K"])
    log_k = [math.log(s.results["K"]) for s in settings]
    order = model_order(levels.cfa)
    profiles = {}
    for key, attr in (("tukey", "sigma_TL"), ("gauss", "sigma_g"), ("row", "sigma_R")):
        sig = [s.results[attr] for s in settings]
        if min(sig) <= 0:
            zero = next(s.name for s in settings if s.results[attr] <= 0)
            raise CalibrationError(f"setting '{zero}' shows no measurable {attr} (0 DN), so log {attr} cannot be "
                                   "fitted; check that its bias frames are real captures (not copies or averages)")
        profiles[key] = fit_profile(log_k, [math.log(v) for v in sig])
    camera = cameras.Camera(
        name=name, bits=max(8, levels.white.bit_length()), black_level=levels.black, white_level=levels.white,
        log_k=(min(log_k), max(log_k)), lambdas=tuple(s.results["lambda"] for s in settings),
        biases=tuple(tuple(s.results["bias_raster"][i] for i in order) for s in settings),
        source="lowlight-gpu calibrate", citation=CITATION, licence="the camera owner's calibration",
        cfa=levels.cfa, note=note, **profiles)
    preset = cameras.to_dict(camera)
    preset[cameras.EXTRA_KEY] = {"settings": [setting_record(s, order) for s in settings]}
    cameras.from_dict(preset)  # what noise.camera will load
    return preset


def setting_record(s, order):
    """The measurements of one setting as the preset file keeps them (colour values in the model's R, G, G, B order)."""
    r = s.results
    return {"setting": s.name, "K": r["K"], "K_per_colour": [r["K_raster"][i] for i in order],
            "sigma_TL": r["sigma_TL"], "lambda": r["lambda"], "sigma_g": r["sigma_g"], "sigma_R": r["sigma_R"],
            "bias": [r["bias_raster"][i] for i in order], "bias_frames": len(s.bias),
            "flat_frames": sum(len(v) for v in s.flats.values()), "levels": len(s.flats)}


# ---------------------------------------------------------------- the whole calibration

def require_scipy():
    """CalibrationError (one line) unless scipy imports."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        raise CalibrationError(f"calibrate needs scipy (and rawpy for camera raw files): {INSTALL_RAW}") from None


def calibrate(bias_dir, flat_dir, name, black=None, white=None, cfa=None, say=None):
    """(preset mapping, analysed settings, warnings) from BIAS_DIR and FLAT_DIR; CalibrationError if unusable."""
    require_scipy()
    settings = scan(bias_dir, flat_dir)
    shape, levels, warnings = None, None, []
    for s in settings:
        bias, meta, shape = load_stack(s.bias, shape)
        if levels is None:
            levels = resolve_levels(meta, black, white, cfa, s.bias[0])
        s.results.update(analyse_bias(bias, levels.black))
        del bias
        stacks = {}
        for level, files in s.flats.items():
            stacks[level], _, shape = load_stack(files, shape)
        s.results.update(analyse_flats(s.name, stacks, s.results["dark"], levels))
        if say:
            say(describe_setting(s))
    if len(settings) < 2:
        warnings.append(f"one setting ('{settings[0].name}'): no fit across settings; the preset has zero slopes "
                        "and its scales hold at that gain only (calibrate 3 or more ISOs for a profile)")
    ks = sorted(s.results["K"] for s in settings)
    if len(ks) >= 2 and ks[-1] / ks[0] < 1.05:
        raise CalibrationError(f"the settings' gains are all about {ks[0]:.3g} DN/e-, so no line across settings can "
                               "be fitted; calibrate settings with different ISO or gain")
    n_bias = sum(len(s.bias) for s in settings)
    n_flat = sum(len(f) for s in settings for f in s.flats.values())
    note = (f"calibrated from {n_bias} bias and {n_flat} flat frames at {len(settings)} setting(s): "
            f"{', '.join(s.name for s in sorted(settings, key=lambda s: s.results['K']))} (lowest K first)")
    return build_preset(name, settings, levels, note), settings, warnings


def describe_setting(s):
    """One line of a setting's measurements."""
    r = s.results
    return (f"{s.name}: K {r['K']:.4g} DN/e-, sigma_TL {r['sigma_TL']:.3g}, lambda {r['lambda']:.3f}, "
            f"sigma_g {r['sigma_g']:.3g}, sigma_R {r['sigma_R']:.3g} DN")


def write_outputs(preset, settings, out):
    """Write the preset JSON at out and its picture beside it (out with .png); returns both paths."""
    from . import calibrate_plot
    from .fsutil import write_atomic

    out = Path(out)
    picture = out.with_suffix(".png")
    write_atomic(out, (json.dumps(preset, indent=1) + "\n").encode())
    write_atomic(picture, calibrate_plot.draw(preset, settings, model_order(preset["cfa"])))
    return out, picture
