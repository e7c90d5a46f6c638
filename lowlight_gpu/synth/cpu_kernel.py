"""Compiled CPU twin of the numpy noise path (numba), and of the Poisson table builder.

``numpy_backend.render`` runs Philox, the Poisson table search, Box-Muller, the
compose, the clip and the quantisation as separate numpy passes.
``render_noisy`` here does them in one compiled call over the flat image
(about 8 ns per value for poisson-gaussian on one core; about 3.3 for gaussian,
where no table search runs), repeating the reference's arithmetic operation for
operation, so the bytes are the same (ARCHITECTURE.md, "Reproducibility"):

* value i uses Philox4x32-10 block j = i // 2 with counter
  (j & 0xffffffff, j >> 32, step, STREAM_NOISE) under key split_key(seed);
  words 0/1 are the Poisson words of values 2j / 2j+1 and words 2/3 their
  normals, by ``numpy_backend.box_muller``'s float32 operations in its order,
  with log and sincos in float64 by the twins of ``synth/detmath.py`` below,
  each rounded once to float32;
* the Poisson count comes from the same ``poisson.PoissonTables`` by the same
  guide-table search, and from ``detmath.ndtri`` (float64) for the
  normal-approximation codes;
* compose, clip, the per-value darkening and sRGB curve (``order: before``,
  ``space: linear``; ``signal.darken32``, ``signal.linear_to_srgb32``) and
  ``floor(z * 255 + 0.5)`` are float32, as in numpy.

``build_tables`` is ``poisson.build_tables_reference`` as one loop (about ten
times faster than the numpy version).

The loops are in chunks of CHUNK_BLOCKS Philox blocks: a vectorised Philox pass,
a Box-Muller pass, the per-value table search (two random reads into tables
that live in L2) and the compose and quantisation.  No fastmath (it would allow
contraction and reassociation, and so other bits); error_model="numpy" only
drops the zero-division checks that block vectorisation.  The kernel holds no
Python objects and releases the GIL.

Set ``LOWLIGHT_NO_NUMBA=1`` (read once, at import) to force the numpy path.
"""

import os
import sys
import threading
import time

import numpy as np

from .. import numba_cache, rng
from . import detmath, signal

DISABLED = os.environ.get("LOWLIGHT_NO_NUMBA", "").strip() not in ("", "0")
AVAILABLE = False
numba = None
if not DISABLED:
    try:
        import numba
        AVAILABLE = True
    except Exception:  # noqa: BLE001 - missing, or broken against this numpy: keep the pure-numpy loop
        numba = None


def _jit(**options):
    """numba.njit with the kernel's options, or the identity when numba is unavailable (plain Python)."""
    if not AVAILABLE:
        return lambda f: f
    # numba_cache: a read-only install or home caches in a temp folder (or not at all) instead of failing
    return numba_cache.njit(nogil=True, fastmath=False, error_model="numpy", **options)


# Model codes passed to the kernel.
MODEL_GAUSSIAN = 0
MODEL_POISSON = 1
MODEL_POISSON_GAUSSIAN = 2  # also brooks: shot noise plus Gaussian read noise
MODELS = {"gaussian": MODEL_GAUSSIAN, "poisson": MODEL_POISSON,
           "poisson-gaussian": MODEL_POISSON_GAUSSIAN, "brooks": MODEL_POISSON_GAUSSIAN}

# Philox blocks per chunk: the chunk's words, normals and counts (40 bytes a block, 20 KiB) stay in L1.
CHUNK_BLOCKS = 512

