"""Exact Poisson sampling by table inversion, shared by every backend.

An 8-bit image has at most 256 distinct clean values per channel, so the
Poisson rate lambda = peak * signal takes at most 256 values per image.  For
each we tabulate the CDF as 32-bit thresholds T_k = round(CDF(k) * 2**32); a
uniform 32-bit word u then gives the count k = lo + #{j : T_j <= u}.  This is
inversion sampling, so each value uses exactly one random word (no rejection
loop, no data-dependent draw order) and P(k) is exact to 2**-32.  A guide table
over the top 8 bits of u makes the search O(1) on average.  The CPU builds the
tables; the GPU kernel receives the same arrays, so both return the same k.

Above LAMBDA_EXACT_MAX the rate is large enough that the normal approximation
round(lambda + sqrt(lambda) * Phi^-1(u)) is used.  Its quantile error is about
(z^2 - 1) / 6 + 1 counts, largest at the last 32-bit word (|z| = 6.36): at the
threshold lambda = 1e4 (so peak >= 1e4) the measured worst case over all words
is 8 counts = 8e-4 in [0, 1] units, 0.21 of one 8-bit step, and at most 2
counts for |z| < 3.  tests/test_noise.py measures this at the threshold.
"""

from dataclasses import dataclass

import numpy as np

from . import detmath, native

LAMBDA_EXACT_MAX = 1e4
GUIDE_BITS = 8
GUIDE_BUCKETS = 1 << GUIDE_BITS
TWO32 = 4294967296.0
_GRID = 16777216.0  # 2**24: log(k) split into a multiple of 2**-24 (summed exactly) and a small remainder

_logfact = np.zeros(1)


def log_factorials(n):
    """log(k!) for k = 0..n-1, deterministic to the bit (cached, grown on demand)."""
    global _logfact
    if _logfact.size < n:
        size = max(n, 2 * _logfact.size)
        logs = detmath.log(np.arange(1, size, dtype=np.float64))
        # Sum in two parts: the multiples of 2**-24 add exactly in any order; only the remainders
        # (< 2**-25 each) round, and numpy's cumsum adds them strictly in sequence.
        coarse = np.floor(logs * _GRID + 0.5) / _GRID
        _logfact = np.concatenate(([0.0], np.cumsum(coarse) + np.cumsum(logs - coarse)))
    return _logfact[:n]


@dataclass(frozen=True)
class PoissonTables:
    """Inversion tables for 256 rates: flat thresholds, a guide index, and the normal-approximation rates."""

    lam: np.ndarray         # float64 (256,): the rate of each code
    thresholds: np.ndarray  # uint32 (M,): per code, the CDF thresholds strictly inside (0, 2**32)
    guide: np.ndarray       # int32 (256 * 257,): guide[c*257 + b] = first threshold index of code c >= b << 24
    kshift: np.ndarray      # int32 (256,): k = (threshold index reached) + kshift[c]
    normal: np.ndarray      # bool (256,): codes sampled by the normal approximation


def table_bounds(lam):
    """(normal, lo, hi, log_lam) per code: each exact code tabulates counts [lo, hi); others have lo == hi == 0."""
    lam = np.asarray(lam, dtype=np.float64)
    normal = lam > LAMBDA_EXACT_MAX
    exact = (lam > 0) & ~normal
    sd = np.sqrt(lam)
    # Mass outside [lo, hi) is far below 2**-32, the resolution of one uniform word.
    lo = np.where(exact, np.floor(np.maximum(lam - 7.5 * sd - 5.0, 0.0)), 0).astype(np.int64)
    hi = np.where(exact, np.ceil(lam + 8.5 * sd + 20.0), 0).astype(np.int64)
    return normal, lo, hi, detmath.log(np.where(exact, lam, 1.0))  # log once per code, not per table entry


def build_tables(lam):
    """Inversion tables for the Poisson rates lam (256 float64 values >= 0).

    The compiled twin (cpu_kernel.build_tables) builds the same arrays about ten times faster where
    numba runs; build_tables_reference is the specification.
    """
    lam = np.asarray(lam, dtype=np.float64)
    normal, lo, hi, log_lam = table_bounds(lam)
    logfact = native.log_factorials(int(hi.max(initial=0)) + 1)
    thresholds, guide, kshift = native.build_tables(lam, log_lam, lo, hi, logfact)
    return PoissonTables(lam, thresholds, guide, kshift, normal)


def build_tables_reference(lam):
    """build_tables in numpy: the specification of the tables."""
    lam = np.asarray(lam, dtype=np.float64)
    normal, lo, hi, log_lam = table_bounds(lam)
    length = hi - lo
    code = np.repeat(np.arange(256), length)
    start = np.concatenate(([0], np.cumsum(length)))
    k = lo[code] + (np.arange(start[-1]) - start[code])
    logfact = log_factorials(int(hi.max(initial=0)) + 1)
    pmf = detmath.exp(k * log_lam[code] - lam[code] - logfact[k])
    # One running sum over every code's entries, in order (cumsum adds strictly in sequence); each code's CDF
    # is the sum since its start.
    csum = np.cumsum(pmf)
    base = np.concatenate(([0.0], csum))[start[:-1]]
    cdf = csum - base[code]
    thr = np.minimum(np.floor(cdf * TWO32 + 0.5), TWO32)
    # Thresholds at 0 are always passed and those at 2**32 never: fold them away.
    zeros = np.bincount(code[thr == 0], minlength=256)
    keep = (thr > 0) & (thr < TWO32)
    thresholds = thr[keep].astype(np.uint32)
    counts = np.bincount(code[keep], minlength=256)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    kshift = (lo + zeros - offsets[:-1]).astype(np.int32)
    # Guide: for each code and each bucket of the top 8 bits, the first threshold at or above the bucket
    # start = the code's offset + how many of its thresholds lie in lower buckets (a per-row cumsum).
    kept_code = code[keep]
    per_bucket = np.bincount(kept_code * (GUIDE_BUCKETS + 1) + (thresholds >> (32 - GUIDE_BITS)) + 1,
                             minlength=256 * (GUIDE_BUCKETS + 1)).reshape(256, GUIDE_BUCKETS + 1)
    guide = (np.cumsum(per_bucket, axis=1) + offsets[:-1, None]).astype(np.int32).ravel()
    return PoissonTables(lam, thresholds, guide, kshift, normal)


def sample(tables, codes, words):
    """Poisson counts (int64) for codes (uint8) from one uint32 word each, by table inversion."""
    codes = codes.astype(np.intp)
    words = words.astype(np.uint32, copy=False)
    gidx = codes * (GUIDE_BUCKETS + 1) + (words >> (32 - GUIDE_BITS))
    pos = tables.guide[gidx].astype(np.intp)
    end = tables.guide[gidx + 1]
    # Only words whose bucket holds thresholds need a search; most need at most one step.
    live = np.flatnonzero(pos < end)
    while live.size:
        step = tables.thresholds[pos[live]] <= words[live]
        live = live[step]
        pos[live] += 1
        live = live[pos[live] < end[live]]
    k = pos + tables.kshift[codes]
    if tables.normal.any():
        big = np.flatnonzero(tables.normal[codes])
        if big.size:
            lam = tables.lam[codes[big]]
            z = detmath.ndtri((words[big] + 0.5) / TWO32)
            k[big] = np.maximum(np.floor(lam + np.sqrt(lam) * z + 0.5), 0)
    return k
