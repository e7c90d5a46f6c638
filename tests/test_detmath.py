"""detmath.cuh, the one source of every transcendental, through the model's CPU library.

One table of inputs (``cases()``, edge cases plus values spread over each function's
domain, made with integer and power-of-two operations only so the table itself is the same on
every machine) is evaluated by the library, which runs the very header the GPU compiles.  A
hash of the whole table's results pins it: these are the bits every dataset of this format
version holds (they equal those of the numpy specification and its numba twin that the header
replaced), so a change must come with a dataset format version bump (tests/test_golden.py).
Every instruction-set build of the library (baseline, AVX2, AVX-512) gives those bits, and the
accuracy against Python's math module is measured.
"""

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowlight_gpu.synth import detmath, native

REPO = Path(__file__).resolve().parent.parent
INF, NAN = math.inf, math.nan
# The inputs' landmarks (detmath.cuh's LL_DM_* constants).
MIN_NORMAL = 2.2250738585072014e-308
SQRT2 = 1.4142135623730951
LN2_HI = 6.93147180369123816490e-01
EXP_MAX = 7.09782712893383973096e+02
EXP_MIN = -7.45133219101941108420e+02
SINCOS_MAX = 1048576.0
ACKLAM_LOW = 0.02425

# sha256 of every function's results on cases(), as float64 bytes in FUNCTIONS order.
SPEC_SHA256 = "9f53d1c880d717f2bc7363ff926960ebc5351ae3df89858a6b9ecbb152d5ac86"


def _floats(g, exp_lo, exp_hi, n, sign=False):
    """n floats with random 52-bit mantissas and biased exponents in [exp_lo, exp_hi] (bit construction)."""
    mant = g.integers(0, 1 << 52, n, dtype=np.int64)
    expo = g.integers(exp_lo, exp_hi + 1, n, dtype=np.int64)
    sgn = g.integers(0, 2, n, dtype=np.int64) if sign else np.zeros(n, np.int64)
    return ((sgn << 63) | (expo << 52) | mant).view(np.float64)


def _grid(g, lo, hi, n, bits=40):
    """n floats k / 2**bits uniformly spread over [lo, hi] (exact integer-to-float steps)."""
    return g.integers(int(lo * 2 ** bits), int(hi * 2 ** bits), n, dtype=np.int64).astype(np.float64) / 2.0 ** bits