_PHILOX_M0 = np.uint64(rng.PHILOX_M0)
_PHILOX_M1 = np.uint64(rng.PHILOX_M1)
_PHILOX_W0 = np.uint64(rng.PHILOX_W0)
_PHILOX_W1 = np.uint64(rng.PHILOX_W1)
_MASK32 = np.uint64(rng.MASK32)
_U32 = np.uint64(32)
_U24 = np.uint64(24)
_U8 = np.uint32(8)
_U9 = np.uint32(9)
_U24_32 = np.uint32(24)
_INV_2_23 = np.float32(1.0 / (1 << 23))
_INV_2_24 = np.float32(1.0 / (1 << 24))
_TWO_PI = np.float32(2.0 * np.pi)
_HALF32 = np.float32(0.5)
_MINUS_TWO32 = np.float32(-2.0)
_ZERO32 = np.float32(0.0)
_ONE32 = np.float32(1.0)
_C255 = np.float32(255.0)
_SRGB_KNEE32 = np.float32(signal.SRGB_ENCODE_KNEE)
_SRGB_SLOPE32 = np.float32(signal.SRGB_SLOPE)
_SRGB_SCALE32 = np.float32(signal.SRGB_SCALE)
_SRGB_A32 = np.float32(signal.SRGB_A)
_SRGB_INV_GAMMA = np.float32(1.0 / signal.SRGB_GAMMA)
_TWO32 = 4294967296.0

# The numba twins of synth/detmath.py: scalar, the same operations in the same order (tests/test_detmath.py).
_SQRT2, _TWO54, _MIN_NORMAL = detmath.SQRT2, detmath.TWO54, detmath.MIN_NORMAL
_LN2_HI, _LN2_LO, _INVLN2 = detmath.LN2_HI, detmath.LN2_LO, detmath.INVLN2
_LG1, _LG2, _LG3, _LG4 = detmath.LG1, detmath.LG2, detmath.LG3, detmath.LG4
_LG5, _LG6, _LG7 = detmath.LG5, detmath.LG6, detmath.LG7
_P1, _P2, _P3, _P4, _P5 = detmath.P1, detmath.P2, detmath.P3, detmath.P4, detmath.P5
_Q1, _Q2, _Q3, _Q4, _Q5 = detmath.Q1, detmath.Q2, detmath.Q3, detmath.Q4, detmath.Q5
_S1, _S2, _S3, _S4, _S5, _S6 = detmath.S1, detmath.S2, detmath.S3, detmath.S4, detmath.S5, detmath.S6
_C1, _C2, _C3, _C4, _C5, _C6 = detmath.C1, detmath.C2, detmath.C3, detmath.C4, detmath.C5, detmath.C6
_INVPIO2, _PIO2_1, _PIO2_1T = detmath.INVPIO2, detmath.PIO2_1, detmath.PIO2_1T
_EXP_MAX, _EXP_MIN, _SINCOS_MAX = detmath.EXP_MAX, detmath.EXP_MIN, detmath.SINCOS_MAX
_SPLITTER, _POW_Y_MAX = detmath.SPLITTER, detmath.POW_Y_MAX
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9 = detmath.ATANH
_NA, _NB, _NC, _ND = detmath.ACKLAM_A, detmath.ACKLAM_B, detmath.ACKLAM_C, detmath.ACKLAM_D
_ACKLAM_LOW = detmath.ACKLAM_LOW
_MANT = np.int64(0x000FFFFFFFFFFFFF)
_ONE_BITS = np.int64(0x3FF0000000000000)
_INF = np.inf
_NAN = np.nan


@_jit(inline="always")
def pow2_f64(k):
    """detmath._pow2: 2.0 ** k for an integer k in [-1022, 1023]."""
    return np.int64((np.int64(k) + 1023) << 52).view(np.float64)


@_jit(inline="always")
def decompose_f64(x):
    """detmath._decompose: (k, m) with x = 2**k * m, m in (sqrt(2)/2, sqrt(2)], for positive finite x."""
    sub = x < _MIN_NORMAL
    xs = x * _TWO54 if sub else x
    bits = np.float64(xs).view(np.int64)
    k = ((bits >> 52) & 0x7FF) - 1023 - (54 if sub else 0)
    m = np.int64((bits & _MANT) | _ONE_BITS).view(np.float64)
    big = m > _SQRT2
    return (k + 1 if big else k), (m * 0.5 if big else m)


