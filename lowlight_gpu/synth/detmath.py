"""Deterministic float64 math: the one specification of every transcendental that reaches an output byte.

numpy's SIMD ``exp``/``log``/``sin``/``cos``/``power`` and the C library's give
different last bits on different CPUs, dispatch paths and libraries.  The
functions here are built only from operations IEEE-754 rounds the same way on
every machine (+, -, *, /, sqrt, floor, comparisons, and integer operations on
the bits of a float), evaluated in a fixed order with no multiply-add
contraction and no reduction whose order numpy may choose.  They therefore
give the same bits everywhere; they ARE the specification, accurate to about an
ulp of the true value (tests/test_detmath.py measures it).

Twins, operation for operation: ``synth/cpu_kernel.py`` (numba, scalar) and
``synth/detmath.cuh`` (CUDA and host C++).  tests/test_detmath.py checks all
three on one shared table of inputs (its ``cases()``), edge cases included.  log
follows e_log.c's main formula only (not its small-|f| branches), so it is within
an ulp but not always correctly rounded; pow uses an extended-precision log.

Sources: fdlibm 5.3 (e_log.c, e_exp.c, s_expm1.c, k_sin.c, k_cos.c), the
first step of e_rem_pio2.c (Cody-Waite), Dekker's exact product for ``pow``, and
Acklam's rational approximation for ``ndtri``.

Each function takes an array or a scalar and returns a float64 array (0-d for
a scalar); ``scalar(fn, *args)`` returns a Python float.
"""

import numpy as np

# ---------------------------------------------------------------- constants (shared with the twins)

SQRT2 = 1.4142135623730951
TWO54 = 18014398509481984.0          # 2**54: lifts a subnormal into the normal range exactly
MIN_NORMAL = 2.2250738585072014e-308  # 2**-1022
LN2_HI = 6.93147180369123816490e-01  # 32 significant bits, so k * LN2_HI is exact for |k| < 2**21
LN2_LO = 1.90821492927058770002e-10
INVLN2 = 1.44269504088896338700e+00
# e_log.c
LG1, LG2, LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
LG4, LG5 = 2.222219843214978396e-01, 1.818357216161805012e-01
LG6, LG7 = 1.531383769920937332e-01, 1.479819860511658591e-01
# e_exp.c
P1, P2, P3 = 1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05
P4, P5 = -1.65339022054652515390e-06, 4.13813679705723846039e-08
EXP_MAX = 7.09782712893383973096e+02   # above: +inf
EXP_MIN = -7.45133219101941108420e+02  # below: 0
# s_expm1.c
Q1, Q2, Q3 = -3.33333333333331316428e-02, 1.58730158725481460165e-03, -7.93650757867487942473e-05
Q4, Q5 = 4.00821782732936239552e-06, -2.01099218183624371326e-07
# k_sin.c, k_cos.c
S1, S2, S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
S4, S5, S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
C1, C2, C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
C4, C5, C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
# e_rem_pio2.c: pi/2 = PIO2_1 + PIO2_1T, PIO2_1 with 33 significant bits (n * PIO2_1 exact for n < 2**20)
INVPIO2 = 6.36619772367581382433e-01
PIO2_1 = 1.57079632673412561417e+00
PIO2_1T = 6.07710050650619224932e-11
SINCOS_MAX = 1048576.0  # |x| up to 2**20: the reduction stays exact and accurate
# Veltkamp's splitter 2**27 + 1: a = hi + lo with hi of 26 bits, so hi * hi' is exact.
SPLITTER = 134217729.0
POW_Y_MAX = 1e19  # |y * log x| >= 1000 beyond this for every x != 1: the result is 0 or inf already
# atanh series 2s(1 + z/3 + z^2/5 + ...) of the extended log, in the tail form s * z * P(z).
ATANH = tuple(1.0 / (2 * i + 3) for i in range(10))
# Acklam's inverse normal CDF
ACKLAM_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
            1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