def cases():
    """{function name: (x, y)} of float64 inputs, y None except for pow."""
    g = np.random.default_rng(20261130)
    up = np.nextafter
    specials = [0.0, -0.0, INF, -INF, NAN, 1.0, -1.0, 2.0, 0.5, 5e-324, MIN_NORMAL,
                up(MIN_NORMAL, 0), 1.7976931348623157e308]
    log_x = np.concatenate([specials, [SQRT2, up(SQRT2, 3), up(SQRT2, 0),
                                       up(1.0, 2), up(1.0, 0), 1 / 255, 0.04045, 3.0],
                            _floats(g, 1, 2046, 1500), _floats(g, 0, 0, 100), _grid(g, 0.5, 2.0, 400),
                            1.0 + _grid(g, -1e-6, 1e-6, 100, 52)])
    ln2h = 0.5 * LN2_HI
    exp_x = np.concatenate([specials, [EXP_MAX, up(EXP_MAX, INF), EXP_MIN,
                                       up(EXP_MIN, -INF), -708.5, -740.0, 709.0, ln2h, -ln2h,
                                       up(ln2h, INF), -up(ln2h, INF), 0.25, -0.25, -0.2500001],
                            _grid(g, -750, 712, 1500), _grid(g, -1, 1, 300), _floats(g, 900, 1020, 200, True)])
    expm1_x = np.concatenate([exp_x, [-40.0, -40.5, -45.0, 13.5, 14.2, 38.0, 39.5, 40.0, -0.7, -1.2, -1.6],
                              _grid(g, -45, 60, 500)])
    pow_x = np.concatenate([[0.0, 0.0, 0.0, 1.0, 1.0, INF, INF, INF, 2.0, 2.0, 0.5, NAN, 3.0, -1.0, 0.5, 1e-300,
                             1e300, 0.04045 + 0.055, 1 / 255],
                            _grid(g, 0, 1, 1000, 52), _grid(g, 0, 16, 400), _floats(g, 1, 2046, 300)])
    pow_y = np.concatenate([[2.0, 0.0, -1.0, NAN, 0.0, 2.0, -2.0, 0.0, 1.0, 0.5, -1074.0, 1.0, NAN, 2.0, 1e20,
                             3.0, -3.0, 2.4, 1 / 2.4],
                            _grid(g, -4, 4, 1000), _grid(g, -30, 30, 400), _grid(g, -1.5, 1.5, 300)])
    sin_x = np.concatenate([specials, [math.pi, -math.pi, math.pi / 2, math.pi / 4, 2 * math.pi, 1e-300,
                                       SINCOS_MAX, up(SINCOS_MAX, INF), 1e7],
                            _grid(g, 0, 2 * math.pi, 1000), _grid(g, -100, 100, 500), _grid(g, -2 ** 20, 2 ** 20, 300)])
    p_x = np.concatenate([[0.5, ACKLAM_LOW, up(ACKLAM_LOW, 0), 1 - ACKLAM_LOW,
                           1e-300, 5e-324, 0.5 / 2 ** 32, 1 - 0.5 / 2 ** 32, 0.975, 0.025],
                          (g.integers(1, 1 << 53, 1500, dtype=np.int64) / 2.0 ** 53),
                          _floats(g, 1, 1020, 300)])
    ext_x = log_x[(log_x > 0) & (log_x < INF)]
    return {"log": (log_x, None), "exp": (exp_x, None), "expm1": (expm1_x, None), "pow": (pow_x, pow_y),
            "sin": (sin_x, None), "cos": (sin_x, None), "ndtri": (p_x, None),
            "log_ext_hi": (ext_x, None), "log_ext_lo": (ext_x, None)}


FUNCTIONS = list(cases())  # also the host harness's function numbers, in this order

FUNCTIONS_BY_NAME = {
    "log": detmath.log, "exp": detmath.exp, "expm1": detmath.expm1, "pow": detmath.pow,
    "sin": lambda x: detmath.sincos(x)[0], "cos": lambda x: detmath.sincos(x)[1], "ndtri": detmath.ndtri,
    "log_ext_hi": lambda x: detmath.log_ext(x)[0], "log_ext_lo": lambda x: detmath.log_ext(x)[1],
}


def evaluate_numpy(name, x, y):
    """The library's results on one table column."""
    return np.asarray(FUNCTIONS_BY_NAME[name](x) if y is None else FUNCTIONS_BY_NAME[name](x, y), np.float64)


def assert_same_bits(got, want, x, name):
    """Equal float64 bit patterns, or a message naming the first input that differs."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bad = np.flatnonzero(got.view(np.int64) != want.view(np.int64))
    assert bad.size == 0, f"{name}({x[bad[0]]!r}): {got[bad[0]]!r} != {want[bad[0]]!r} ({bad.size} inputs differ)"


TABLE = cases()


def table_digest():
    """sha256 of every function's results on the table, as float64 bytes in FUNCTIONS order."""
    digest = hashlib.sha256()
    for name in FUNCTIONS:
        x, y = TABLE[name]
        digest.update(evaluate_numpy(name, x, y).tobytes())
    return digest.hexdigest()


def ulps(got, want):
    """|got - want| in units of the last place of want."""
    return np.abs(got - want) / np.spacing(np.abs(want))


MATH = {"log": math.log, "exp": math.exp, "expm1": math.expm1, "sin": math.sin, "cos": math.cos}


