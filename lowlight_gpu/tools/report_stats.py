"""The report's statistics: sampled parameters, image brightness, noise estimates, photon transfer.

Cost is bounded by pixels, not by the dataset: the report decodes at most SAMPLE_ROWS pairs spread evenly
over the manifest, whole, and only as many of them as PIXEL_BUDGET pixels of each side (high, low) hold
(at least one pair; pairs_within reads each row's recorded width and height).  Images are read by the
package's decoder (imageio), from files or from a container's member bytes.

Noise estimate (exact, not a blind estimator): the clean low signal y of a pair
is recomputed from its high image and params (what ``noisy=False`` renders,
before 8-bit rounding); the estimate is the RMS of (low - y) over the pixels
whose y lies 3 declared sigmas inside [0, 1], so clipping does not shrink it.
It is compared with the declared std there, sqrt(mean(y / peak +
read_sigma^2)) (sigma^2 for the gaussian model), plus the 8-bit rounding
variance (1 LSB^2 / 12).  With ``noise.space: linear`` both sides are taken in
linear light.  Pairs with ``noise.model: none`` or ``noise.order: before`` get
no estimate.  Physics pairs get photon-transfer points on their raw mosaic instead (photon_transfer).
"""

import io
import math

import numpy as np

from .. import imageio, paths, storage
from ..containers import container_of
from ..containers.readers import shared_reader
from ..errors import UntrustedDataset
from ..synth import physics
from ..synth.signal import declared_variance, srgb_to_linear, step_signal, to_output, working_codes
from . import spread

SAMPLE_ROWS = 64
PIXEL_BUDGET = 1 << 22  # pixels of each side (high, low) decoded over all sampled pairs together: about 0.2 s
MIN_NOISE_VALUES = 1000
TRANSFER_PAIRS = 6  # physics pairs in the photon-transfer panel (one colour each), spread over the sampled ones
TRANSFER_SITES = 1 << 16  # raw mosaic sites measured over those pairs together (re-rendering costs ~3 us a site)
HIST_KEYS = ("alpha", "beta", "gamma", "peak", "read_sigma", "sigma")
MAX_PIXELS = 1 << 40  # our own outputs: the decompression-bomb guard is for untrusted sources


def parameter_values(rows, pixels=None):
    """{name: [value per row]} of the sampled scalars of every row, in HIST_KEYS order.

    With a list `pixels`, each row's image size (width * height, 0 when unrecorded) is appended to it too,
    so one pass over the manifest gives both.
    """
    values = {k: [] for k in HIST_KEYS}
    for row in rows:
        p = row.get("params", {})
        for k in HIST_KEYS:
            v = p.get(k, p.get("noise", {}).get(k))
            if isinstance(v, (int, float)):
                values[k].append(float(v))
        if pixels is not None:
            size = row.get("width"), row.get("height")
            pixels.append(size[0] * size[1] if all(isinstance(s, int) and s > 0 for s in size) else 0)
    return {k: v for k, v in values.items() if v}


def pairs_within(pixels, budget, most=SAMPLE_ROWS):
    """How many pairs the report decodes: the most (up to `most`, spread evenly over the rows as tools.spread
    picks them) whose images hold at most `budget` pixels together; at least one when there is a row."""
    for n in range(min(most, len(pixels)), 0, -1):
        if sum(pixels[i] for i in spread(len(pixels), n)) <= budget:
            return n
    return min(1, len(pixels))


def config_ranges(cfg):
    """{name: (lo, hi)} the dataset's config samples each parameter from; {} without a recorded config."""
    if cfg is None:
        return {}
    ranges = {"alpha": cfg.darken.alpha, "beta": cfg.darken.beta, "gamma": cfg.darken.gamma,
              "sigma": cfg.noise.sigma}
    if cfg.noise.model not in ("brooks", "physics"):  # those draw their own levels, not noise.peak / read_sigma
        ranges.update(peak=cfg.noise.peak, read_sigma=cfg.noise.read_sigma)
    return {k: tuple(v) for k, v in ranges.items()}


# ---------------------------------------------------------------- image statistics


