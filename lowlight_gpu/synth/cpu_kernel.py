"""Compiled CPU twin of the numpy noise path (numba), for ``noise.order: after`` in sRGB.

``numpy_backend.render`` runs Philox, the Poisson table search, Box-Muller, the
compose, the clip and the quantisation as separate numpy passes (~32 ns per
value for poisson-gaussian, one core).  ``render_noisy`` here does them in one
compiled call over the flat image (~8 ns per value; ~3.3 for gaussian, where
no table search runs), repeating the reference's arithmetic:

* value i uses Philox4x32-10 block j = i // 2 with counter
  (j & 0xffffffff, j >> 32, step, STREAM_NOISE) under key split_key(seed);
  words 0/1 are the Poisson words of values 2j / 2j+1 and words 2/3 their
  normals, by ``numpy_backend.box_muller``'s float32 operations in its order;
* the Poisson count comes from the same ``poisson.PoissonTables`` by the same
  guide-table search, and from the same Acklam ``ndtri`` (float64) for the
  normal-approximation codes;
* compose, clip and ``floor(z * 255 + 0.5)`` are float32, as in numpy.

The one deliberate difference is how the three float32 transcendentals of
Box-Muller are evaluated.  numpy uses its own SIMD ``log``/``sin``/``cos``,
which are not correctly rounded (12-22 % of the 2**24 possible inputs land one
ulp off), and libm's scalar calls would cost ~8 ns per value.  The kernel
instead evaluates them in float64 (fdlibm's polynomials, vectorised by LLVM)
and rounds once to float32, which is correctly rounded on every one of the
2**24 inputs each of them can receive (checked exhaustively).  A normal that
differs from numpy's by one float32 ulp moves the output code only when z*255
sits within ~1e-7 of a rounding boundary, so outputs agree exactly in practice;
tests/test_cpu_kernel.py bounds the mismatch.

The loops are in chunks of CHUNK_BLOCKS Philox blocks: a vectorised Philox pass
(~0.9 ns per value), a vectorised Box-Muller pass (~1.7), the per-value table
search (~4.5: two random reads into tables that live in L2) and the compose and
quantisation (~0.8).  No fastmath (it would allow contraction and reassociation);
error_model="numpy" only drops the zero-division checks that block
vectorisation.  The kernel holds no Python objects and releases the GIL.

Set ``LOWLIGHT_NO_NUMBA=1`` (read once, at import) to force the numpy path.
"""

import os
import sys
import threading

import numpy as np

from .. import rng
from . import poisson

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
    return numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", **options)


# Model codes passed to the kernel.
MODEL_GAUSSIAN = 0
MODEL_POISSON = 1
MODEL_POISSON_GAUSSIAN = 2  # also brooks: shot noise plus Gaussian read noise
_MODELS = {"gaussian": MODEL_GAUSSIAN, "poisson": MODEL_POISSON,
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
_INV_2_23 = np.float32(1.0 / (1 << 23))
_INV_2_24 = np.float32(1.0 / (1 << 24))
_TWO_PI = np.float32(2.0 * np.pi)
_HALF32 = np.float32(0.5)
_MINUS_TWO32 = np.float32(-2.0)
_ZERO32 = np.float32(0.0)
_ONE32 = np.float32(1.0)
_C255 = np.float32(255.0)
_TWO32 = 4294967296.0

# fdlibm (e_log.c, k_sin.c, k_cos.c, e_rem_pio2.c) constants, float64.
_SQRT2 = 1.4142135623730951
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1, _LG2, _LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_LG4, _LG5 = 2.222219843214978396e-01, 1.818357216161805012e-01
_LG6, _LG7 = 1.531383769920937332e-01, 1.479819860511658591e-01
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
_INVPIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e+00   # first 33 bits of pi/2
_PIO2_1T = 6.07710050650619224932e-11  # pi/2 - _PIO2_1

# Acklam's inverse normal CDF (poisson.ndtri).
_NA, _NB, _NC, _ND = poisson.ACKLAM_A, poisson.ACKLAM_B, poisson.ACKLAM_C, poisson.ACKLAM_D


@_jit(inline="always")
def log_f64(x):
    """Natural log of a positive normal float64 (fdlibm's e_log.c without its special cases), < 1 ulp."""
    bits = np.float64(x).view(np.int64)
    k = ((bits >> 52) & 0x7FF) - 1023
    m = np.int64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)  # in [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m  # now in (sqrt(2)/2, sqrt(2)]
    k = k + 1 if big else k
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
def sincos_f64(x):
    """(sin x, cos x) for float64 x in [0, 8) (fdlibm's k_sin.c/k_cos.c after a Cody-Waite reduction)."""
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
def ndtri_f64(p):
    """poisson.ndtri for one float64 p in (0, 1), the same operations in the same order."""
    q = min(p, 1.0 - p)
    if q < 0.02425:
        t = np.sqrt(-2.0 * np.log(q))
        tail = (((((_NC[0] * t + _NC[1]) * t + _NC[2]) * t + _NC[3]) * t + _NC[4]) * t + _NC[5]) / \
            ((((_ND[0] * t + _ND[1]) * t + _ND[2]) * t + _ND[3]) * t + 1.0)
        return tail if p < 0.5 else -tail  # the formula gives the lower tail (negative); mirror it above
    d = p - 0.5
    r = d * d
    return (((((_NA[0] * r + _NA[1]) * r + _NA[2]) * r + _NA[3]) * r + _NA[4]) * r + _NA[5]) * d / \
        (((((_NB[0] * r + _NB[1]) * r + _NB[2]) * r + _NB[3]) * r + _NB[4]) * r + 1.0)


