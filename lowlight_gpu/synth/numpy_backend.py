"""CPU backend: apply a pair's params to an 8-bit RGB image through the model's C library.

The per-value work (Philox, the Poisson search, Box-Muller, the compose and quantisation, the
camera physics) is the very C the GPU compiles (``native.cpp`` over the ``*.cuh`` headers), so
this backend's images are the CuPy backend's to the bit (ARCHITECTURE.md, "Reproducibility").
Per image, numpy builds the 256-entry tables and the records (``records.py``); noise-free images
are one table lookup.  The backend keeps the name its config value has: ``backend: numpy``.
"""

import numpy as np

from . import native, physics, records
from .signal import clean_lut

NAME = "numpy"


def effective_name(model):
    """What rendered an image of this model here: the backend's name (rows record it)."""
    return NAME


def render(rgb, params, t=None, noisy=True):
    """The low image of step t (None: the one-shot image) for an 8-bit (H, W, 3) array."""
    noise = params["noise"]
    if not noisy or noise["model"] == "none":
        return apply_lut(clean_lut(params, t, noise["space"]), rgb)
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


def render_many(rgb, params, specs):
    """The low images for specs, a list of (t, noisy), in order."""
    return [render(rgb, params, t, noisy) for t, noisy in specs]


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low) uint16 RGGB mosaics of a physics pair at step t, cropped to even H and W."""
    return native.render_physics_raw(records.physics_record(params, t, rgb.shape), physics.code_lut(params, t), rgb)
