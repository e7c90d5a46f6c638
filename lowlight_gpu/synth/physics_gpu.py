"""GPU driver of the physics noise model: two CUDA kernels of ``physics.cuh`` per image, no host round trip.

The CPU computes what is per image (``physics.code_lut``, ``physics.thresholds``,
the matrices and scalars) and packs it with the parameters into one small blob;
the GPU gets that blob and the uint8 image, runs ``ll_phys_mosaic_kernel`` (unprocess,
mosaic, sensor noise: the white-balanced float64 mosaic stays on the device) and
``ll_phys_process_kernel`` (demosaic, colour, 8-bit codes) on one stream, and only the
uint8 image (and, for ``save.raw``, the uint16 mosaics) come back.  The results are
``physics.render``'s and ``physics.render_raw``'s to the bit (float64 everywhere,
detmath for every transcendental, compiled with --fmad=false).

``render_device`` takes the array module and the two kernels as arguments, so the
tests run this driver with numpy and the host-compiled kernel bodies.
"""

import re
import threading
from pathlib import Path

import numpy as np

from .. import rng
from . import physics
from .signal import clean_lut

SOURCE = Path(__file__).resolve().parent / "physics.cuh"
COMPILE_OPTIONS = ("--std=c++17", "--fmad=false")  # numpy rounds a*b, then +c: no fused multiply-add
THREADS_PER_BLOCK = 256
MAX_GRID = 1 << 20
ALIGN = 256

FLAGS = {"p": 1, "t": 2, "g": 4, "r": 8, "q": 16, "c": 32}  # LL_PHYS_* of physics.cuh

# ll_phys_params of physics.cuh, field for field (tests/test_physics_cuda.py checks the C layout against it).
PARAMS_DTYPE = np.dtype([("key0", "<u4"), ("key1", "<u4"), ("step", "<u4"), ("flags", "<i4"),
                         ("height", "<i8"), ("width", "<i8"), ("raw_width", "<i8"), ("raw_height", "<i8"),
                         ("K", "<f8"), ("read_scale", "<f8"), ("read_lambda", "<f8"), ("row_sigma", "<f8"),
                         ("black", "<f8"), ("white", "<f8"), ("scale", "<f8"), ("bias", "<f8", (4,)),
                         ("rgb2cam", "<f8", (9,)), ("cam2rgb", "<f8", (9,)), ("gains", "<f8", (3,))], align=True)


def component_flags(components):
    """noise.components as the kernel's bit flags."""
    return sum(FLAGS[c] for c in components)