@_jit()
def philox_chunk(first_block, count, key0, key1, c2, c3, wp, w2, w3):
    """Philox4x32-10 of blocks [first_block, first_block + count): words 0/1 interleaved into wp
    (wp[2b], wp[2b+1] are the Poisson words of the block's two values), words 2/3 into w2/w3."""
    for b in range(count):
        j = np.uint64(first_block + b)
        x0 = j & _MASK32
        x1 = j >> _U32
        x2 = c2
        x3 = c3
        ka = key0
        kb = key1
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
        log_u1 = np.float32(log_f64(np.float64(u1)))
        radius = np.float32(np.sqrt(np.float32(_MINUS_TWO32 * log_u1)))
        s, c = sincos_f64(np.float64(theta))
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


@_jit()
def compose_chunk(codes, first_value, count, k, g, signal32, model, inv_peak, sigma, out):
    """numpy_backend.add_noise's compose and clip, then quantize, all float32, into out."""
    for i in range(count):
        if model == MODEL_GAUSSIAN:
            z = np.float32(signal32[np.int64(codes[first_value + i])] + np.float32(sigma * g[i]))
        elif model == MODEL_POISSON:
            z = np.float32(np.float32(k[i]) * inv_peak)
        else:
            z = np.float32(np.float32(np.float32(k[i]) * inv_peak) + np.float32(sigma * g[i]))
        z = min(max(z, _ZERO32), _ONE32)  # np.clip
        out[first_value + i] = np.uint8(np.floor(np.float32(np.float32(z * _C255) + _HALF32)))  # quantize


@_jit()
def render_noisy_kernel(codes, out, signal32, guide, thresholds, kshift, normal, lam, any_normal,
                        model, inv_peak, sigma, key0, key1, step, stream):
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
        compose_chunk(codes, 2 * first, values, k, g, signal32, model, inv_peak, sigma, out)
    return out


_compile_lock = threading.Lock()
_compiled = False


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


def _call(codes, signal, guide, thresholds, kshift, normal, lam, model, inv_peak, sigma, k0, k1, step):
    """Run the kernel with every argument at its one compiled type; returns the new uint8 output."""
    codes = _readonly(codes, np.uint8).reshape(-1)
    out = np.empty(codes.size, np.uint8)
    render_noisy_kernel(codes, out, _readonly(np.asarray(signal, np.float64), np.float32), guide, thresholds,
                        kshift, normal, lam, bool(normal.any()), np.int64(model), np.float32(inv_peak),
                        np.float32(sigma), np.uint64(k0), np.uint64(k1), np.uint64(step),
                        np.uint64(rng.STREAM_NOISE))
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
            try:
                _call(np.zeros(3, np.uint8), np.zeros(256), _NO_GUIDE, _NO_THRESHOLDS, _NO_KSHIFT, _NO_NORMAL,
                      _NO_LAM, MODEL_GAUSSIAN, 1.0, 0.0, 0, 0, 0)
                _compiled = True
            except Exception as exc:  # noqa: BLE001 - a numba that cannot compile here must not fail pairs
                AVAILABLE = False
                print(f"lowlight_gpu: numba could not compile the CPU noise kernel ({type(exc).__name__}: "
                      f"{exc}); using the pure-numpy path (same images, slower)", file=sys.stderr)
    return AVAILABLE


def render_noisy(flat_codes, signal, tables, noise, seed, step):
    """Noisy flat uint8 codes: numpy_backend's noisy path for ``order: after`` in sRGB, in one compiled pass.

    ``flat_codes`` are the input codes (uint8, any shape, read as flat), ``signal`` the
    256-entry clean signal (float64), ``tables`` the PoissonTables (None for the gaussian
    model), ``noise`` the params' noise dict, ``seed`` the pair seed and ``step`` the
    counter's step word.  Releases the GIL while it runs.
    """
    if not AVAILABLE:
        raise RuntimeError("lowlight_gpu.synth.cpu_kernel: numba is not available (or LOWLIGHT_NO_NUMBA is set)")
    model = _MODELS.get(noise["model"])
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
                 k0, k1, int(step) & rng.MASK32)
