"""GPU driver of the physics noise model: two CUDA kernels of ``physics.cuh`` per image, no host round trip.

The CPU computes what is per image (``physics.code_lut``, ``physics.thresholds``,
the matrices and scalars: ``records.physics_record``) and packs it into one small blob;
the GPU gets that blob and the uint8 image, runs ``ll_phys_mosaic_kernel`` (unprocess,
mosaic, sensor noise: the white-balanced float64 mosaic stays on the device) and
``ll_phys_process_kernel`` (demosaic, colour, 8-bit codes) on one stream, and only the
uint8 image (and, for ``save.raw``, the uint16 mosaics) come back.  The kernels are
the very functions the CPU library runs (float64 everywhere, detmath for every
transcendental, compiled with --fmad=false), so the images are the CPU backend's.

``render_device`` takes the array module and the two kernels as arguments, so the
tests run this driver with numpy and the library's serial kernel bodies.  An image
whose mosaic does not fit in GPU memory is rendered by the CPU library (the same bytes).
"""

import sys

import numpy as np

from . import cupy_compile, numpy_backend, physics, records
from .signal import clean_lut

THREADS_PER_BLOCK = 256
MAX_GRID = 1 << 20
ALIGN = 256


def pack_blob(params, t, shape):
    """(blob, offsets): the params record, the 256-entry linear LUT and the 255 thresholds, 256-byte aligned."""
    parts = [records.physics_record(params, t, shape).view(np.uint8), physics.code_lut(params, t).view(np.uint8),
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

class _Kernels:
    """The two physics kernels of the backend's one compiled module (cupy_compile)."""

    null = np.uint64(0)  # CuPy passes a 64-bit zero, which the kernel reads as a null pointer

    def __init__(self, kernels):
        self.mosaic = kernels.mosaic
        self.process = kernels.process


def _kernels():
    """The physics kernels of the current device (compiled once per process with the Lv kernels)."""
    return _Kernels(cupy_compile.kernels())


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
            img = _on_gpu_or_cpu(cupy, lambda t=t: render_device(cupy, _kernels(), d_rgb, params, t)[0],
                                 lambda t=t: cupy.asarray(numpy_backend.render(_to_numpy(d_rgb), params, t)))
            outs.append(img if on_device else _to_numpy(img))
        else:
            img = np.take(clean_lut(params, t, params["noise"]["space"]), host)
            outs.append(cupy.asarray(img) if on_device else img)
    return outs


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low) uint16 mosaics of step t, as numpy arrays."""
    import cupy

    def on_gpu():
        _, clean, low = render_device(cupy, _kernels(), rgb, params, t, image=False, raw=True)
        return _to_numpy(clean), _to_numpy(low)

    return _on_gpu_or_cpu(cupy, on_gpu, lambda: numpy_backend.render_raw(_to_numpy(rgb), params, t))


_NOTED = []


def _on_gpu_or_cpu(cupy, on_gpu, on_cpu):
    """on_gpu(); out of GPU memory even after CuPy's pool is freed, on_cpu(): the CPU library, the same bytes.

    A physics image is not sliced (its demosaic reads the rows around each pixel), so one whose float64
    mosaic does not fit is rendered by the library instead, with one note per process.
    """
    for _ in range(2):
        try:
            return on_gpu()
        except cupy.cuda.memory.OutOfMemoryError:
            cupy.get_default_memory_pool().free_all_blocks()
    if not _NOTED:
        _NOTED.append(True)
        print("lowlight_gpu: a physics image did not fit in GPU memory; it is rendered on the CPU (the same bytes)",
              file=sys.stderr)
    return on_cpu()
