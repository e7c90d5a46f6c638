"""The per-image C records of the model: one home for what both drivers hand to the headers.

A noisy Lv image is one ``ll_noise_params`` record plus its per-code tables (``noise.cuh``); a
physics image is one ``ll_phys_params`` record plus its linear LUT and code thresholds
(``physics.cuh``).  The CPU library (``native``) and the CuPy driver receive the very same
records, so their arithmetic starts from the same bits.
"""

import numpy as np

from . import native, physics, rng
from .signal import is_final_step, step_constants32, step_signal, working_codes


def noise_step(params, t):
    """Counter ``step`` word of the noise stream: 0 for the final low image, t for an earlier step."""
    return 0 if is_final_step(params, t) else int(t)


def noise_signal(params, t):
    """The 256 clean values the noise is added to: the working codes (order: before) or the darkened step."""
    space = params["noise"]["space"]
    before = params["noise"]["order"] == "before"
    return working_codes(space) if before else step_signal(working_codes(space), params, t)


def noise_tables(noise, signal):
    """Poisson tables for this signal, or None for a model without shot noise."""
    from . import poisson

    return None if noise["model"] == "gaussian" else poisson.build_tables(noise["peak"] * signal)


def noise_record(params, t):
    """The ll_noise_params record of one noisy Lv image at step t (a one-element structured array)."""
    noise = params["noise"]
    model = noise["model"]
    key0, key1 = rng.split_key(params["seed"])
    if model == "gaussian":
        inv_peak, sigma = 0.0, noise["sigma"]
    elif model == "poisson":
        inv_peak, sigma = 1.0 / noise["peak"], 0.0
    else:  # poisson-gaussian, brooks
        inv_peak, sigma = 1.0 / noise["peak"], noise["read_sigma"]
    alpha, beta, gamma = step_constants32(params, t)
    rec = np.zeros(1, native.NOISE_PARAMS_DTYPE)
    rec["key0"], rec["key1"], rec["step"] = key0, key1, noise_step(params, t)
    rec["model"] = native.MODEL_CODES[model]
    rec["darken"], rec["linear"] = noise["order"] == "before", noise["space"] == "linear"
    rec["inv_peak"], rec["sigma"] = np.float32(inv_peak), np.float32(sigma)
    rec["alpha"], rec["beta"], rec["gamma"] = alpha, beta, gamma
    return rec


_EMPTY = (np.zeros(1, np.uint32), np.zeros(256 * 257, np.int32), np.zeros(256, np.int32), np.zeros(256, np.uint8),
          np.zeros(256, np.float64))


def noise_sections(params, t):
    """The per-code arrays of one noisy Lv image, in ll_tables order: thresholds, guide, kshift, normal, lam, signal."""
    signal = noise_signal(params, t)
    tables = noise_tables(params["noise"], signal)
    if tables is None:  # gaussian: only the float32 signal is read
        return (*_EMPTY, signal.astype(np.float32))
    thresholds = tables.thresholds if tables.thresholds.size else _EMPTY[0]
    return (thresholds, tables.guide, tables.kshift, tables.normal.view(np.uint8), tables.lam.astype(np.float64),
            signal.astype(np.float32))


def component_flags(components):
    """noise.components as physics.cuh's bit flags."""
    return sum(native.PHYS_FLAGS[c] for c in components)


def sensor_record(noise, seed, step, shape):
    """The sensor fields of an ll_phys_params record (key, step, components, size, noise levels, black and white)."""
    h, w = shape[:2]
    key0, key1 = rng.split_key(seed)
    rec = np.zeros(1, native.PHYS_PARAMS_DTYPE)
    rec["key0"], rec["key1"], rec["step"] = key0, key1, step
    rec["flags"] = component_flags(noise["components"])
    rec["height"], rec["width"] = h, w
    rec["raw_height"], rec["raw_width"] = (h // 2) * 2, (w // 2) * 2
    rec["K"] = noise["K"]
    rec["read_scale"] = noise["read_scale"]
    rec["read_lambda"] = noise.get("read_lambda") or 0.0
    rec["row_sigma"] = noise["row_sigma"]
    rec["black"], rec["white"] = float(noise["black_level"]), float(noise["white_level"])
    rec["scale"] = physics.full_scale(noise)
    rec["bias"] = noise["bias"]
    return rec


def physics_record(params, t, shape):
    """The ll_phys_params record of one physics image of `shape` (H, W, ...) at step t."""
    noise = params["noise"]
    rec = sensor_record(noise, params["seed"], noise_step(params, t), shape)
    rec["rgb2cam"] = np.ravel(noise["ccm"])
    rec["cam2rgb"] = np.ravel(physics.invert3(noise["ccm"]))
    rec["gains"] = physics.channel_gains(noise)
    return rec
