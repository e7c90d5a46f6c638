"""CPU backend: apply a pair's params to an 8-bit RGB image with numpy.

The pure-numpy code here is the reference every other backend is checked
against.  When numba is installed, the per-pixel noise loop runs through the
compiled twin in ``synth/cpu_kernel.py`` instead, which draws the same words and
does the same arithmetic, so the images are the same to the bit (the contract
is in ARCHITECTURE.md, "Reproducibility").  Nothing here calls numpy's SIMD
transcendentals: log, sin, cos and pow are ``synth/detmath.py``'s.
"""

import numpy as np

from .. import rng
# cpu_kernel (and poisson, which uses it) import numba: imported where noise is rendered, so that a
# noise-free run's processes never pay for importing numba.
from . import detmath, native, physics, records
from .signal import (clean_lut, darken32, is_final_step, linear_to_srgb32, step_constants32, step_signal,
                     working_codes)
from .signal import quantize32 as quantize

NAME = "numpy"

# Values per chunk: keeps the Philox state and temporaries inside L2.
CHUNK_VALUES = 1 << 15
_INV_2_23 = np.float32(1.0 / (1 << 23))
_INV_2_24 = np.float32(1.0 / (1 << 24))
_TWO_PI = np.float32(2.0 * np.pi)


def effective_name(model):
    """What renders noise of this model here: 'numba' (a compiled twin) or 'numpy'."""
    if model == "physics":  # synth/physics_numba.py
        return "numba" if physics.compiled() is not None else NAME
    if model == "none":
        return NAME
    from . import cpu_kernel

    return "numba" if model in cpu_kernel.MODELS and cpu_kernel.warmup() else NAME


def noise_step(params, t):
    """Counter ``step`` word of the noise stream: 0 for the final low image, t for an earlier step."""
    return 0 if is_final_step(params, t) else int(t)


def box_muller(w_radius, w_angle):
    """Two independent float32 N(0, 1) arrays from two arrays of 32-bit words."""
    # 23 bits + 0.5 is exact in float32, so u1 lies in (0, 1) and log(u1) stays finite and non-zero.
    u1 = ((w_radius >> 9).astype(np.float32) + np.float32(0.5)) * _INV_2_23
    theta = (w_angle >> 8).astype(np.float32) * _INV_2_24 * _TWO_PI
    # log and sincos in float64 (detmath), each rounded once to float32.
    radius = np.sqrt(np.float32(-2.0) * detmath.log(u1.astype(np.float64)).astype(np.float32))
    sin, cos = detmath.sincos(theta.astype(np.float64))
    return radius * cos.astype(np.float32), radius * sin.astype(np.float32)


def noise_words(seed, step, first_value, count):
    """(poisson word, normal) per value for values [first_value, first_value + count); first_value is even."""
    nblocks = (count + 1) // 2
    words = rng.random_blocks(seed, step, rng.STREAM_NOISE, first_value // 2, nblocks)
    # Block j serves values 2j and 2j+1: words 0/1 drive their Poisson draws, words 2/3 their normals.
    poisson_words = words[:, :2].reshape(-1)[:count]
    n0, n1 = box_muller(words[:, 2], words[:, 3])
    normals = np.stack((n0, n1), axis=1).reshape(-1)[:count]
    return poisson_words, normals


def add_noise(codes, signal, tables, noise, words, normals):
    """Noisy float32 values in [0, 1] for codes whose clean value is signal[code]."""
    model = noise["model"]
    if model == "gaussian":
        z = signal.astype(np.float32)[codes] + np.float32(noise["sigma"]) * normals
    else:
        from . import poisson

        k = poisson.sample(tables, codes, words)
        z = k.astype(np.float32) * np.float32(1.0 / noise["peak"])
        if model != "poisson":  # poisson-gaussian and brooks add read noise
            z += np.float32(noise["read_sigma"]) * normals
    return np.clip(z, np.float32(0.0), np.float32(1.0), out=z)


def noise_tables(noise, signal):
    """Poisson tables for this signal, or None for a model without shot noise."""
    from . import poisson

    return None if noise["model"] == "gaussian" else poisson.build_tables(noise["peak"] * signal)


def render(rgb, params, t=None, noisy=True):
    """The low image of step t (None: the one-shot image) for an 8-bit (H, W, 3) array."""
    noise = params["noise"]
    space = noise["space"]
    if not noisy or noise["model"] == "none":
        return apply_lut(clean_lut(params, t, space), rgb)
    if noise["model"] == "physics":  # unprocess, sensor noise on the raw mosaic, re-process
        return native.render_physics(records.physics_record(params, t, rgb.shape), physics.code_lut(params, t),
                                     physics.thresholds(), rgb)
    out = native.render_noisy(rgb.reshape(-1), records.noise_record(params, t), *records.noise_sections(params, t))
    return out.reshape(rgb.shape)


def apply_lut(lut, rgb):
    """lut[rgb] for a 256-entry uint8 table: two bytes per lookup, through a 65536-entry table of byte pairs.

    One lookup per two bytes, with 16-bit indices, is about 3x faster than np.take on the bytes.  Entry
    (a << 8) | b holds the pair (lut[a], lut[b]) in the same byte order, whichever the machine's is.
    """
    flat = np.ascontiguousarray(rgb).reshape(-1)
    out = np.empty_like(flat)
    even = flat.size & ~1
    wide = np.asarray(lut, np.uint8).astype(np.uint16)
    pairs = ((wide[:, None] << 8) | wide[None, :]).reshape(-1)
    np.take(pairs, flat[:even].view(np.uint16), out=out[:even].view(np.uint16), mode="clip")
    if even < flat.size:
        out[-1] = lut[flat[-1]]
    return out.reshape(np.shape(rgb))


def render_noisy_reference(flat, signal, tables, noise, seed, step, darken):
    """The pure-numpy noisy path of render() on flat uint8 codes; returns flat uint8 codes.

    ``darken`` is None (order: after) or the float32 (alpha, beta, gamma) applied to each noisy value.
    """
    out = np.empty_like(flat)
    for lo in range(0, flat.size, CHUNK_VALUES):
        codes = flat[lo:lo + CHUNK_VALUES]
        words, normals = noise_words(seed, step, lo, codes.size)
        z = add_noise(codes, signal, tables, noise, words, normals)
        if darken is not None:
            z = darken32(z, darken)
        if noise["space"] == "linear":
            z = linear_to_srgb32(z)
        out[lo:lo + codes.size] = quantize(z)
    return out


def render_many(rgb, params, specs):
    """The low images for specs, a list of (t, noisy), in order."""
    return [render(rgb, params, t, noisy) for t, noisy in specs]


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low) uint16 RGGB mosaics of a physics pair at step t (synth/physics.py)."""
    return native.render_physics_raw(records.physics_record(params, t, rgb.shape), physics.code_lut(params, t), rgb)
