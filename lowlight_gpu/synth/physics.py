"""Camera-physics noise (``noise.model: physics``): unprocess to a raw mosaic, sensor noise in DN, re-process.

The numpy reference; ``physics.cuh`` is its CUDA twin, operation for operation, and
``physics_numba.py`` its compiled CPU twin, which ``render`` and ``render_raw`` use
where numba runs (``render_reference`` and ``render_raw_reference`` otherwise).
Every value that reaches an output byte is float64 arithmetic built from +, -, *,
/, sqrt, floor and the functions of ``detmath`` (no library transcendental), so
the bytes are the same on every CPU and on the GPU.

1. Unprocess (Brooks et al. 2019, "Unprocessing Images for Learned Raw
   Denoising", google-research/unprocessing ``unprocess.py``, Apache-2.0): per 8-bit
   code, the clean low sRGB value s goes through the inverse smoothstep tone
   curve and the inverse gamma (max(x, 1e-8) ** 2.2) -- 256 values per image,
   on the CPU (``code_lut``).  Per mosaic site: the rgb2cam row of its CFA colour,
   division by that colour's white-balance and brightness gain, clip to [0, 1]
   (Brooks' highlight-preserving mask of ``safe_invert_gains`` is left out: it has
   no exact inverse, and low images seldom come near white), RGGB mosaic.
2. Sensor noise in DN on the mosaic, x = raw * (white - black) (``add_sensor_noise``):
   p shot K * Poisson(x / K) (exact inversion, ``poisson_counts``), t Tukey-lambda
   or g Gaussian read, r row noise (one normal per sensor row), c colour bias per
   CFA position, q rounding to whole DN; then the ADC's range [-black, white - black].
3. Re-process with the same parameters (Brooks' ``process.py`` plus the inverse
   of every unprocess step): gains, clip, bilinear demosaic (``demosaic``), cam2rgb,
   clip, gamma and smoothstep, 8 bits.  Gamma and tone curve are monotonic, so
   the 8-bit code of a linear value v is the number of thresholds T_k <= v with
   T_k the linear value of the code boundary (k - 0.5) / 255 (``thresholds``): the
   exact round-half-up quantisation of smoothstep(v ** (1/2.2)), without a
   transcendental per pixel.

Randomness (Philox, ``rng.py``; key = the pair seed, counter word 2 = the step):
site i = r * W + c of the H x W mosaic uses block i // 2 of stream STREAM_SITES,
words 2 (i % 2) (shot) and 2 (i % 2) + 1 (read); row r uses word 0 of block r of
stream STREAM_ROWS.  A word w is the uniform u = (w + 0.5) / 2**32 in (0, 1).

Sizes: the sRGB image keeps every pixel, the demosaic mirrors across the borders
(a mirrored neighbour has the same CFA colour).  Raw outputs (``render_raw``) are
cropped to even height and width, so every 2x2 cell is complete and the mosaic
packs into four half-size planes.
"""

import io
import math

import numpy as np

from .. import rng
from . import detmath
from .signal import CODES, step_signal

STREAM_SITES = 80  # Philox counter word 3 of the physics site words (rng.STREAM_* are 0 and 1)
STREAM_ROWS = 81   # ... and of the row-noise words
CFA = "RGGB"
CELL_CHANNEL = np.array([0, 1, 1, 2])  # raster position (r & 1) * 2 + (c & 1) -> R, G, G, B
LAMBDA_SMALL = 30.0           # below: inversion summing up from k = 0; above: from the mode
LAMBDA_EXACT_MAX = 1e4        # above: the normal approximation (poisson.py's rule)
SMALL_CAP = 200.0             # k bound of the small-rate search (P(k > 200 | lam < 30) < 1e-80)
GAMMA = 2.2
GAMMA_FLOOR = 1e-8
SMOOTHSTEP_ITERATIONS = 64    # bisection steps of the inverse tone curve (exact to the last bit)
TWO_PI = 6.283185307179586
INV_2_32 = 1.0 / 4294967296.0
CHUNK_SITES = 1 << 15         # mosaic sites per vectorised chunk

