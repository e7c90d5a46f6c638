"""Compiled CPU twin of the physics noise model (numba): ``physics.render`` and ``render_raw``, the same bytes.

Every site and pixel repeats the numpy reference's float64 operations in the
same order, with the numba twins of ``detmath`` in ``cpu_kernel.py`` (no
fastmath, error_model="numpy"); tests/test_physics_numba.py compares the two
byte for byte.  ``physics.cuh`` is the same computation for the GPU.

Where the time goes, and what is done about it (768x512 photo, one core):

* the exact Poisson inversion is a chain of divisions per site (about
  7 sqrt(lam) + 5 pmf terms to CDF(m), then the walk from the mode); one site's
  chain waits on each division, so a row's sites run side by side instead:
  sorted by their number of terms (``sum_to_mode``) and gathered while they
  walk (``walk``), plain loops that compile to vector divisions;
* Tukey-lambda read noise is a row loop over ``pow_unit`` (``detmath.pow``
  without the special cases that cannot occur for a uniform in (0, 1)), which
  vectorises too;
* the 8-bit code of a processed value is a 4096-bucket guide table plus at most
  one comparison, not a binary search over 255 thresholds.

The image is rendered row by row: a ring of three mosaic rows (the row and its
mirrored neighbours) holds the white-balanced raw values, so memory stays at a
few rows whatever the image size.  The kernels hold no Python objects and
release the GIL.  ``LOWLIGHT_NO_NUMBA=1`` or a missing numba leaves the numpy
reference in charge (``cpu_kernel.AVAILABLE``).
"""

import sys
import threading
import time

import numpy as np

from .. import numba_cache, rng
from . import cpu_kernel as ck
from . import physics

_jit = ck._jit
_LAMBDA_SMALL = physics.LAMBDA_SMALL
_LAMBDA_EXACT_MAX = physics.LAMBDA_EXACT_MAX
_SMALL_CAP = physics.SMALL_CAP
_TWO_PI = physics.TWO_PI
_INV_2_32 = physics.INV_2_32
_CHANNEL = (0, 1, 1, 2)  # physics.CELL_CHANNEL

# noise.components as bits (physics.cuh's LL_PHYS_*)
SHOT, TUKEY, GAUSS, ROW, QUANT, BIAS = 1, 2, 4, 8, 16, 32
FLAGS = {"p": SHOT, "t": TUKEY, "g": GAUSS, "r": ROW, "q": QUANT, "c": BIAS}
# Indices into the float64 scalar array of a pair.
S_K, S_READ, S_LAMBDA, S_ROW, S_BLACK, S_WHITE, S_SCALE = range(7)
WALK_STEPS = 4  # Poisson walk steps between two compactions of the walking sites
WORK_ROWS = 15  # scratch rows of mosaic_row
POW_UNIT_MAX_Y = 30.0  # pow_unit's bound on |lambda| (|lambda log u| < 700 for every uniform u)
GUIDE_BUCKETS = 4096  # buckets of the code lookup over [0, 1] (at most one threshold in each)


@_jit(inline="always")
def uniform(w):
    """physics.uniform for one word."""
    return (np.float64(w) + 0.5) * _INV_2_32


@_jit(inline="always")
def stirling_tail(m):
    """physics.stirling_tail."""
    im = 1.0 / m
    im2 = im * im
    return im * (1.0 / 12.0 - im2 * (1.0 / 360.0 - im2 * (1.0 / 1260.0)))


# One compiled copy each of the detmath twins that run once per site or row (inlined, each copy costs compile time).
@_jit()
def ndtri(p):
    """detmath.ndtri for one float64."""
    return ck.ndtri_f64(p)


@_jit()
def log(x):
    """detmath.log for one float64."""
    return ck.log_f64(x)


@_jit()
def exp(x):
    """detmath.exp for one float64."""
    return ck.exp_f64(x)


@_jit()
def pow_any(x, y):
    """detmath.pow for one float64 x >= 0 and y."""
    return ck.pow_f64(x, y)


