"""Camera-physics noise (``noise.model: physics``): unprocess to a raw mosaic, sensor noise in DN, re-process.

The per-site and per-pixel model is ``physics.cuh`` (run on the CPU by the model's library,
``native.cpp``, and on the GPU by ``physics_gpu.py``).  This module holds what is computed once
per image on the CPU and handed to it -- the linear value of each 8-bit code, the 255 code
thresholds, the matrices and gains -- and the model's declared variance.  Every value that
reaches an output byte is float64 arithmetic built from +, -, *, /, sqrt, floor and the
functions of ``detmath`` (no library transcendental), so the bytes are the same on every CPU
and on the GPU.

1. Unprocess (Brooks et al. 2019, "Unprocessing Images for Learned Raw
   Denoising", google-research/unprocessing ``unprocess.py``, Apache-2.0): per 8-bit
   code, the clean low sRGB value s goes through the inverse smoothstep tone
   curve and the inverse gamma (max(x, 1e-8) ** 2.2) -- 256 values per image,
   on the CPU (``code_lut``).  Per mosaic site: the rgb2cam row of its CFA colour,
   division by that colour's white-balance and brightness gain, clip to [0, 1]
   (Brooks' highlight-preserving mask of ``safe_invert_gains`` is left out: it has
   no exact inverse, and low images seldom come near white), RGGB mosaic.
2. Sensor noise in DN on the mosaic, x = raw * (white - black): p shot K * Poisson(x / K)
   (exact inversion), t Tukey-lambda or g Gaussian read, r row noise (one normal per
   sensor row), c colour bias per CFA position, q rounding to whole DN; then the ADC's
   range [-black, white - black].
3. Re-process with the same parameters (Brooks' ``process.py`` plus the inverse
   of every unprocess step): gains, clip, bilinear demosaic, cam2rgb,
   clip, gamma and smoothstep, 8 bits.  Gamma and tone curve are monotonic, so
   the 8-bit code of a linear value v is the number of thresholds T_k <= v with
   T_k the linear value of the code boundary (k - 0.5) / 255 (``thresholds``): the
   exact round-half-up quantisation of smoothstep(v ** (1/2.2)), without a
   transcendental per pixel.

Randomness (Philox, ``rng.py``; key = the pair seed, counter word 2 = the step):
site i = r * W + c of the H x W mosaic uses block i // 2 of stream 80 (physics.cuh's
LL_PHYS_STREAM_SITES), words 2 (i % 2) (shot) and 2 (i % 2) + 1 (read); row r uses word 0 of
block r of stream 81 (LL_PHYS_STREAM_ROWS).  A word w is the uniform u = (w + 0.5) / 2**32.

Sizes: the sRGB image keeps every pixel, the demosaic mirrors across the borders
(a mirrored neighbour has the same CFA colour).  Raw outputs are cropped to even height and
width, so every 2x2 cell is complete.
"""

import math

import numpy as np

from . import detmath
from .signal import CODES, step_signal

GAMMA = 2.2
GAMMA_FLOOR = 1e-8
SMOOTHSTEP_ITERATIONS = 64    # bisection steps of the inverse tone curve (exact to the last bit)

# ---------------------------------------------------------------- the colour matrix and gains a pair drew (isp_ranges.py)

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


def tukey_variance(lam):
    """Variance of the standard Tukey-lambda distribution (lam > -1/2): pi^2/3 at 0, else 2/lam^2 (1/(1+2lam) - B)."""
    if lam == 0:
        return math.pi ** 2 / 3.0
    beta = math.exp(2.0 * math.lgamma(lam + 1.0) - math.lgamma(2.0 * lam + 2.0))
    return 2.0 / lam ** 2 * (1.0 / (1.0 + 2.0 * lam) - beta)


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


def full_scale(noise):
    """white - black as a float: the DN of raw value 1."""
    return float(noise["white_level"] - noise["black_level"])
