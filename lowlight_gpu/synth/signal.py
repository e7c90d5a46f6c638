"""Clean signal per 8-bit code: transfer curves, Lv darkening, the progressive closed form.

This is the model's float64 specification (with the per-value float32 steps of
the noisy path beside it).  For 8-bit input every clean value is a function of
the input code alone, so each formula here is evaluated once per image on the
256 codes, in float64, and the backends apply the result as a lookup table.
Every power, log and exp is ``synth/detmath.py``'s, so the tables have the same
bits on every machine (ARCHITECTURE.md, "Reproducibility").
"""

import functools

import numpy as np

from . import detmath

CODES = np.arange(256, dtype=np.float64) / 255.0

# sRGB (IEC 61966-2-1) constants; the float32 path uses them rounded to float32, as the CUDA kernel does.
SRGB_DECODE_KNEE = 0.04045
SRGB_ENCODE_KNEE = 0.0031308
SRGB_SLOPE = 12.92
SRGB_A = 0.055
SRGB_SCALE = 1.055  # 1 + SRGB_A
SRGB_GAMMA = 2.4


def srgb_to_linear(v):
    """Inverse sRGB transfer curve on float64 values in [0, 1]."""
    v = np.asarray(v, dtype=np.float64)
    curve = detmath.pow((v + SRGB_A) / SRGB_SCALE, SRGB_GAMMA)
    return np.where(v <= SRGB_DECODE_KNEE, v / SRGB_SLOPE, curve)


def linear_to_srgb(v):
    """sRGB transfer curve on float64 linear values in [0, 1]."""
    v = np.asarray(v, dtype=np.float64)
    curve = SRGB_SCALE * detmath.pow(np.maximum(v, SRGB_ENCODE_KNEE), 1.0 / SRGB_GAMMA) - SRGB_A
    return np.where(v <= SRGB_ENCODE_KNEE, v * SRGB_SLOPE, curve)


def darken(x, alpha, beta, gamma):
    """Lv et al.'s synthesis on float64 values: beta * (alpha * x) ** gamma."""
    return beta * detmath.pow(alpha * np.asarray(x, dtype=np.float64), gamma)


def b_prime(alpha, beta, gamma):
    """The scale b' = beta * alpha ** gamma of x_T = b' * x ** gamma."""
    return beta * detmath.scalar(detmath.pow, alpha, gamma)


def progressive_schedule(alpha, beta, gamma, steps):
    """The step constants of x_t = (a * x_{t-1}) ** eta whose T-th step is beta * (alpha * x) ** gamma."""
    eta = detmath.scalar(detmath.pow, gamma, 1.0 / steps)
    # a = b' ** ((1 - eta) / (eta * (1 - eta ** T))); at eta == 1 the exponent's limit is 1 / T.
    log_eta = detmath.scalar(detmath.log, eta)
    if log_eta == 0:
        exponent = 1.0 / steps
    else:
        exponent = -detmath.scalar(detmath.expm1, log_eta) / (eta * -detmath.scalar(detmath.expm1, steps * log_eta))
    return {"steps": int(steps), "eta": eta, "a": detmath.scalar(detmath.pow, b_prime(alpha, beta, gamma), exponent)}


def step_exponents(gamma, steps, t):
    """(scale exponent e_t, power p_t) such that x_t = b' ** e_t * x_0 ** p_t."""
    # From x_t = a ** (eta (1 - eta^t) / (1 - eta)) * x_0 ** (eta^t) with a as above:
    # the exponent of b' is (1 - eta^t) / (1 - eta^T), written with expm1 so eta -> 1 stays exact.
    log_eta = detmath.scalar(detmath.log, gamma) / steps
    if log_eta == 0:
        return t / steps, 1.0
    return (detmath.scalar(detmath.expm1, t * log_eta) / detmath.scalar(detmath.expm1, steps * log_eta),
            detmath.scalar(detmath.exp, t * log_eta))


def is_final_step(params, t):
    """True when step t (None: the one-shot image) is the one-shot formula itself."""
    prog = params.get("progressive")
    return prog is None or t is None or t == prog["steps"]


def step_constants(params, t):
    """float64 (alpha, beta, gamma) with step t's clean signal = beta * (alpha * x) ** gamma."""
    alpha, beta, gamma = float(params["alpha"]), float(params["beta"]), float(params["gamma"])
    if is_final_step(params, t):
        # The last step is the one-shot formula itself, so step T and the one-shot image agree exactly.
        return alpha, beta, gamma
    return _earlier_step_constants(alpha, beta, gamma, int(params["progressive"]["steps"]), int(t))


@functools.lru_cache(maxsize=1024)  # a pair asks for each step's constants for its noisy, clean and GPU images
def _earlier_step_constants(alpha, beta, gamma, steps, t):
    """step_constants of a step t < T: b' ** e_t * x ** p_t, i.e. alpha = 1 (which keeps x exact)."""
    scale_exp, power = step_exponents(gamma, steps, t)
    return 1.0, detmath.scalar(detmath.pow, b_prime(alpha, beta, gamma), scale_exp), power


def step_signal(x, params, t):
    """Clean darkened float64 signal of step t (t = None or T gives the one-shot low image)."""
    return darken(x, *step_constants(params, t))


def working_codes(space):
    """The 256 input codes in the working space (sRGB values, or linear light)."""
    return srgb_to_linear(CODES) if space == "linear" else CODES


def to_output(v, space):
    """Working-space values back to sRGB values in [0, 1]."""
    return linear_to_srgb(v) if space == "linear" else v


def quantize_lut(v, xp=np):
    """Float values in [0, 1] to 8-bit codes, rounding half up (xp: numpy, or CuPy for CuPy arrays)."""
    return xp.floor(xp.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(xp.uint8)


def clean_lut(params, t, space):
    """The noiseless low image of step t as a 256-entry uint8 table."""
    return quantize_lut(to_output(step_signal(working_codes(space), params, t), space))


def declared_variance(y, noise):
    """The declared variance of an additive noise model at clean signal y; None for none and physics (see physics.py)."""
    model = noise.get("model")
    if model == "gaussian":
        return np.full_like(y, noise["sigma"] ** 2)
    if model == "poisson":
        return y / noise["peak"]
    if model in ("poisson-gaussian", "brooks"):
        return y / noise["peak"] + noise["read_sigma"] ** 2
    return None


# ---------------------------------------------------------------- per-value float32 steps of the noisy path
# Noisy values are float32; the steps applied to each after the noise (order: before, space: linear) are
# noise.cuh's (ll_darken, ll_linear_to_srgb, ll_quantize).  Their constants come from here.

def step_constants32(params, t):
    """step_constants rounded to float32 (the per-value darkening's constants)."""
    return tuple(np.float32(c) for c in step_constants(params, t))