@_jit()
def poisson_start(lam, u, k, p, f, cap, lo):
    """Each site's inversion state before the walks (see poisson_row); a site with no walk gets f = p = 2."""
    for c in range(lam.size):
        x = lam[c]
        if x > 0 and x < _LAMBDA_SMALL:  # sum up from k = 0 (the up walk from k = 0, capped at SMALL_CAP)
            k[c] = 0.0
            p[c] = f[c] = exp(-x)
            cap[c] = _SMALL_CAP
            lo[c] = 0.0
        elif x >= _LAMBDA_SMALL and x <= _LAMBDA_EXACT_MAX:  # from the mode m: pmf by Stirling's series
            m = np.floor(x)
            log_pm = (m * log(x / m) + (m - x)) - 0.5 * log(_TWO_PI * m) - stirling_tail(m)
            k[c] = m
            p[c] = f[c] = exp(log_pm)
            sq = np.sqrt(x)
            lo[c] = max(m - np.floor(7.0 * sq) - 5.0, 0.0)
            cap[c] = m + np.floor(10.0 * sq) + 20.0
        else:  # no walk: 0 counts, or the normal approximation above LAMBDA_EXACT_MAX
            k[c] = max(np.floor(x + np.sqrt(x) * ndtri(u[c]) + 0.5), 0.0) if x > _LAMBDA_EXACT_MAX else 0.0
            p[c] = f[c] = 2.0  # f - p = 0 < u and f > u: neither walk moves
            cap[c] = 0.0
            lo[c] = k[c]


@_jit()
def sum_to_mode(lam, k, p, f, lo, w):
    """CDF(m) of the mode sites: f += the pmf from m down to lo (p_{k-1} = p_k * k / lam), as the reference.

    The sites are gathered and sorted by their number of terms, longest first, so that
    the sites still summing at each step are a prefix: a plain loop the compiler turns
    into vector divisions (one site's sum is a chain of divisions, each waiting on the last).
    """
    n = lam.size
    terms = np.empty(n, np.int64)
    count = 0
    for c in range(n):
        if lam[c] >= _LAMBDA_SMALL and lam[c] <= _LAMBDA_EXACT_MAX:
            terms[count] = np.int64(k[c] - lo[c])
            w[0, count] = c
            count += 1
    if count == 0:
        return
    order = np.argsort(-terms[:count])
    idx, ps, ks, ls, fs = w[1], w[2], w[3], w[4], w[5]
    nt = np.empty(count, np.int64)
    for j in range(count):
        c = np.int64(w[0, order[j]])
        idx[j] = c
        nt[j] = terms[order[j]]
        ps[j] = p[c]
        ks[j] = k[c]
        ls[j] = lam[c]
        fs[j] = f[c]
    live = count
    for j in range(nt[0]):
        while nt[live - 1] <= j:
            live -= 1
        for c in range(live):
            ps[c] = ps[c] * ks[c] / ls[c]
            ks[c] = ks[c] - 1.0
            fs[c] = fs[c] + ps[c]
    for j in range(count):
        f[np.int64(idx[j])] = fs[j]