@pytest.mark.parametrize("name", list(MATH))
def test_accuracy_against_math(name):
    x, _ = TABLE[name]
    want = []
    for v in x:
        try:
            want.append(MATH[name](v))
        except (ValueError, OverflowError):
            want.append(NAN)
    want = np.array(want)
    got = evaluate_numpy(name, x, None)
    ok = np.isfinite(want) & (np.abs(want) > 1e-300) & np.isfinite(got)
    if name in ("sin", "cos"):  # absolute error: near a zero the relative error of any reduction grows
        assert np.max(np.abs(got[ok] - want[ok])) <= 2 * np.spacing(1.0)
    else:
        assert np.max(ulps(got[ok], want[ok])) <= 1.0
    assert ok.sum() > 0.8 * x.size or name == "exp"


def test_special_values():
    assert detmath.scalar(detmath.log, 0.0) == -INF and math.isnan(detmath.scalar(detmath.log, -1.0))
    assert detmath.scalar(detmath.log, 1.0) == 0.0 and detmath.scalar(detmath.exp, 0.0) == 1.0
    assert detmath.scalar(detmath.exp, 1000.0) == INF and detmath.scalar(detmath.exp, -1000.0) == 0.0
    assert detmath.scalar(detmath.expm1, -100.0) == -1.0
    assert detmath.scalar(detmath.pow, 0.0, 2.0) == 0.0 and detmath.scalar(detmath.pow, 0.0, -1.0) == INF
    assert detmath.scalar(detmath.pow, 7.25, 1.0) == 7.25 and detmath.scalar(detmath.pow, 0.0, 0.0) == 1.0
    assert detmath.scalar(detmath.sincos, 0.0) == (0.0, 1.0)
    assert detmath.scalar(detmath.ndtri, 0.5) == 0.0
    assert isinstance(detmath.scalar(detmath.exp, 1.0), float)


def test_pow_accuracy():
    x, y = TABLE["pow"]
    want = np.array([math.pow(a, b) if 0 < a < INF and abs(b * math.log(a)) < 50 else NAN for a, b in zip(x, y)])
    got = evaluate_numpy("pow", x, y)
    ok = np.isfinite(want) & (want > 1e-300) & (want < 1e300)
    assert ok.sum() > 1000
    assert np.max(ulps(got[ok], want[ok])) <= 1.0


def test_log_ext_is_more_precise_than_a_double():
    x = TABLE["log_ext_hi"][0]
    hi, lo = detmath.log_ext(x)
    # hi + lo against log x in exact rational arithmetic is out of reach here; hi is the rounded value
    # of an extended result, so it must be within half an ulp of the correctly rounded log nearly always.
    assert np.mean(hi == np.array([math.log(v) for v in x])) > 0.999
    assert np.all(np.abs(lo) <= np.spacing(np.abs(hi)))


def test_ndtri_inverts_the_normal_cdf():
    p = TABLE["ndtri"][0]
    p = p[(p >= 2.0 ** -33) & (p <= 1 - 2.0 ** -33)]  # the kernels' range: (u + 0.5) / 2**32
    z = evaluate_numpy("ndtri", p, None)
    back = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    # Acklam: |dz / z| < 1.2e-9, which moves the CDF by at most z**2 times that in relative terms.
    assert np.max(np.abs(back - p) / np.minimum(p, 1 - p)) < 1e-7


def test_vectorised_and_scalar_calls_agree():
    x = TABLE["log"][0][:50]
    assert_same_bits([detmath.scalar(detmath.log, v) for v in x], detmath.log(x), x, "log")
    assert detmath.log(x.reshape(5, 10)[:, ::2]).shape == (5, 5)


def test_specification_is_pinned():
    assert table_digest() == SPEC_SHA256


@pytest.mark.parametrize("level", [0, 3])
def test_every_instruction_set_build_gives_the_pinned_bits(level):
    """LOWLIGHT_CPU_LEVEL caps the build the library loads: the baseline and AVX2 builds compute the same bits."""
    code = ("import sys; sys.path.insert(0, 'tests'); import test_detmath as t; from lowlight_gpu.synth import native; "
            "print(native.level(), t.table_digest())")
    env = {**os.environ, "LOWLIGHT_CPU_LEVEL": str(level)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got_level, digest = proc.stdout.split()
    assert int(got_level) <= level and digest == SPEC_SHA256
