"""Clean signal per 8-bit code: transfer curves, Lv darkening, the progressive closed form.

For 8-bit input every clean value is a function of the input code alone, so
each formula here is evaluated once per image on the 256 codes, in float64,
and the backends apply the result as a lookup table.  The same functions also
take per-pixel arrays (the ``noise.order: before`` path darkens noisy values).
"""

import numpy as np

CODES = np.arange(256, dtype=np.float64) / 255.0


def srgb_to_linear(v):
    """Inverse sRGB transfer curve (IEC 61966-2-1) on values in [0, 1]."""
    v = np.asarray(v)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v):
    """sRGB transfer curve on linear values in [0, 1]."""
    v = np.asarray(v)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0.0031308) ** (1.0 / 2.4) - 0.055)


def darken(x, alpha, beta, gamma):
    """Lv et al.'s synthesis: beta * (alpha * x) ** gamma."""
    return beta * (alpha * x) ** gamma


def progressive_schedule(alpha, beta, gamma, steps):
    """The step constants of x_t = (a * x_{t-1}) ** eta whose T-th step is beta * (alpha * x) ** gamma."""
    eta = gamma ** (1.0 / steps)
    b_prime = beta * alpha ** gamma
    # a = b' ** ((1 - eta) / (eta * (1 - eta ** T))); at eta == 1 the exponent's limit is 1 / T.
    log_eta = np.log(eta)
    exponent = 1.0 / steps if log_eta == 0 else -np.expm1(log_eta) / (eta * -np.expm1(steps * log_eta))
    return {"steps": int(steps), "eta": float(eta), "a": float(b_prime ** exponent)}


def step_exponents(gamma, steps, t):
    """(scale exponent e_t, power p_t) such that x_t = b' ** e_t * x_0 ** p_t."""
    # From x_t = a ** (eta (1 - eta^t) / (1 - eta)) * x_0 ** (eta^t) with a as above:
    # the exponent of b' is (1 - eta^t) / (1 - eta^T), written with expm1 so eta -> 1 stays exact.
    log_eta = np.log(gamma) / steps
    if log_eta == 0:
        return t / steps, 1.0
    return float(np.expm1(t * log_eta) / np.expm1(steps * log_eta)), float(np.exp(t * log_eta))


def step_signal(x, params, t):
    """Clean darkened signal of step t (t = None or T gives the one-shot low image)."""
    alpha, beta, gamma = params["alpha"], params["beta"], params["gamma"]
    prog = params.get("progressive")
    if prog is None or t is None or t == prog["steps"]:
        # The last step is the one-shot formula itself, so step T and the one-shot image agree exactly.
        return darken(x, alpha, beta, gamma)
    scale_exp, power = step_exponents(gamma, prog["steps"], t)
    b_prime = beta * alpha ** gamma
    return b_prime ** scale_exp * x ** power


def working_codes(space):
    """The 256 input codes in the working space (sRGB values, or linear light)."""
    return srgb_to_linear(CODES) if space == "linear" else CODES


def to_output(v, space):
    """Working-space values back to sRGB values in [0, 1]."""
    return linear_to_srgb(v) if space == "linear" else v


def quantize_lut(v):
    """Float values in [0, 1] to 8-bit codes, rounding half up."""
    return np.floor(np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def clean_lut(params, t, space):
    """The noiseless low image of step t as a 256-entry uint8 table."""
    return quantize_lut(to_output(step_signal(working_codes(space), params, t), space))