@_jit()
def walk(lam, u, k, p, f, cap, down, w):
    """The walk of the sites whose walk goes down (down=True: while CDF(k - 1) = F - p_k > u, step to k - 1)
    or up (while F <= u and k < cap, step to k + 1), as the reference; the final counts go to k.

    Sites run side by side over gathered arrays (vector divisions again); every few
    steps the sites that stopped are dropped and their counts written back.
    """
    idx, ks, ps, fs, ls, us, cs = w[0], w[1], w[2], w[3], w[4], w[5], w[6]
    n = 0
    for c in range(lam.size):
        if (lam[c] > 0 and lam[c] <= _LAMBDA_EXACT_MAX) and ((u[c] < f[c]) == down):
            idx[n] = c
            ks[n] = k[c]
            ps[n] = p[c]
            fs[n] = f[c]
            ls[n] = lam[c]
            us[n] = u[c]
            cs[n] = cap[c]
            n += 1
    while n > 0:
        for _ in range(WALK_STEPS):
            if down:
                for c in range(n):
                    go = (ks[c] > 0.0) & ((fs[c] - ps[c]) > us[c])
                    fp = fs[c] - ps[c]
                    pd = ps[c] * ks[c] / ls[c]
                    fs[c] = fp if go else fs[c]
                    ps[c] = pd if go else ps[c]
                    ks[c] = ks[c] - 1.0 if go else ks[c]
            else:
                for c in range(n):
                    go = (fs[c] <= us[c]) & (ks[c] < cs[c])
                    k1 = ks[c] + 1.0
                    pu = ps[c] * ls[c] / k1
                    fs[c] = fs[c] + pu if go else fs[c]
                    ps[c] = pu if go else ps[c]
                    ks[c] = k1 if go else ks[c]
        kept = 0
        for c in range(n):
            if down:
                go = (ks[c] > 0.0) & ((fs[c] - ps[c]) > us[c])
            else:
                go = (fs[c] <= us[c]) & (ks[c] < cs[c])
            if go:
                idx[kept], ks[kept], ps[kept], fs[kept] = idx[c], ks[c], ps[c], fs[c]
                ls[kept], us[kept], cs[kept] = ls[c], us[c], cs[c]
                kept += 1
            else:
                k[np.int64(idx[c])] = ks[c]
        n = kept


@_jit()
def poisson_row(lam, u, k, p, f, cap, lo, w):
    """physics.poisson_counts of a row of sites into k (float64 counts); w: scratch rows of lam's length.

    Every site repeats the reference's float64 operations in its order; only the order
    in which sites are visited differs, which no result depends on.
    """
    poisson_start(lam, u, k, p, f, cap, lo)
    sum_to_mode(lam, k, p, f, lo, w)
    walk(lam, u, k, p, f, cap, True, w)
    walk(lam, u, k, p, f, cap, False, w)


@_jit()
def sensor(x, shot_count, read_dn, row_z, cell, flags, s, bias):
    """physics.add_sensor_noise for one site after its Poisson count and read noise: sensor DN in [-black, white - black]."""
    if flags & SHOT:
        x = shot_count * s[S_K]
    if flags & (TUKEY | GAUSS):
        x = x + read_dn
    if flags & ROW:
        x = x + s[S_ROW] * row_z
    if flags & BIAS:
        x = x + bias[cell]
    if flags & QUANT:
        x = np.floor(x + 0.5)
    return min(max(x, -s[S_BLACK]), s[S_SCALE])


@_jit()
def row_normal(r, c2, c3, k0, k1):
    """physics.row_normals for one sensor row."""
    w0, _, _, _ = ck.philox_block(np.uint64(r), c2, c3, k0, k1)
    return ndtri(uniform(w0))


@_jit()
def mosaic_row(rgb, r, lut, flags, s, bias, key, rgb2cam, gains, noisy, xs, ss, work):
    """Clean DN (xs) and sensor DN (ss) of the mosaic's sensor row r (physics.mosaic_rows for one row).

    key = (k0, k1, step, site stream, row stream) as uint64; without noise ss is left alone.
    work: WORK_ROWS scratch rows of width w (poisson_row's arrays).
    """
    w = rgb.shape[1]
    for c in range(w):
        ch = _CHANNEL[(r & 1) * 2 + (c & 1)]
        cam = (rgb2cam[ch, 0] * lut[rgb[r, c, 0]] + rgb2cam[ch, 1] * lut[rgb[r, c, 1]]) + \
            rgb2cam[ch, 2] * lut[rgb[r, c, 2]]
        xs[c] = min(max(cam / gains[ch], 0.0), 1.0) * s[S_SCALE]
    if not noisy:
        return
    k0, k1, c2, c_sites, c_rows = key[0], key[1], key[2], key[3], key[4]
    lam, u, read = work[0], work[1], work[2]
    w0 = w1 = w2 = w3 = np.uint64(0)
    for c in range(w):
        i = np.uint64(r * w + c)
        if c == 0 or (i & np.uint64(1)) == 0:  # a new Philox block: words 0/1 even site, 2/3 odd site
            w0, w1, w2, w3 = ck.philox_block(i >> np.uint64(1), c2, c_sites, k0, k1)
        odd = (i & np.uint64(1)) != 0
        u[c] = uniform(w2 if odd else w0)
        read[c] = uniform(w3 if odd else w1)
        lam[c] = xs[c] / s[S_K]
    counts = work[3]
    if flags & SHOT:
        poisson_row(lam, u, counts, work[4], work[5], work[6], work[7], work[8:])
    read_row(read, flags, s, w)
    row_z = row_normal(r, c2, c_rows, k0, k1) if flags & ROW else 0.0
    for c in range(w):
        ss[c] = sensor(xs[c], counts[c], read[c], row_z, (r & 1) * 2 + (c & 1), flags, s, bias)


