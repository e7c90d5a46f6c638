"""Deterministic float64 math: the Python face of ``detmath.cuh``, the one source of every transcendental.

numpy's SIMD ``exp``/``log``/``sin``/``cos``/``power`` and the C library's give different last
bits on different CPUs, dispatch paths and libraries.  ``detmath.cuh`` builds each function only
from operations IEEE-754 rounds the same way on every machine (+, -, *, /, sqrt, floor,
comparisons, integer operations on the bits of a float), in a fixed order, compiled without
multiply-add contraction; the GPU compiles it with NVRTC and the CPU runs it from the model's
library (``native``).  So every machine and both backends get the same bits.

Sources: fdlibm 5.3 (e_log.c, e_exp.c, s_expm1.c, k_sin.c, k_cos.c), the first step of
e_rem_pio2.c (Cody-Waite), Dekker's exact product for ``pow``, and Acklam's rational
approximation for ``ndtri``.  tests/test_detmath.py measures the accuracy (about an ulp).

Each function takes an array or a scalar and returns a float64 array (0-d for a scalar);
``scalar(fn, *args)`` returns a Python float.
"""

from .native import exp, expm1, log, log_ext, ndtri, pow, sincos  # noqa: F401 - this module's functions

SINCOS_MAX = 1048576.0  # |x| up to 2**20: the reduction stays exact and accurate (beyond: nan)


def scalar(fn, *args):
    """fn(*args) for scalar arguments, as a Python float (or a tuple of floats)."""
    out = fn(*args)
    return tuple(float(v) for v in out) if isinstance(out, tuple) else float(out)