def pack_params(params, t, shape):
    """The ll_phys_params of one image of `shape` (H, W, 3) at step t, as one structured record."""
    noise = params["noise"]
    h, w = shape[:2]
    key0, key1 = rng.split_key(params["seed"])
    rec = np.zeros(1, PARAMS_DTYPE)
    rec["key0"], rec["key1"], rec["step"] = key0, key1, physics._noise_step(params, t)
    rec["flags"] = component_flags(noise["components"])
    rec["height"], rec["width"] = h, w
    rec["raw_height"], rec["raw_width"] = (h // 2) * 2, (w // 2) * 2
    rec["K"] = noise["K"]
    rec["read_scale"] = noise["read_scale"]
    rec["read_lambda"] = noise["read_lambda"] or 0.0
    rec["row_sigma"] = noise["row_sigma"]
    rec["black"], rec["white"] = float(noise["black_level"]), float(noise["white_level"])
    rec["scale"] = physics.full_scale(noise)
    rec["bias"] = noise["bias"]
    rec["rgb2cam"] = np.ravel(noise["ccm"])
    rec["cam2rgb"] = np.ravel(physics.invert3(noise["ccm"]))
    rec["gains"] = physics.channel_gains(noise)
    return rec


def pack_blob(params, t, shape):
    """(blob, offsets): the params record, the 256-entry linear LUT and the 255 thresholds, 256-byte aligned."""
    parts = [pack_params(params, t, shape).view(np.uint8), physics.code_lut(params, t).view(np.uint8),
             physics.thresholds().view(np.uint8)]
    offsets, size = [], 0
    for part in parts:
        offsets.append(size)
        size += -(-part.nbytes // ALIGN) * ALIGN
    blob = np.zeros(size, np.uint8)
    for off, part in zip(offsets, parts):
        blob[off:off + part.nbytes] = part
    return blob, offsets


def render_device(xp, kernels, rgb, params, t, image=True, raw=False):
    """(image or None, raw_clean or None, raw_low or None) through the two kernels; xp is cupy (or numpy in tests)."""
    h, w = rgb.shape[:2]
    n = h * w
    blob, (p_at, lut_at, thr_at) = pack_blob(params, t, rgb.shape)
    d_blob = xp.asarray(blob)
    d_params = d_blob[p_at:]
    d_lut = d_blob[lut_at:lut_at + 256 * 8].view(np.float64)
    d_thr = d_blob[thr_at:thr_at + 255 * 8].view(np.float64)
    d_rgb = xp.ascontiguousarray(xp.asarray(rgb)).reshape(-1)
    d_m = xp.empty(n, np.float64) if image else None
    rh, rw = (h // 2) * 2, (w // 2) * 2
    d_clean = xp.empty(rh * rw, np.uint16) if raw else None
    d_low = xp.empty(rh * rw, np.uint16) if raw else None
    grid = (max(1, min(MAX_GRID, -(-n // THREADS_PER_BLOCK))),)
    block = (THREADS_PER_BLOCK,)
    null = kernels.null  # what the kernel reads as a null pointer
    kernels.mosaic(grid, block, (d_params, d_lut, d_rgb, null if d_m is None else d_m,
                                 null if d_clean is None else d_clean, null if d_low is None else d_low))
    out = None
    if image:
        d_out = xp.empty(n * 3, np.uint8)
        kernels.process(grid, block, (d_params, d_thr, d_m, d_out))
        out = d_out.reshape(h, w, 3)
    if raw:
        return out, d_clean.reshape(rh, rw), d_low.reshape(rh, rw)
    return out, None, None


# ---------------------------------------------------------------- CuPy

def kernel_source():
    """physics.cuh with its local headers inlined (CuPy's disk cache then keys on every header's text)."""
    return _inline(SOURCE, set())


def _inline(path, seen):
    """The text of path with each #include "local.cuh" replaced by that file, once (no #pragma once)."""
    out = []
    for line in path.read_text().splitlines():
        match = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if match:
            if match.group(1) not in seen:
                seen.add(match.group(1))
                out.append(_inline(path.parent / match.group(1), seen))
            continue
        if not re.match(r"\s*#\s*pragma\s+once", line):
            out.append(line)
    return "\n".join(out) + "\n"


class _Kernels:
    """The two compiled kernels of one device."""

    null = np.uint64(0)  # CuPy passes a 64-bit zero, which the kernel reads as a null pointer

    def __init__(self, module):
        self.mosaic = module.get_function("ll_phys_mosaic_kernel")
        self.process = module.get_function("ll_phys_process_kernel")


_lock = threading.Lock()
_compiled = {}


def _kernels():
    """The kernels of the current device, compiled once per process by NVRTC."""
    import cupy

    dev = cupy.cuda.runtime.getDevice()
    with _lock:
        if dev not in _compiled:
            _compiled[dev] = _Kernels(cupy.RawModule(code=kernel_source(), options=COMPILE_OPTIONS))
        return _compiled[dev]


def _to_numpy(arr):
    """A device array back on the host (a numpy array passes through)."""
    return arr.get() if hasattr(arr, "get") and not isinstance(arr, np.ndarray) else np.asarray(arr)


def render_many(rgb, params, specs):
    """The low images of specs [(t, noisy)]: noisy ones by the physics kernels, clean ones by the clean LUT."""
    import cupy

    on_device = isinstance(rgb, cupy.ndarray)
    host = _to_numpy(rgb) if not all(noisy for _, noisy in specs) else None  # only clean images need it
    d_rgb = cupy.ascontiguousarray(cupy.asarray(rgb)) if any(noisy for _, noisy in specs) else None  # uploaded once
    outs = []
    for t, noisy in specs:
        if noisy:
            img = render_device(cupy, _kernels(), d_rgb, params, t)[0]
            outs.append(img if on_device else _to_numpy(img))
        else:
            img = np.take(clean_lut(params, t, params["noise"]["space"]), host)
            outs.append(cupy.asarray(img) if on_device else img)
    return outs


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low) uint16 mosaics of step t, as numpy arrays."""
    import cupy

    _, clean, low = render_device(cupy, _kernels(), rgb, params, t, image=False, raw=True)
    return _to_numpy(clean), _to_numpy(low)