@_jit(inline="always")
def pow_unit(x, y):
    """detmath.pow(x, y) for x in [2**-33, 1) and 0 < |y| <= POW_UNIT_MAX_Y, y != 1, without its special cases.

    There |y log x| <= 23 |y| < EXP_MAX: pow_f64's early returns, its clamp of y and
    exp's range checks never fire, and the straight line left can be vectorised.
    """
    hi, lo = ck.log_ext_f64(x)
    p, e = ck.two_prod_f64(y, hi)
    e = e + y * lo
    r = ck.exp_core(p)
    return r + r * e


@_jit()
def read_row(read, flags, s, w):
    """The read noise in DN of a row from its read uniforms, in place: read_scale * Tukey-lambda or normal quantile.

    A loop of its own (no branch on the component per site), so the compiler can vectorise pow and log.
    """
    scale, lam = s[S_READ], s[S_LAMBDA]
    if flags & TUKEY:
        if lam == 0:
            for c in range(w):
                read[c] = scale * (log(read[c]) - log(1.0 - read[c]))
        elif abs(lam) <= POW_UNIT_MAX_Y and lam != 1:
            for c in range(w):
                read[c] = scale * ((pow_unit(read[c], lam) - pow_unit(1.0 - read[c], lam)) / lam)
        else:
            for c in range(w):
                read[c] = scale * ((pow_any(read[c], lam) - pow_any(1.0 - read[c], lam)) / lam)
    elif flags & GAUSS:
        for c in range(w):
            read[c] = scale * ck.ndtri_f64(read[c])


@_jit(inline="always")
def mirror(i, n):
    """physics.mirror for one index."""
    if i < 0:
        i = -i
    if i > n - 1:
        i = 2 * (n - 1) - i
    return 0 if i < 0 else (n - 1 if i > n - 1 else i)


@_jit(inline="always")
def code_of(t, guide, v):
    """numpy.searchsorted(t, v, side="right") for v in [0, 1]: the guide's count below v's bucket, then the walk.

    v * GUIDE_BUCKETS is exact (a power of two), so the bucket's lower edge b / GUIDE_BUCKETS is <= v
    and every threshold below it is <= v; the walk counts the bucket's own (at most one for physics).
    """
    pos = guide[np.int64(v * GUIDE_BUCKETS)]
    while pos < t.size and t[pos] <= v:
        pos += 1
    return pos


@_jit()
def gained_row(rgb, r, lut, flags, s, bias, key, rgb2cam, gains, noisy, xs, ss, work, dst):
    """physics.gained of sensor row r into dst: white-balanced raw in [0, 1]."""
    mosaic_row(rgb, r, lut, flags, s, bias, key, rgb2cam, gains, noisy, xs, ss, work)
    src = ss if noisy else xs
    for c in range(rgb.shape[1]):
        ch = _CHANNEL[(r & 1) * 2 + (c & 1)]
        dst[c] = min(max((src[c] / s[S_SCALE]) * gains[ch], 0.0), 1.0)