ACKLAM_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
            6.680131188771972e01, -1.328068155288572e01)
ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
            -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
ACKLAM_LOW = 0.02425  # below (and above 1 - it) the tail formula applies

_MANT = np.int64(0x000FFFFFFFFFFFFF)
_ONE_BITS = np.int64(0x3FF0000000000000)


BLOCK = 4096  # values per pass: the temporaries stay in L1/L2 and in malloc's reused heap (no page faults)


def _f64(x):
    """x as a float64 array (0-d for a scalar)."""
    return np.asarray(x, dtype=np.float64)


def _blockwise(fn):
    """fn applied elementwise in BLOCK-sized pieces of its (broadcast) arguments: the same values, less memory traffic."""
    def wrapper(*args):
        arrays = np.broadcast_arrays(*(_f64(a) for a in args))
        if arrays[0].size <= BLOCK:
            return fn(*arrays)
        flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
        pieces = [fn(*(a[i:i + BLOCK] for a in flat)) for i in range(0, flat[0].size, BLOCK)]
        shape = arrays[0].shape
        if isinstance(pieces[0], tuple):
            return tuple(np.concatenate(p).reshape(shape) for p in zip(*pieces))
        return np.concatenate(pieces).reshape(shape)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def _horner(z, coeffs):
    """c0 + z * (c1 + z * (... + z * cn)), evaluated in that order, in place (a + b and a * b commute exactly)."""
    p = z * coeffs[-1]
    for c in coeffs[-2:0:-1]:
        p += c
        p *= z
    p += coeffs[0]
    return p


def scalar(fn, *args):
    """fn(*args) for scalar arguments, as a Python float (or a tuple of floats)."""
    out = fn(*args)
    return tuple(float(v) for v in out) if isinstance(out, tuple) else float(out)


def _pow2(k):
    """2.0 ** k for integer arrays k in [-1022, 1023], built from the bits."""
    return np.asarray((np.asarray(k, np.int64) + 1023) << 52).view(np.float64)


def _decompose(x):
    """(k, m) with x = 2**k * m and m in (sqrt(2)/2, sqrt(2)], for positive finite x (subnormals too)."""
    sub = x < MIN_NORMAL
    any_sub = sub.any()  # rare: skip the selects (the same values) when there are none
    xs = np.where(sub, x * TWO54, x) if any_sub else np.array(x)
    bits = xs.view(np.int64)  # a new contiguous array (0-d for a scalar)
    k = ((bits >> 52) & 0x7FF) - 1023
    if any_sub:
        k -= np.where(sub, 54, 0)
    m = np.asarray(((bits & _MANT) | _ONE_BITS).view(np.float64))  # in [1, 2); an array even for a scalar
    big = m > SQRT2
    np.multiply(m, 0.5, out=m, where=big)
    return k + big, m


def _log_special(x, r):
    """r where x is positive and finite; log's value at 0, negatives, inf and nan elsewhere."""
    if ((x > 0) & (x < np.inf)).all():
        return r
    r = np.where(x > 0, r, np.where(x == 0, -np.inf, np.nan))
    return np.where(x == np.inf, np.inf, r)


@_blockwise
def log(x):
    """Natural logarithm (fdlibm e_log.c's polynomial and order; < 1 ulp)."""
    x = _f64(x)
    with np.errstate(all="ignore"):
        k, m = _decompose(x)
        f = m - 1.0
        kd = k.astype(np.float64)
        s = f / (2.0 + f)
        z = s * s
        w = z * z
        t1 = w * _horner(w, (LG2, LG4, LG6))
        t2 = z * _horner(w, (LG1, LG3, LG5, LG7))
        hfsq = 0.5 * f * f
        r = kd * LN2_HI - ((hfsq - (s * (hfsq + (t2 + t1)) + kd * LN2_LO)) - f)
        return _log_special(x, r)


