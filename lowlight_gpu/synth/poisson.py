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

    One running sum over every code's pmf in order, each code's CDF taken since its start, in the
    model's C library (native.cpp's ll_build_tables).
    """
    lam = np.asarray(lam, dtype=np.float64)
    normal, lo, hi, log_lam = table_bounds(lam)
    logfact = native.log_factorials(int(hi.max(initial=0)) + 1)  # log(k!) summed in one fixed order
    thresholds, guide, kshift = native.build_tables(lam, log_lam, lo, hi, logfact)
    return PoissonTables(lam, thresholds, guide, kshift, normal)


def sample(tables, codes, words):
    """Poisson counts (int64) for codes (uint8) from one uint32 word each: noise.cuh's search, through the library."""
    thresholds = tables.thresholds if tables.thresholds.size else np.zeros(1, np.uint32)
    return native.poisson_sample(thresholds, tables.guide, tables.kshift, tables.normal, tables.lam, codes, words)