def read_image(output_dir, row, rel):
    """The uint8 RGB of image rel of a row: a file under output_dir or a container's member, decoded by imageio."""
    if container_of(row) == "files" and not storage.is_url(output_dir):
        return imageio.decode(paths.Root(output_dir).path(rel), MAX_PIXELS).rgb
    return imageio.decode_bytes(shared_reader(output_dir).for_row(row, rel), MAX_PIXELS, rel).rgb


def image_stats(output_dir, row, transfer_sites=0):
    """Mean brightness of high and low, and the (estimated, declared) noise std of one pair; None if unreadable.

    With transfer_sites, the stats also hold the pair's photon-transfer points on that many raw sites
    ("transfer", see pair_transfer).
    """
    try:
        high, low = (read_image(output_dir, row, row[k]) for k in ("high", "low"))
    except (imageio.DecodeError, KeyError, OSError):
        return None
    if high.shape != low.shape:
        return None
    estimated, declared = noise_levels(high, low, row["params"])
    stats = {"source": row["source"], "high": float(high.mean()) / 255, "low": float(low.mean()) / 255,
             "estimated": estimated, "declared": declared}
    if transfer_sites:
        stats["transfer"] = pair_transfer(output_dir, row, high, transfer_sites)
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


def pair_transfer(output_dir, row, high, sites):
    """{source, mean, measured, declared} arrays of one physics pair's raw mosaic in DN; None if not measurable.

    The mosaics are the top rows of the pair's saved raw_clean/raw_low (save.raw), else re-rendered from
    the top rows of its high image (the noise is keyed by sensor site, so these are the top rows of the
    pair's own mosaic); either way at most `sites` sites, in whole 2x2 CFA cells.
    photon_transfer bins the sites by clean level.
    """
    from ..synth import numpy_backend

    try:
        if row.get("raw_clean") and row.get("raw_low"):
            clean, low = (mosaic_top(output_dir, row, row[k], sites) for k in ("raw_clean", "raw_low"))
        else:
            clean, low = numpy_backend.render_raw(high[:cell_rows(sites, high.shape[1])], row["params"])
        points = photon_transfer(clean, low, row["params"]["noise"])
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
    if container_of(row) == "files" and not storage.is_url(output_dir):
        arr = np.load(paths.Root(output_dir).path(rel), mmap_mode="r", allow_pickle=False)  # reads only those rows
    else:
        arr = np.load(io.BytesIO(shared_reader(output_dir).for_row(row, rel)), allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{rel}: not a 2-D mosaic")
    return np.array(arr[:cell_rows(max_pixels, arr.shape[1])])


def cell_rows(sites, width):
    """An even row count (whole CFA cells, at least one cell row) holding at most `sites` sites of a width."""
    return max(2, sites // max(1, width)) // 2 * 2


def photon_transfer(raw_clean, raw_low, noise, bins=16):
    """Measured noise variance against mean clean level in DN on raw mosaics, with the declared K x + read^2 + row^2.

    raw_clean and raw_low are uint16 mosaics as numpy_backend.render_raw writes them (black level
    included).  Sites are grouped into `bins` equal-width bins of clean level; for
    each non-empty bin: mean clean DN, variance of (low - clean), site count, and the
    model's declared variance at that mean (physics.declared_variance).  Returns a dict of equal-length arrays.
    """
    x = np.asarray(raw_clean, dtype=np.float64).ravel() - noise["black_level"]
    d = np.asarray(raw_low, dtype=np.float64).ravel() - (x + noise["black_level"])
    # The declared line holds away from the ADC's clipping at 0 and white.
    ok = (x >= 0) & (x < 0.9 * physics.full_scale(noise))
    x, d = x[ok], d[ok]
    if x.size == 0:
        return {"mean": np.zeros(0), "variance": np.zeros(0), "count": np.zeros(0, int), "declared": np.zeros(0)}
    edges = np.linspace(x.min(), x.max() + 1e-9, bins + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    keep = count > 1
    mean = np.bincount(which, x, bins)[keep] / count[keep]
    dm = np.bincount(which, d, bins)[keep] / count[keep]
    var = np.bincount(which, d * d, bins)[keep] / count[keep] - dm * dm
    var = var * count[keep] / (count[keep] - 1)
    return {"mean": mean, "variance": var, "count": count[keep], "declared": physics.declared_variance(noise, mean)}