def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a):
    """Veltkamp: a = hi + lo exactly, each with at most 26 significant bits."""
    c = SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    """(p, e) with p = fl(a * b) and p + e = a * b exactly (Dekker, no FMA)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@_blockwise
def log_ext(x):
    """log(x) as an unevaluated sum hi + lo, about 2**-58 relative, for positive finite x."""
    x = _f64(x)
    with np.errstate(all="ignore"):
        k, m = _decompose(x)
        kd = k.astype(np.float64)
        f = m - 1.0  # exact
        # s = f / (2 + f) to double-double: log(m) = 2 atanh(s).
        d, d_lo = _two_sum(2.0, f)
        s = f / d
        p, p_lo = _two_prod(s, d)
        s_lo = (((f - p) - p_lo) - s * d_lo) / d
        z = s * s
        poly = ATANH[9]
        for c in ATANH[8::-1]:
            poly = c + z * poly
        tail = s * z * poly  # 2 * tail is the series beyond 2s, at most 1 % of it
        hi, e = _two_sum(kd * LN2_HI, 2.0 * s)
        lo = e + ((kd * LN2_LO + 2.0 * s_lo) + 2.0 * tail)
        return _two_sum(hi, lo)


@_blockwise
def exp(x):
    """e ** x (fdlibm e_exp.c's reduction and polynomial, one formula for every k; < 1 ulp)."""
    x = _f64(x)
    with np.errstate(all="ignore"):
        xc = np.minimum(np.maximum(x, -746.0), 710.0)  # keeps k finite; the ends are fixed below
        kd = np.floor(xc * INVLN2 + 0.5)
        hi = xc - kd * LN2_HI  # exact: kd * LN2_HI is, and the difference cancels
        lo = kd * LN2_LO
        r = hi - lo
        t = r * r
        c = r - t * _horner(t, (P1, P2, P3, P4, P5))
        y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
        k = kd.astype(np.int64)
        k1 = k >> 1  # two exact power-of-two factors: the second rounds once, also into subnormals
        out = y * _pow2(k1) * _pow2(k - k1)
        out = np.where(x > EXP_MAX, np.inf, np.where(x < EXP_MIN, 0.0, out))
        return np.where(np.isnan(x), x, out)


@_blockwise
def expm1(x):
    """e ** x - 1, accurate near 0 (fdlibm s_expm1.c; < 1 ulp)."""
    x = _f64(x)
    with np.errstate(all="ignore"):
        xc = np.minimum(np.maximum(x, -40.0), 710.0)  # below -40 the answer is -1 in float64
        kd = np.floor(xc * INVLN2 + 0.5)
        small = np.abs(xc) <= 0.5 * LN2_HI  # fdlibm's k = 0 range: no reduction
        kd = np.where(small, 0.0, kd)
        hi = xc - kd * LN2_HI
        lo = kd * LN2_LO
        r = hi - lo
        c = (hi - r) - lo
        hfx = 0.5 * r
        hxs = r * hfx
        r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))))
        t = 3.0 - r1 * hfx
        e = hxs * ((r1 - t) / (6.0 - r * t))
        out0 = r - (r * e - hxs)  # k == 0 (c == 0 there)
        e = (r * (e - c) - c) - hxs
        k = kd.astype(np.int64)
        two_k = _pow2(np.clip(k, -1022, 1023))
        # fdlibm's cases for k != 0, each an exact rearrangement chosen to avoid cancellation.
        km1 = np.where(r < -0.25, -2.0 * (e - (r + 0.5)), 1.0 + 2.0 * (r - e))
        kbig = (1.0 - (e - r)) * _pow2(np.clip(k - 1, -1022, 1023)) * 2.0 - 1.0  # k > 56 or k <= -2
        kmid_lo = (1.0 - _pow2(np.clip(-k, -1022, 1023))) - (e - r)      # 2 <= k < 20
        kmid_hi = ((r - (e + _pow2(np.clip(-k, -1022, 1023)))) + 1.0)   # 20 <= k <= 56
        out = np.where(k <= -2, kbig,
                       np.where(k == -1, 0.5 * (r - e) - 0.5,
                                np.where(k == 1, km1,
                                         np.where(k > 56, kbig,
                                                  np.where(k < 20, kmid_lo * two_k, kmid_hi * two_k)))))
        out = np.where(k == 0, out0, out)
        out = np.where(x > EXP_MAX, np.inf, np.where(x < -40.0, -1.0, out))
        return np.where(np.isnan(x), x, out)