@_jit()
def scratch(w):
    """mosaic_row's work rows for a w-wide image."""
    return np.zeros((WORK_ROWS, w), np.float64)


@_jit()
def render_kernel(rgb, lut, thresholds, guide, cam2rgb, flags, s, bias, key, rgb2cam, gains, noisy, out):
    """physics.render into out (H, W, 3) uint8: a ring of three gained mosaic rows, demosaic, cam2rgb, codes."""
    h, w = rgb.shape[0], rgb.shape[1]
    ring = np.empty((3, w), np.float64)
    held = np.full(3, -1, np.int64)  # the sensor row in each ring slot
    xs = np.empty(w, np.float64)
    ss = np.empty(w, np.float64)
    work = scratch(w)
    for r in range(h):
        ru, rd = mirror(r - 1, h), mirror(r + 1, h)
        for rr in (ru, r, rd):
            if held[rr % 3] != rr:
                gained_row(rgb, rr, lut, flags, s, bias, key, rgb2cam, gains, noisy, xs, ss, work, ring[rr % 3])
                held[rr % 3] = rr
        mu, mc, md = ring[ru % 3], ring[r % 3], ring[rd % 3]
        re = (r & 1) == 0
        for c in range(w):
            cl, cr = mirror(c - 1, w), mirror(c + 1, w)
            ctr = mc[c]
            up, down, left, right = mu[c], md[c], mc[cl], mc[cr]
            cross = ((up + down) + (left + right)) * 0.25
            diag = ((mu[cl] + mu[cr]) + (md[cl] + md[cr])) * 0.25
            vert = (up + down) * 0.5
            horiz = (left + right) * 0.5
            ce = (c & 1) == 0
            red = ctr if (re and ce) else (horiz if re else (vert if ce else diag))
            green = cross if re == ce else ctr
            blue = ctr if (not re and not ce) else (horiz if not re else (vert if not ce else diag))
            for j in range(3):
                v = (cam2rgb[j, 0] * red + cam2rgb[j, 1] * green) + cam2rgb[j, 2] * blue
                out[r, c, j] = code_of(thresholds, guide, min(max(v, 0.0), 1.0))
    return out


@_jit(inline="always")
def to_dn(x, s):
    """physics.to_dn for one value."""
    v = np.floor(x + (s[S_BLACK] + 0.5))
    return np.uint16(min(max(v, 0.0), s[S_WHITE]))


@_jit()
def raw_kernel(rgb, lut, flags, s, bias, key, rgb2cam, gains, noisy, clean, low):
    """physics.render_raw into the even-cropped uint16 mosaics clean and low (noisy: True; False leaves low alone)."""
    w = rgb.shape[1]
    xs = np.empty(w, np.float64)
    ss = np.empty(w, np.float64)
    work = scratch(w)
    for r in range(clean.shape[0]):
        mosaic_row(rgb, r, lut, flags, s, bias, key, rgb2cam, gains, noisy, xs, ss, work)
        for c in range(clean.shape[1]):
            clean[r, c] = to_dn(xs[c], s)
            if noisy:
                low[r, c] = to_dn(ss[c], s)


# ---------------------------------------------------------------- the Python side

def _f64(a, shape=None):
    """A read-only C-contiguous float64 array (one compiled type for every call)."""
    a = np.asarray(a, dtype=np.float64)
    return ck._readonly(a if shape is None else a.reshape(shape), np.float64)


def component_flags(components):
    """noise.components as the kernel's bit flags."""
    flags = 0
    for letter in components:
        flags |= FLAGS.get(letter, 0)
    return flags