@_jit(inline="always")
def log_core(x):
    """detmath.log for a positive finite x (the kernel's u1: no special cases to select)."""
    k, m = decompose_f64(x)
    f = m - 1.0
    kd = np.float64(k)
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    hfsq = 0.5 * f * f
    return kd * _LN2_HI - ((hfsq - (s * (hfsq + (t2 + t1)) + kd * _LN2_LO)) - f)


@_jit(inline="always")
def log_f64(x):
    """detmath.log for one float64."""
    if x > 0 and x < _INF:
        return log_core(x)
    if x == _INF:
        return _INF
    return -_INF if x == 0 else _NAN


@_jit(inline="always")
def two_sum_f64(a, b):
    """detmath._two_sum."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@_jit(inline="always")
def two_prod_f64(a, b):
    """detmath._two_prod (Veltkamp splits, no FMA)."""
    p = a * b
    c = _SPLITTER * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLITTER * b
    bh = c - (c - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_jit(inline="always")
def log_ext_f64(x):
    """detmath.log_ext for one positive finite float64: (hi, lo)."""
    k, m = decompose_f64(x)
    kd = np.float64(k)
    f = m - 1.0
    d, d_lo = two_sum_f64(2.0, f)
    s = f / d
    p, p_lo = two_prod_f64(s, d)
    s_lo = (((f - p) - p_lo) - s * d_lo) / d
    z = s * s
    poly = _A8 + z * _A9
    poly = _A7 + z * poly
    poly = _A6 + z * poly
    poly = _A5 + z * poly
    poly = _A4 + z * poly
    poly = _A3 + z * poly
    poly = _A2 + z * poly
    poly = _A1 + z * poly
    poly = _A0 + z * poly
    tail = s * z * poly
    hi, e = two_sum_f64(kd * _LN2_HI, 2.0 * s)
    lo = e + ((kd * _LN2_LO + 2.0 * s_lo) + 2.0 * tail)
    return two_sum_f64(hi, lo)


@_jit(inline="always")
def exp_f64(x):
    """detmath.exp for one float64."""
    if x != x:
        return x
    if x > _EXP_MAX:
        return _INF
    if x < _EXP_MIN:
        return 0.0
    return exp_core(min(max(x, -746.0), 710.0))


@_jit(inline="always")
def exp_core(xc):
    """detmath.exp for xc in [EXP_MIN, EXP_MAX] (no special cases to select)."""
    kd = np.floor(xc * _INVLN2 + 0.5)
    hi = xc - kd * _LN2_HI
    lo = kd * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    k = np.int64(kd)
    k1 = k >> 1
    return y * pow2_f64(k1) * pow2_f64(k - k1)


@_jit(inline="always")
def expm1_f64(x):
    """detmath.expm1 for one float64."""
    if x != x:
        return x
    if x > _EXP_MAX:
        return _INF
    if x < -40.0:
        return -1.0
    xc = min(max(x, -40.0), 710.0)
    kd = np.floor(xc * _INVLN2 + 0.5)
    if abs(xc) <= 0.5 * _LN2_HI:
        kd = 0.0
    hi = xc - kd * _LN2_HI
    lo = kd * _LN2_LO
    r = hi - lo
    c = (hi - r) - lo
    hfx = 0.5 * r
    hxs = r * hfx
    r1 = 1.0 + hxs * (_Q1 + hxs * (_Q2 + hxs * (_Q3 + hxs * (_Q4 + hxs * _Q5))))
    t = 3.0 - r1 * hfx
    e = hxs * ((r1 - t) / (6.0 - r * t))
    k = np.int64(kd)
    if k == 0:
        return r - (r * e - hxs)
    e = (r * (e - c) - c) - hxs
    if k <= -2 or k > 56:
        return (1.0 - (e - r)) * pow2_f64(min(max(k - 1, -1022), 1023)) * 2.0 - 1.0
    if k == -1:
        return 0.5 * (r - e) - 0.5
    if k == 1:
        return -2.0 * (e - (r + 0.5)) if r < -0.25 else 1.0 + 2.0 * (r - e)
    two_k = pow2_f64(min(max(k, -1022), 1023))
    if k < 20:
        return ((1.0 - pow2_f64(min(max(-k, -1022), 1023))) - (e - r)) * two_k
    return ((r - (e + pow2_f64(min(max(-k, -1022), 1023)))) + 1.0) * two_k


@_jit(inline="always")
def pow_f64(x, y):
    """detmath.pow for one x >= 0 and y."""
    if x != x or y != y or x < 0:
        return _NAN
    if y == 0 or x == 1:
        return 1.0
    if y == 1:
        return x
    if x == 0:
        return 0.0 if y > 0 else _INF
    if x == _INF:
        return _INF if y > 0 else 0.0
    hi, lo = log_ext_f64(x)
    yc = min(max(y, -_POW_Y_MAX), _POW_Y_MAX)
    p, e = two_prod_f64(yc, hi)
    e = e + yc * lo
    r = exp_f64(p)
    return r + r * e if r < _INF else r


@_jit(inline="always")
def sincos_core(x):
    """detmath.sincos for |x| <= SINCOS_MAX: (sin x, cos x)."""
    n = np.floor(x * _INVPIO2 + 0.5)
    r = (x - n * _PIO2_1) - n * _PIO2_1T  # x - n*pi/2 in [-pi/4, pi/4]; the first difference is exact
    z = r * r
    v = z * r
    s = r + v * (_S1 + z * (_S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))))
    cr = z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
    hz = 0.5 * z
    w = 1.0 - hz
    c = w + (((1.0 - w) - hz) + z * cr)
    q = np.int64(n)
    swap = (q & 1) != 0
    sv = c if swap else s
    cv = s if swap else c
    sv = -sv if (q & 2) != 0 else sv
    cv = -cv if ((q + 1) & 2) != 0 else cv
    return sv, cv


@_jit(inline="always")
def sincos_f64(x):
    """detmath.sincos for one float64."""
    if not abs(x) <= _SINCOS_MAX:
        return _NAN, _NAN
    return sincos_core(x)


@_jit(inline="always")
def ndtri_f64(p):
    """detmath.ndtri for one float64 p in (0, 1)."""
    q = min(p, 1.0 - p)
    if q < _ACKLAM_LOW:
        t = np.sqrt(-2.0 * log_f64(q))
        tail = (((((_NC[0] * t + _NC[1]) * t + _NC[2]) * t + _NC[3]) * t + _NC[4]) * t + _NC[5]) / \
            ((((_ND[0] * t + _ND[1]) * t + _ND[2]) * t + _ND[3]) * t + 1.0)
        return tail if p < 0.5 else -tail  # the formula gives the lower tail (negative); mirror it above
    d = p - 0.5
    r = d * d
    return (((((_NA[0] * r + _NA[1]) * r + _NA[2]) * r + _NA[3]) * r + _NA[4]) * r + _NA[5]) * d / \
        (((((_NB[0] * r + _NB[1]) * r + _NB[2]) * r + _NB[3]) * r + _NB[4]) * r + 1.0)


@_jit(inline="always")
def philox_block(block, c2, c3, k0, k1):
    """Philox4x32-10 of counter (block & 0xffffffff, block >> 32, c2, c3) under (k0, k1): four words as uint64."""
    x0 = block & _MASK32
    x1 = block >> _U32
    x2 = c2
    x3 = c3
    ka = k0
    kb = k1
    for _ in range(10):
        # Products of two 32-bit words fit a uint64 exactly; its halves are Philox's hi/lo.
        p0 = x0 * _PHILOX_M0
        p1 = x2 * _PHILOX_M1
        x0 = (p1 >> _U32) ^ x1 ^ ka
        x2 = (p0 >> _U32) ^ x3 ^ kb
        x1 = p1 & _MASK32
        x3 = p0 & _MASK32
        ka = (ka + _PHILOX_W0) & _MASK32
        kb = (kb + _PHILOX_W1) & _MASK32
    return x0, x1, x2, x3


@_jit()
def philox_chunk(first_block, count, key0, key1, c2, c3, wp, w2, w3):
    """Philox4x32-10 of blocks [first_block, first_block + count): words 0/1 interleaved into wp
    (wp[2b], wp[2b+1] are the Poisson words of the block's two values), words 2/3 into w2/w3."""
    for b in range(count):
        x0, x1, x2, x3 = philox_block(np.uint64(first_block + b), c2, c3, key0, key1)
        wp[2 * b] = np.uint32(x0)
        wp[2 * b + 1] = np.uint32(x1)
        w2[b] = np.uint32(x2)
        w3[b] = np.uint32(x3)


@_jit()
def box_muller_chunk(count, w2, w3, g):
    """numpy_backend.box_muller on count word pairs, float32, with correctly rounded log/cos/sin;
    the block's two normals go to g[2b] (cos) and g[2b+1] (sin)."""
    for b in range(count):
        u1 = np.float32(np.float32(np.float32(w2[b] >> _U9) + _HALF32) * _INV_2_23)  # in (0, 1)
        theta = np.float32(np.float32(np.float32(w3[b] >> _U8) * _INV_2_24) * _TWO_PI)
        log_u1 = np.float32(log_core(np.float64(u1)))  # u1 is positive and normal: no special cases
        radius = np.float32(np.sqrt(np.float32(_MINUS_TWO32 * log_u1)))
        s, c = sincos_core(np.float64(theta))  # theta in [0, 2 pi)
        g[2 * b] = np.float32(radius * np.float32(c))
        g[2 * b + 1] = np.float32(radius * np.float32(s))


@_jit()
def poisson_chunk(codes, first_value, count, wp, guide, thresholds, kshift, normal, lam, any_normal, k_out):
    """poisson.sample for values [first_value, first_value + count) with Poisson words wp: counts into k_out.

    Inversion: k = pos + kshift[c] where pos walks the thresholds of u's guide bucket.  Most buckets
    hold at most one threshold, so that step is taken without a branch (min() keeps the read in
    bounds) and only the rare longer walk branches.
    """
    last = thresholds.size - 1
    if any_normal:  # some codes use the normal approximation (peaks above LAMBDA_EXACT_MAX)
        for i in range(count):
            c = np.int64(codes[first_value + i])
            u = np.uint64(wp[i])
            if normal[c]:
                lm = lam[c]
                zq = ndtri_f64((np.float64(u) + 0.5) / _TWO32)
                k_out[i] = np.int64(max(np.floor(lm + np.sqrt(lm) * zq + 0.5), 0.0))
            else:
                gidx = c * 257 + np.int64(u >> _U24)
                pos = np.int64(guide[gidx])
                end = np.int64(guide[gidx + 1])
                while pos < end and np.uint64(thresholds[pos]) <= u:
                    pos += 1
                k_out[i] = pos + np.int64(kshift[c])
        return
    for i in range(count):
        c = np.int64(codes[first_value + i])
        u = np.uint64(wp[i])
        gidx = c * 257 + np.int64(u >> _U24)
        pos = np.int64(guide[gidx])
        end = np.int64(guide[gidx + 1])
        step = np.int64((pos < end) & (np.uint64(thresholds[min(pos, last)]) <= u))
        k_out[i] = pos + step + np.int64(kshift[c])
        if step * (end - pos) >= 2:  # stepped, and the bucket holds more thresholds: walk on
            pos += 1
            while pos < end and np.uint64(thresholds[pos]) <= u:
                pos += 1
            k_out[i] = pos + np.int64(kshift[c])


@_jit(inline="always")
def composed_value(code, k, g, signal32, model, inv_peak, sigma):
    """numpy_backend.add_noise's compose and clip of one value (its code, Poisson count k, normal g), float32."""
    if model == MODEL_GAUSSIAN:
        z = np.float32(signal32[np.int64(code)] + np.float32(sigma * g))
    elif model == MODEL_POISSON:
        z = np.float32(np.float32(k) * inv_peak)
    else:
        z = np.float32(np.float32(np.float32(k) * inv_peak) + np.float32(sigma * g))
    return min(max(z, _ZERO32), _ONE32)  # np.clip


@_jit(inline="always")
def quantized(z):
    """signal.quantize32 of one float32 value in [0, 1]."""
    return np.uint8(np.floor(np.float32(np.float32(z * _C255) + _HALF32)))


@_jit()
def compose_chunk(codes, first_value, count, k, g, signal32, model, inv_peak, sigma, out):
    """numpy_backend.add_noise's compose and clip, then quantize, all float32, into out."""
    for i in range(count):
        out[first_value + i] = quantized(composed_value(codes[first_value + i], k[i], g[i], signal32, model,
                                                        inv_peak, sigma))


@_jit(inline="always")
def powf_f32(x, y):
    """signal.pow32 on one float32 x >= 0 and float32 y > 0: exp(y log x) in float64, rounded once."""
    # A positive float32 is a normal float64, so log_core gives log_f64's bits.  Clamping the exponent to
    # [EXP_MIN, EXP_MAX] changes exp's double but not its float32 rounding (0 below, inf above), so exp_core
    # serves too.  No special cases to branch on: the loop can vectorise.
    arg = np.float64(y) * log_core(max(np.float64(x), _MIN_NORMAL))
    r = np.float32(exp_core(min(max(arg, _EXP_MIN), _EXP_MAX)))
    return r if x > 0 else np.float32(0.0)


@_jit(inline="always")
def linear_to_srgb_f32(z):
    """signal.linear_to_srgb32 on one float32 value."""
    if z <= _SRGB_KNEE32:
        return np.float32(z * _SRGB_SLOPE32)
    return np.float32(np.float32(_SRGB_SCALE32 * powf_f32(max(z, _SRGB_KNEE32), _SRGB_INV_GAMMA)) - _SRGB_A32)


@_jit()
def curve_chunk(first_value, count, k, g, codes, signal32, model, inv_peak, sigma, darken, alpha, beta, gamma,
                linear, out):
    """compose_chunk for order: before and space: linear: the per-value float32 darkening and sRGB curve
    (signal.darken32, signal.linear_to_srgb32) between the clip and the quantisation."""
    for i in range(count):
        z = composed_value(codes[first_value + i], k[i], g[i], signal32, model, inv_peak, sigma)
        if darken:
            z = np.float32(beta * powf_f32(np.float32(alpha * z), gamma))
        if linear:
            z = linear_to_srgb_f32(z)
        out[first_value + i] = quantized(z)


@_jit()
def render_noisy_kernel(codes, out, signal32, guide, thresholds, kshift, normal, lam, any_normal,
                        model, inv_peak, sigma, key0, key1, step, stream, darken, alpha, beta, gamma, linear):
    """Noisy uint8 codes of the flat uint8 ``codes`` into ``out`` (see the module docstring)."""
    n = codes.size
    nblocks = (n + 1) // 2
    wp = np.empty(2 * CHUNK_BLOCKS, np.uint32)
    w2 = np.empty(CHUNK_BLOCKS, np.uint32)
    w3 = np.empty(CHUNK_BLOCKS, np.uint32)
    g = np.zeros(2 * CHUNK_BLOCKS, np.float32)
    k = np.zeros(2 * CHUNK_BLOCKS, np.int64)
    c2 = np.uint64(step) & _MASK32
    c3 = np.uint64(stream) & _MASK32
    k0 = np.uint64(key0) & _MASK32
    k1 = np.uint64(key1) & _MASK32
    for first in range(0, nblocks, CHUNK_BLOCKS):
        count = min(CHUNK_BLOCKS, nblocks - first)
        values = min(n - 2 * first, 2 * count)
        philox_chunk(first, count, k0, k1, c2, c3, wp, w2, w3)
        if model != MODEL_POISSON:
            box_muller_chunk(count, w2, w3, g)
        if model != MODEL_GAUSSIAN:
            poisson_chunk(codes, 2 * first, values, wp, guide, thresholds, kshift, normal, lam, any_normal, k)
        if darken or linear:
            curve_chunk(2 * first, values, k, g, codes, signal32, model, inv_peak, sigma, darken, alpha, beta, gamma,
                        linear, out)
        else:
            compose_chunk(codes, 2 * first, values, k, g, signal32, model, inv_peak, sigma, out)
    return out


@_jit()
def tables_kernel(lam, log_lam, lo, hi, logfact, thresholds, guide, kshift):
    """poisson.build_tables_reference's thresholds, guide and kshift, value for value; returns the threshold count.

    One running sum over every code's pmf in order (as numpy's cumsum), each code's CDF taken since its start.
    """
    m = 0
    csum = 0.0
    for c in range(256):
        base = csum
        first = m
        zeros = 0
        lam_c = lam[c]
        log_lam_c = log_lam[c]
        for k in range(lo[c], hi[c]):
            csum += exp_f64(np.float64(k) * log_lam_c - lam_c - logfact[k])
            t = min(np.floor((csum - base) * _TWO32 + 0.5), _TWO32)
            if t == 0.0:
                zeros += 1
            elif t < _TWO32:
                thresholds[m] = np.uint32(t)
                m += 1
        kshift[c] = np.int32(lo[c] + zeros - first)
        j = first  # guide[c, b] = first + how many of the code's thresholds lie in buckets below b
        for b in range(257):
            while j < m and np.int64(thresholds[j] >> _U24_32) < b:
                j += 1
            guide[c * 257 + b] = np.int32(j)
    return m


def build_tables(lam, normal, lo, hi, log_lam):
    """poisson.build_tables_reference compiled: the same PoissonTables from table_bounds' arrays."""
    from .poisson import PoissonTables, log_factorials

    logfact = _readonly(log_factorials(int(hi.max(initial=0)) + 1), np.float64)
    thresholds = np.empty(max(int((hi - lo).sum()), 1), np.uint32)
    guide = np.empty(256 * 257, np.int32)
    kshift = np.empty(256, np.int32)
    m = tables_kernel(_readonly(lam, np.float64), _readonly(log_lam, np.float64), _readonly(lo, np.int64),
                      _readonly(hi, np.int64), logfact, thresholds, guide, kshift)
    return PoissonTables(lam, thresholds[:m].copy(), guide, kshift, normal)


_compile_lock = threading.Lock()
_compiled = False
# The one load of this process (or of the fork server it was forked from): seconds, and whether numba
# compiled (a cache miss, or no cache) rather than loaded from its cache.  pipeline.warm_up reports it.
LOAD = {"seconds": 0.0, "compiled": False}


def _readonly(a, dtype):
    """A C-contiguous, read-only view (a copy only if dtype or layout differ).

    Every input reaches the kernel read-only, so a caller's read-only array (np.asarray of a
    PIL image, say) never triggers a second numba specialisation outside the compile lock.
    """
    v = np.ascontiguousarray(a, dtype=dtype).view()
    v.flags.writeable = False
    return v


_NO_THRESHOLDS = _readonly(np.zeros(1), np.uint32)  # keeps size - 1 >= 0; never compared (empty guide ranges)
_NO_GUIDE = _readonly(np.zeros(256 * 257), np.int32)
_NO_KSHIFT = _readonly(np.zeros(256), np.int32)
_NO_NORMAL = _readonly(np.zeros(256), np.bool_)
_NO_LAM = _readonly(np.zeros(256), np.float64)


def _call(codes, signal, guide, thresholds, kshift, normal, lam, model, inv_peak, sigma, k0, k1, step,
          darken=None, linear=False):
    """Run the kernel with every argument at its one compiled type; returns the new uint8 output."""
    codes = _readonly(codes, np.uint8).reshape(-1)
    out = np.empty(codes.size, np.uint8)
    alpha, beta, gamma = (np.float32(c) for c in (darken or (1.0, 1.0, 1.0)))
    render_noisy_kernel(codes, out, _readonly(np.asarray(signal, np.float64), np.float32), guide, thresholds,
                        kshift, normal, lam, bool(normal.any()), np.int64(model), np.float32(inv_peak),
                        np.float32(sigma), np.uint64(k0), np.uint64(k1), np.uint64(step),
                        np.uint64(rng.STREAM_NOISE), darken is not None, alpha, beta, gamma, bool(linear))
    return out


def warmup():
    """Compile the kernel, or load it from numba's cache in __pycache__, once and thread-safely.

    render_noisy calls this itself; call it early to keep the one-off cost out of timings.
    Returns AVAILABLE.
    """
    global _compiled, AVAILABLE
    if not AVAILABLE or _compiled:
        return AVAILABLE
    with _compile_lock:
        if not _compiled and AVAILABLE:
            t0 = time.perf_counter()
            try:
                _call(np.zeros(3, np.uint8), np.zeros(256), _NO_GUIDE, _NO_THRESHOLDS, _NO_KSHIFT, _NO_NORMAL,
                      _NO_LAM, MODEL_GAUSSIAN, 1.0, 0.0, 0, 0, 0)
                zero = _readonly(np.zeros(256), np.int64)
                tables_kernel(_NO_LAM, _NO_LAM, zero, zero, _NO_LAM, np.zeros(1, np.uint32),
                              np.empty(256 * 257, np.int32), np.empty(256, np.int32))
                _compiled = True
                LOAD.update(seconds=time.perf_counter() - t0, compiled=numba_cache.compiled(render_noisy_kernel, tables_kernel))
            except Exception as exc:  # noqa: BLE001 - a numba that cannot compile here must not fail pairs
                AVAILABLE = False
                print(f"lowlight_gpu: numba could not compile the CPU noise kernel ({type(exc).__name__}: "
                      f"{exc}); using the pure-numpy path (same images, slower)", file=sys.stderr)
    return AVAILABLE


def render_noisy(flat_codes, signal, tables, noise, seed, step, darken=None, linear=False):
    """Noisy flat uint8 codes: numpy_backend.render_noisy_reference in one compiled pass.

    ``flat_codes`` are the input codes (uint8, any shape, read as flat), ``signal`` the
    256-entry clean signal (float64), ``tables`` the PoissonTables (None for the gaussian
    model), ``noise`` the params' noise dict, ``seed`` the pair seed and ``step`` the
    counter's step word; ``darken`` is None or the float32 (alpha, beta, gamma) of
    ``order: before``, ``linear`` True for ``space: linear``.  Releases the GIL while it runs.
    """
    if not AVAILABLE:
        raise RuntimeError("lowlight_gpu.synth.cpu_kernel: numba is not available (or LOWLIGHT_NO_NUMBA is set)")
    model = MODELS.get(noise["model"])
    if model is None:
        raise ValueError(f"cpu_kernel: unsupported noise model {noise['model']!r}")
    warmup()
    if model == MODEL_GAUSSIAN:
        inv_peak, sigma = 1.0, noise["sigma"]
        guide, thresholds, kshift, normal, lam = _NO_GUIDE, _NO_THRESHOLDS, _NO_KSHIFT, _NO_NORMAL, _NO_LAM
    else:
        inv_peak = 1.0 / noise["peak"]
        sigma = noise["read_sigma"] if model == MODEL_POISSON_GAUSSIAN else 0.0
        guide = _readonly(tables.guide, np.int32)
        thresholds = _readonly(tables.thresholds, np.uint32) if tables.thresholds.size else _NO_THRESHOLDS
        kshift = _readonly(tables.kshift, np.int32)
        normal = _readonly(tables.normal, np.bool_)
        lam = _readonly(tables.lam, np.float64)
    k0, k1 = rng.split_key(seed)
    return _call(flat_codes, signal, guide, thresholds, kshift, normal, lam, model, inv_peak, sigma,
                 k0, k1, int(step) & rng.MASK32, darken, linear)