@_blockwise
def pow(x, y):  # noqa: A001 - the name every reader expects
    """x ** y for x >= 0 (exp of y * log x in extended precision; about 1 ulp for |y log x| < 50)."""
    x = _f64(x)
    y = _f64(y)
    with np.errstate(all="ignore"):
        xs = np.where((x > 0) & (x < np.inf), x, 1.0)
        hi, lo = log_ext(xs)
        yc = np.minimum(np.maximum(y, -POW_Y_MAX), POW_Y_MAX)
        p, e = _two_prod(yc, hi)
        e = e + yc * lo
        r = exp(p)
        out = np.where(np.isfinite(r), r + r * e, r)
        # x == 0 and x == inf, then the exact cases y == 0, y == 1 and x == 1, then nan.
        out = np.where(x == 0, np.where(y > 0, 0.0, np.where(y == 0, 1.0, np.inf)), out)
        out = np.where(x == np.inf, np.where(y > 0, np.inf, np.where(y == 0, 1.0, 0.0)), out)
        out = np.where(y == 1, x, out)
        out = np.where((y == 0) | (x == 1), 1.0, out)
        out = np.where(x < 0, np.nan, out)
        return np.where(np.isnan(x) | np.isnan(y), np.nan, out)


@_blockwise
def sincos(x):
    """(sin x, cos x) for |x| <= SINCOS_MAX (fdlibm k_sin/k_cos after a two-term Cody-Waite reduction)."""
    x = _f64(x)
    with np.errstate(all="ignore"):
        n = np.floor(x * INVPIO2 + 0.5)
        r = (x - n * PIO2_1) - n * PIO2_1T  # x - n pi/2 in [-pi/4, pi/4]; the first difference is exact
        z = r * r
        v = z * r
        s = r + v * _horner(z, (S1, S2, S3, S4, S5, S6))
        cr = z * _horner(z, (C1, C2, C3, C4, C5, C6))
        hz = 0.5 * z
        w = 1.0 - hz
        c = w + (((1.0 - w) - hz) + z * cr)
        bad = ~(np.abs(x) <= SINCOS_MAX)
        any_bad = bad.any()
        q = (np.where(bad, 0.0, n) if any_bad else n).astype(np.int64)
        swap = (q & 1) != 0
        sv = np.where(swap, c, s)
        cv = np.where(swap, s, c)
        np.negative(sv, out=sv, where=(q & 2) != 0)
        np.negative(cv, out=cv, where=((q + 1) & 2) != 0)
        if any_bad:
            sv[bad] = np.nan
            cv[bad] = np.nan
        return sv, cv


@_blockwise
def ndtri(p):
    """Inverse standard normal CDF for p in (0, 1) (Acklam's rational approximation, relative error < 1.2e-9)."""
    a, b, c, d = ACKLAM_A, ACKLAM_B, ACKLAM_C, ACKLAM_D
    p = _f64(p)
    with np.errstate(all="ignore"):
        q = np.minimum(p, 1.0 - p)
        t = np.sqrt(-2.0 * log(q))
        tail = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / \
            ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0)
        h = p - 0.5
        r = h * h
        central = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * h / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
        tail = np.where(p < 0.5, tail, -tail)  # the tail formula is the lower tail (negative); mirror it above
        return np.where(q < ACKLAM_LOW, tail, central)