def pack(noise, seed, step):
    """The kernels' per-pair arguments: (flags, scalars, bias, key, rgb2cam, gains)."""
    comps = noise["components"]
    scalars = [noise["K"] if "p" in comps else 1.0, noise.get("read_scale") or 0.0,
               noise.get("read_lambda") or 0.0, noise.get("row_sigma") or 0.0,
               float(noise["black_level"]), float(noise["white_level"]), physics.full_scale(noise)]
    bias = noise["bias"] if "c" in comps else [0.0] * 4
    k0, k1 = rng.split_key(seed)
    key = np.array([k0, k1, step & rng.MASK32, physics.STREAM_SITES, physics.STREAM_ROWS], np.uint64)
    return (np.int64(component_flags(comps)), _f64(scalars), _f64(bias), ck._readonly(key, np.uint64),
            _f64(noise["ccm"], (3, 3)), _f64(physics.channel_gains(noise)))


_GUIDE = []


def code_guide():
    """(thresholds, guide): guide[b] = how many thresholds lie below b / GUIDE_BUCKETS (cached, as thresholds)."""
    if not _GUIDE:
        t = _f64(physics.thresholds())
        edges = np.arange(GUIDE_BUCKETS + 1, dtype=np.float64) / GUIDE_BUCKETS
        _GUIDE.append((t, ck._readonly(np.searchsorted(t, edges, side="left"), np.int64)))
    return _GUIDE[0]


def render(rgb, params, t=None, noisy=True):
    """physics.render compiled: the same (H, W, 3) uint8 image."""
    rgb = ck._readonly(rgb, np.uint8)
    out = np.empty(rgb.shape, np.uint8)
    if out.size == 0:
        return out
    noise = params["noise"]
    args = pack(noise, params["seed"], physics._noise_step(params, t))
    render_kernel(rgb, _f64(physics.code_lut(params, t)), *code_guide(),
                  _f64(physics.invert3(noise["ccm"]), (3, 3)), *args, bool(noisy), out)
    return out


def render_raw(rgb, params, t=None):
    """physics.render_raw compiled: the same (raw_clean, raw_low) uint16 mosaics."""
    rgb = ck._readonly(rgb, np.uint8)
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    clean = np.empty((h, w), np.uint16)
    low = np.empty((h, w), np.uint16)
    if h == 0 or w == 0:
        return clean, low
    args = pack(params["noise"], params["seed"], physics._noise_step(params, t))
    raw_kernel(rgb, _f64(physics.code_lut(params, t)), *args, True, clean, low)
    return clean, low


_compile_lock = threading.Lock()
_state = {"compiled": False, "failed": False}
LOAD = {"seconds": 0.0, "compiled": False}  # as cpu_kernel.LOAD


def warmup():
    """Compile (or load from numba's cache) both kernels once, thread-safely; True when they can run."""
    if _state["compiled"]:
        return True
    if _state["failed"] or not ck.AVAILABLE:
        return False
    with _compile_lock:
        if not _state["compiled"] and not _state["failed"]:
            t0 = time.perf_counter()
            try:
                rgb = ck._readonly(np.zeros((2, 2, 3)), np.uint8)
                noise = {"components": "ptrqc", "K": 1.0, "read_scale": 1.0, "read_lambda": 0.1, "row_sigma": 1.0,
                         "bias": [0.0] * 4, "black_level": 0, "white_level": 1023, "ccm": np.eye(3).tolist(),
                         "rgb_gain": 1.0, "red_gain": 1.0, "blue_gain": 1.0}
                args = pack(noise, 0, 0)
                lut = _f64(np.zeros(256))
                render_kernel(rgb, lut, *code_guide(), args[4], *args, True,
                              np.empty((2, 2, 3), np.uint8))
                raw_kernel(rgb, lut, *args, True, np.empty((2, 2), np.uint16), np.empty((2, 2), np.uint16))
                _state["compiled"] = True
                LOAD.update(seconds=time.perf_counter() - t0, compiled=numba_cache.compiled(render_kernel, raw_kernel))
            except Exception as exc:  # noqa: BLE001 - a numba that cannot compile here must not fail pairs
                _state["failed"] = True
                print(f"lowlight_gpu: numba could not compile the physics kernel ({type(exc).__name__}: {exc}); "
                      "using the numpy reference (same images, slower)", file=sys.stderr)
    return _state["compiled"]