# Brooks et al. random_ccm(): XYZ -> camera matrices of four cameras, and sRGB -> XYZ (D65).
XYZ2CAMS = (((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
            ((0.4913, -0.0541, -0.0202), (-0.613, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
            ((0.838, -0.263, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
            ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.097, 0.1581, 0.5181)))
RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
CCM_WEIGHTS = (1e-8, 1e8)      # each camera's weight ~ U(1e-8, 1e8)
RGB_GAIN_MEAN_SD = (0.8, 0.1)  # brightness gain = 1 / N(0.8, 0.1)
RGB_GAIN_FLOOR = 0.1           # our guard: the normal draw is clamped to >= 0.1 (Brooks has none)
RED_GAIN = (1.9, 2.4)
BLUE_GAIN = (1.5, 1.9)


# ---------------------------------------------------------------- ISP parameters (sampled once per pair)

def rgb2cam_from_weights(weights):
    """Brooks' random_ccm for given weights: the weighted XYZ->camera mean times sRGB->XYZ, rows summing to 1."""
    total = ((weights[0] + weights[1]) + weights[2]) + weights[3]
    xyz2cam = [[(((XYZ2CAMS[0][i][j] * weights[0] + XYZ2CAMS[1][i][j] * weights[1]) + XYZ2CAMS[2][i][j] * weights[2])
                 + XYZ2CAMS[3][i][j] * weights[3]) / total for j in range(3)] for i in range(3)]
    out = []
    for i in range(3):
        row = [(xyz2cam[i][0] * RGB2XYZ[0][j] + xyz2cam[i][1] * RGB2XYZ[1][j]) + xyz2cam[i][2] * RGB2XYZ[2][j]
               for j in range(3)]
        s = (row[0] + row[1]) + row[2]
        out.append([v / s for v in row])
    return out


def invert3(m):
    """The inverse of a 3x3 matrix (lists) by cofactors, in a fixed order of float operations."""
    (a, b, c), (d, e, f), (g, h, i) = m
    co = [[e * i - f * h, c * h - b * i, b * f - c * e],
          [f * g - d * i, a * i - c * g, c * d - a * f],
          [d * h - e * g, b * g - a * h, a * e - b * d]]
    det = (a * co[0][0] + b * co[1][0]) + c * co[2][0]
    return [[v / det for v in row] for row in co]


def channel_gains(noise):
    """White-balance times brightness gain of R, G and B (the unprocess divides by them, the process multiplies)."""
    g = noise["rgb_gain"]
    return np.array([noise["red_gain"] * g, g, noise["blue_gain"] * g], dtype=np.float64)


# ---------------------------------------------------------------- tone curve and gamma (CPU, per code)

def smoothstep(x):
    """Brooks' global tone curve 3x^2 - 2x^3 on [0, 1]."""
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep(y):
    """x in [0, 1] with smoothstep(x) = y, by bisection (basic operations only; Brooks: 0.5 - sin(asin(1 - 2y) / 3))."""
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    lo = np.zeros_like(y)
    hi = np.ones_like(y)
    for _ in range(SMOOTHSTEP_ITERATIONS):
        mid = (lo + hi) * 0.5
        below = smoothstep(mid) < y
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return (lo + hi) * 0.5


def to_linear(s):
    """sRGB-like values in [0, 1] to linear raw-space light: inverse tone curve, then gamma expansion."""
    return detmath.pow(np.maximum(inverse_smoothstep(s), GAMMA_FLOOR), GAMMA)


def code_lut(params, t):
    """Linear light of each 8-bit input code's clean low value at step t (256 float64)."""
    return to_linear(step_signal(CODES, params, t))


_THRESHOLDS = []


def thresholds():
    """T_1..T_255: the linear value at which the processed 8-bit code reaches k (cached; the same for every pair)."""
    if not _THRESHOLDS:
        _THRESHOLDS.append(to_linear((np.arange(1, 256, dtype=np.float64) - 0.5) / 255.0))
    return _THRESHOLDS[0]


# ---------------------------------------------------------------- the random words

def site_words(seed, step, first, count):
    """(shot word, read word) uint64 arrays of mosaic sites [first, first + count)."""
    b0 = first // 2
    nblocks = (first + count - 1) // 2 - b0 + 1
    words = rng.random_blocks(seed, step, STREAM_SITES, b0, nblocks).astype(np.uint64)
    idx = np.arange(first, first + count, dtype=np.int64)
    blk = idx // 2 - b0
    odd = (idx & 1) * 2
    return words[blk, odd], words[blk, odd + 1]


def row_normals(seed, step, rows):
    """The row-noise N(0, 1) value of each sensor row in rows (one word per row, by inverse CDF)."""
    rows = np.asarray(rows, dtype=np.uint64)
    k0, k1 = rng.split_key(seed)
    w = rng.philox4x32(rows & np.uint64(0xFFFFFFFF), rows >> np.uint64(32), step, STREAM_ROWS, k0, k1)[0]
    return detmath.ndtri(uniform(w))


def uniform(w):
    """Words to uniforms (w + 0.5) / 2**32 in (0, 1), exact in float64."""
    return (np.asarray(w, dtype=np.float64) + 0.5) * INV_2_32


# ---------------------------------------------------------------- sensor noise distributions

def poisson_counts(lam, u):
    """Poisson(lam) counts (float64) by inversion of one uniform each: the smallest k with CDF(k) > u.

    lam < LAMBDA_SMALL: sum the pmf up from k = 0.  Up to LAMBDA_EXACT_MAX: start at the
    mode m = floor(lam) (pmf from Stirling's series), get CDF(m) by summing the pmf down
    to m - 7 sqrt(lam) - 5 (the mass below is < 1e-11), then walk down or up from m.
    Above: the normal approximation, as synth/poisson.py.  physics.cuh has the scalar twin.
    """
    shape = np.shape(lam)
    lam = np.asarray(lam, dtype=np.float64).ravel()
    u = np.broadcast_to(np.asarray(u, dtype=np.float64), shape).ravel()
    k = np.zeros_like(lam)
    small = np.flatnonzero((lam > 0) & (lam < LAMBDA_SMALL))
    if small.size:
        k[small] = _poisson_small(lam[small], u[small])
    mid = np.flatnonzero((lam >= LAMBDA_SMALL) & (lam <= LAMBDA_EXACT_MAX))
    if mid.size:
        k[mid] = _poisson_mode(lam[mid], u[mid])
    big = np.flatnonzero(lam > LAMBDA_EXACT_MAX)
    if big.size:
        lb = lam[big]
        k[big] = np.maximum(np.floor(lb + np.sqrt(lb) * detmath.ndtri(u[big]) + 0.5), 0.0)
    return k.reshape(shape)


def _poisson_small(lam, u):
    """Inversion from k = 0: k += 1, p = p * lam / k, F += p while F <= u."""
    p = detmath.exp(-lam)
    f = p.copy()
    k = np.zeros_like(lam)
    live = np.flatnonzero(f <= u)
    while live.size:
        k[live] += 1.0
        p[live] = p[live] * lam[live] / k[live]
        f[live] += p[live]
        live = live[(f[live] <= u[live]) & (k[live] < SMALL_CAP)]
    return k


def stirling_tail(m):
    """log(m!) - (m log m - m + log(2 pi m) / 2) for m >= 30: 1/(12m) - 1/(360m^3) + 1/(1260m^5)."""
    im = 1.0 / m
    im2 = im * im
    return im * (1.0 / 12.0 - im2 * (1.0 / 360.0 - im2 * (1.0 / 1260.0)))


def _poisson_mode(lam, u):
    """Inversion from the mode (see poisson_counts)."""
    m = np.floor(lam)
    log_pm = (m * detmath.log(lam / m) + (m - lam)) - 0.5 * detmath.log(TWO_PI * m) - stirling_tail(m)
    pm = detmath.exp(log_pm)
    lo = np.maximum(m - np.floor(7.0 * np.sqrt(lam)) - 5.0, 0.0)
    # CDF(m): pmf summed from m down to lo, p_{k-1} = p_k * k / lam.  Sorted by their number of
    # terms, the sites still summing are always a prefix, so each step works on slices.
    order = np.argsort(lo - m, kind="stable")
    terms = (m - lo)[order]
    ps, ks, ls, fs = pm[order], m[order], lam[order], pm[order]
    for j in range(int(terms[0]) if terms.size else 0):
        n = int(np.searchsorted(-terms, -j, side="left"))  # sites with more than j terms
        ps[:n] = ps[:n] * ks[:n] / ls[:n]
        ks[:n] -= 1.0
        fs[:n] += ps[:n]
    f = np.empty_like(fs)
    f[order] = fs
    k = m.copy()
    p = pm.copy()
    # Down: while CDF(k - 1) = F - p_k > u, step to k - 1.
    live = np.flatnonzero((u < f) & (k > 0))
    while live.size:
        fp = f[live] - p[live]
        go = fp > u[live]
        live = live[go]
        f[live] = fp[go]
        p[live] = p[live] * k[live] / lam[live]
        k[live] -= 1.0
        live = live[k[live] > 0]
    # Up: while F <= u, step to k + 1.
    cap = m + np.floor(10.0 * np.sqrt(lam)) + 20.0
    live = np.flatnonzero(f <= u)
    while live.size:
        k[live] += 1.0
        p[live] = p[live] * lam[live] / k[live]
        f[live] += p[live]
        live = live[(f[live] <= u[live]) & (k[live] < cap[live])]
    return k


def tukey_lambda(u, lam):
    """The Tukey-lambda quantile of u: (u**lam - (1 - u)**lam) / lam, or log(u / (1 - u)) at lam = 0."""
    u = np.asarray(u, dtype=np.float64)
    v = 1.0 - u  # exact: u is a multiple of 2**-33 in (0, 1)
    if lam == 0:
        return detmath.log(u) - detmath.log(v)
    return (detmath.pow(u, lam) - detmath.pow(v, lam)) / lam


def tukey_variance(lam):
    """Variance of the standard Tukey-lambda distribution (lam > -1/2): pi^2/3 at 0, else 2/lam^2 (1/(1+2lam) - B)."""
    if lam == 0:
        return math.pi ** 2 / 3.0
    beta = math.exp(2.0 * math.lgamma(lam + 1.0) - math.lgamma(2.0 * lam + 2.0))
    return 2.0 / lam ** 2 * (1.0 / (1.0 + 2.0 * lam) - beta)


def add_sensor_noise(x, rows, cells, shot_words, read_words, row_z, noise):
    """Sensor noise in DN on clean DN values x at sites of the given sensor rows and CFA cells; float64 DN."""
    comps = noise["components"]
    k = noise["K"]
    if "p" in comps:
        x = poisson_counts(x / k, uniform(shot_words)) * k
    if "t" in comps:
        x = x + noise["read_scale"] * tukey_lambda(uniform(read_words), noise["read_lambda"])
    elif "g" in comps:
        x = x + noise["read_scale"] * detmath.ndtri(uniform(read_words))
    if "r" in comps:
        x = x + noise["row_sigma"] * row_z[rows]
    if "c" in comps:
        x = x + np.asarray(noise["bias"], dtype=np.float64)[cells]
    if "q" in comps:
        x = np.floor(x + 0.5)
    black, white = noise["black_level"], noise["white_level"]
    return np.minimum(np.maximum(x, -float(black)), float(white - black))


def declared_variance(noise, x):
    """The model's noise variance in DN^2 at clean DN level x: K x + read^2 + row^2 (+ 1/12 with q)."""
    comps = noise["components"]
    var = np.asarray(x, dtype=np.float64) * (noise["K"] if "p" in comps else 0.0)
    if "t" in comps:
        var = var + noise["read_scale"] ** 2 * tukey_variance(noise["read_lambda"])
    elif "g" in comps:
        var = var + noise["read_scale"] ** 2
    if "r" in comps:
        var = var + noise["row_sigma"] ** 2
    if "q" in comps:
        var = var + 1.0 / 12.0
    return var


# ---------------------------------------------------------------- unprocess + noise, site by site

def full_scale(noise):
    """white - black as a float: the DN of raw value 1."""
    return float(noise["white_level"] - noise["black_level"])


def mosaic_rows(rgb, params, t, rows, lut=None):
    """(x_clean, sensor) float64 DN arrays (len(rows), W) of the mosaic's given rows; sensor is x_clean if not noisy."""
    noise = params["noise"]
    lut = code_lut(params, t) if lut is None else lut
    w = rgb.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.arange(w, dtype=np.int64)
    ch = CELL_CHANNEL[(rows[:, None] & 1) * 2 + (cols[None, :] & 1)]
    px = rgb[rows]  # (R, W, 3) uint8
    lin = [lut[px[..., j]] for j in range(3)]
    m = np.asarray(noise["ccm"], dtype=np.float64)
    cam = (m[ch, 0] * lin[0] + m[ch, 1] * lin[1]) + m[ch, 2] * lin[2]
    raw = np.minimum(np.maximum(cam / channel_gains(noise)[ch], 0.0), 1.0)
    x = raw * full_scale(noise)
    return x, sensor_rows(x, rows, params["seed"], _noise_step(params, t), noise)


def sensor_rows(x, rows, seed, step, noise):
    """Sensor noise on clean DN x (len(rows), W) whose rows are the given sensor rows of a W-wide mosaic."""
    rows = np.asarray(rows, dtype=np.int64)
    w = x.shape[1]
    cols = np.arange(w, dtype=np.int64)
    # The rows are one run of sensor rows (plus a mirrored halo inside it): draw the run's words once.
    r_lo = int(rows.min())
    shot_all, read_all = site_words(seed, step, r_lo * w, (int(rows.max()) + 1 - r_lo) * w)
    at = (rows[:, None] - r_lo) * w + cols[None, :]
    row_z = row_normals(seed, step, rows) if "r" in noise["components"] else np.zeros(len(rows))
    ridx = np.broadcast_to(np.arange(len(rows))[:, None], x.shape)
    cells = (rows[:, None] & 1) * 2 + (cols[None, :] & 1)
    return add_sensor_noise(x, ridx, cells, shot_all[at], read_all[at], row_z, noise)


def _noise_step(params, t):
    """Counter word 2: 0 for the final low image, t for an earlier progressive step (numpy_backend.noise_step)."""
    prog = params.get("progressive")
    return 0 if prog is None or t is None or t == prog["steps"] else int(t)


# ---------------------------------------------------------------- re-process, pixel by pixel

def mirror(i, n):
    """Index i reflected into [0, n) about the edge sites (-1 -> 1, n -> n - 2): the same CFA parity."""
    i = np.where(i < 0, -i, i)
    i = np.where(i > n - 1, 2 * (n - 1) - i, i)
    return np.clip(i, 0, n - 1)  # n == 1: the single row or column stands in for its missing neighbours


def gained(sensor, rows, noise):
    """Sensor DN to white-balanced raw in [0, 1] (the ISP subtracts the nominal black level only)."""
    w = sensor.shape[1]
    cells = (np.asarray(rows)[:, None] & 1) * 2 + (np.arange(w)[None, :] & 1)
    g = channel_gains(noise)[CELL_CHANNEL[cells]]
    return np.minimum(np.maximum((sensor / full_scale(noise)) * g, 0.0), 1.0)


def demosaic(mp, r0):
    """Bilinear RGGB demosaic of a band; mp has one mirrored row/column of margin; r0 = sensor row of mp[1]."""
    c = mp[1:-1, 1:-1]
    up, down, left, right = mp[:-2, 1:-1], mp[2:, 1:-1], mp[1:-1, :-2], mp[1:-1, 2:]
    ul, ur, dl, dr = mp[:-2, :-2], mp[:-2, 2:], mp[2:, :-2], mp[2:, 2:]
    cross = ((up + down) + (left + right)) * 0.25
    diag = ((ul + ur) + (dl + dr)) * 0.25
    vert = (up + down) * 0.5
    horiz = (left + right) * 0.5
    h, w = c.shape
    re = (((np.arange(h) + r0) & 1) == 0)[:, None]
    ce = ((np.arange(w) & 1) == 0)[None, :]
    red = np.where(re & ce, c, np.where(re, horiz, np.where(ce, vert, diag)))
    green = np.where(re == ce, cross, c)
    blue = np.where(~re & ~ce, c, np.where(~re, horiz, np.where(~ce, vert, diag)))
    return red, green, blue


def to_codes(red, green, blue, cam2rgb):
    """cam2rgb, clip, then 8-bit codes by the gamma/tone-curve thresholds; (h, w, 3) uint8."""
    t = thresholds()
    out = np.empty(red.shape + (3,), np.uint8)
    for j in range(3):
        v = (cam2rgb[j][0] * red + cam2rgb[j][1] * green) + cam2rgb[j][2] * blue
        v = np.minimum(np.maximum(v, 0.0), 1.0)
        out[..., j] = np.searchsorted(t, v, side="right")
    return out


def compiled():
    """The numba twin (synth/physics_numba.py) when it can run here, else None (LOWLIGHT_NO_NUMBA, no numba)."""
    from . import physics_numba  # imported here: it imports this module

    return physics_numba if physics_numba.warmup() else None


def render(rgb, params, t=None, noisy=True):
    """The physics low image of step t for an 8-bit (H, W, 3) image: unprocess, noise (if noisy), re-process.

    Runs the compiled twin where numba is available (the same bytes), else render_reference.
    """
    fast = compiled()
    return render_reference(rgb, params, t, noisy) if fast is None else fast.render(rgb, params, t, noisy)


def render_reference(rgb, params, t=None, noisy=True):
    """render() in numpy: the reference the numba and CUDA twins are checked against."""
    rgb = np.ascontiguousarray(rgb)
    noise = params["noise"]
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    if h == 0 or w == 0:
        return out
    lut = code_lut(params, t)
    cam2rgb = invert3(noise["ccm"])
    band = max(1, CHUNK_SITES // w)
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        rows = mirror(np.arange(r0 - 1, r1 + 1), h)
        x, sensor = mosaic_rows(rgb, params, t, rows, lut)
        m = gained(sensor if noisy else x, rows, noise)
        mp = m[:, mirror(np.arange(-1, w + 1), w)]
        out[r0:r1] = to_codes(*demosaic(mp, r0), cam2rgb)
    return out


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low): uint16 RGGB mosaics in DN with the black level added, cropped to even H and W.

    Runs the compiled twin where numba is available (the same bytes), else render_raw_reference.
    """
    fast = compiled()
    return render_raw_reference(rgb, params, t) if fast is None else fast.render_raw(rgb, params, t)


def render_raw_reference(rgb, params, t=None):
    """render_raw() in numpy."""
    rgb = np.ascontiguousarray(rgb)
    noise = params["noise"]
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    clean = np.empty((h, w), np.uint16)
    low = np.empty((h, w), np.uint16)
    if h == 0 or w == 0:
        return clean, low
    lut = code_lut(params, t)
    band = max(1, CHUNK_SITES // rgb.shape[1])
    for r0 in range(0, h, band):
        r1 = min(h, r0 + band)
        x, sensor = mosaic_rows(rgb, params, t, np.arange(r0, r1), lut)
        clean[r0:r1] = to_dn(x[:, :w], noise)
        low[r0:r1] = to_dn(sensor[:, :w], noise)
    return clean, low


def to_dn(x, noise):
    """DN above black to the raw file's uint16 values: + black, round half up, clip to [0, white]."""
    v = np.floor(x + (float(noise["black_level"]) + 0.5))
    return np.minimum(np.maximum(v, 0.0), float(noise["white_level"])).astype(np.uint16)


def npy_bytes(arr):
    """The .npy file of an array as bytes (format 1.0: the same bytes for the same array everywhere)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False, version=(1, 0))
    return buf.getvalue()


def pack_rggb(mosaic):
    """An (H, W) RGGB mosaic as four (H/2, W/2) planes R, G(0,1), G(1,0), B, raster order of the cell."""
    return np.stack([mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2]])


# ---------------------------------------------------------------- realism check (report hook)

def photon_transfer(raw_clean, raw_low, noise, bins=16):
    """Measured noise variance against mean clean level in DN on raw mosaics, with the declared K x + read^2 + row^2.

    raw_clean and raw_low are uint16 mosaics as render_raw writes them (black level
    included).  Sites are grouped into `bins` equal-width bins of clean level; for
    each non-empty bin: mean clean DN, variance of (low - clean), site count, and the
    model's declared variance at that mean.  Returns a dict of equal-length arrays.
    """
    x = np.asarray(raw_clean, dtype=np.float64).ravel() - noise["black_level"]
    d = np.asarray(raw_low, dtype=np.float64).ravel() - (x + noise["black_level"])
    # The declared line holds away from the ADC's clipping at 0 and white.
    ok = (x >= 0) & (x < 0.9 * full_scale(noise))
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
    return {"mean": mean, "variance": var, "count": count[keep], "declared": declared_variance(noise, mean)}
