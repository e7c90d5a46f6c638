"""A stand-in CuPy whose kernels are the GPU kernels' bodies run by the model's CPU library.

``StandInCupy`` is just enough of CuPy for ``cupy_backend`` and ``physics_gpu``: arrays are host arrays,
streams and pinned memory do nothing, and each ``RawModule`` function runs what one CUDA thread computes,
looped over every index (``native.cpp``'s ``*_serial`` functions over the very headers NVRTC compiles).
So the CuPy driver -- argument packing, blob layout, slicing, the out-of-memory fallback, batching, threads
-- runs on any machine, and its images are checked against the CPU backend's and the pins.
"""

import sys
import time
from unittest import mock

import numpy as np

from lowlight_gpu.synth import cupy_backend, cupy_batch, cupy_compile, cupy_transfer, native


def ptr(a):
    """A C pointer to a contiguous array, or None for the 64-bit zero CuPy passes as a null pointer."""
    if a is None or isinstance(a, (int, np.integer)):
        return None
    a = np.asarray(a)
    assert a.flags.c_contiguous
    return a.ctypes.data


class StandInArray(np.ndarray):
    """A host array posing as cupy.ndarray: views, slices and reshapes keep the type."""

    def set(self, arr, stream=None):
        """Host-to-device copy."""
        self[...] = arr

    def get(self, stream=None, out=None, blocking=True):
        """Device-to-host copy."""
        out = np.empty(self.shape, self.dtype) if out is None else out
        out[...] = self
        return out


class StandInCupy:
    """Just enough of CuPy for the CuPy backend; its kernels are the library's serial kernel bodies."""

    ndarray = StandInArray
    uint8 = np.uint8

    class OutOfMemoryError(Exception):
        pass

    def __init__(self):
        self.max_alloc = None  # bytes; a larger cupy.empty raises OutOfMemoryError
        self.launches = []
        self.batches = []  # (images, device values) of each batched launch
        self.batch_delay = 0.0  # seconds each batched launch takes (lets other threads queue meanwhile)
        self.batch_error = None  # an exception the next batched launch raises
        outer = self

        class Stream:
            def __init__(self, non_blocking=False):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def synchronize(self):
                pass

        class Pool:
            def free_all_blocks(self, stream=None):
                pass

            def set_limit(self, size=None):
                outer.max_alloc = size or None

        class RawModule:
            def __init__(self, code, options):
                assert "ll_noise_kernel" in code and "ll_phys_mosaic_kernel" in code and "--fmad=false" in options

            def get_function(self, name):
                return {"ll_noise_kernel": outer.noise_kernel, "ll_lut_kernel": outer.lut_kernel,
                        "ll_batch_kernel": outer.batch_kernel, "ll_phys_mosaic_kernel": outer.mosaic_kernel,
                        "ll_phys_process_kernel": outer.process_kernel}[name]

        self.RawModule = RawModule
        self._pool = Pool()
        self.cuda = mock.Mock(Stream=Stream, alloc_pinned_memory=bytearray,
                              runtime=mock.Mock(getDevice=lambda: 0),
                              memory=mock.Mock(OutOfMemoryError=self.OutOfMemoryError),
                              get_current_stream=Stream)

    def get_default_memory_pool(self):
        """The stand-in pool (set_limit caps each single allocation)."""
        return self._pool

    def empty(self, shape, dtype):
        """An uninitialised array, or OutOfMemoryError above the pool limit."""
        if self.max_alloc is not None and np.prod(shape) * np.dtype(dtype).itemsize > self.max_alloc:
            raise self.OutOfMemoryError(shape)
        return np.empty(shape, dtype).view(StandInArray)

    def empty_like(self, a):
        """empty() with a's shape and dtype."""
        return self.empty(a.shape, a.dtype)

    def ascontiguousarray(self, a):
        """A contiguous stand-in array."""
        return np.ascontiguousarray(a).view(StandInArray)

    def asarray(self, a):
        """A stand-in copy of a host array."""
        return np.array(a).view(StandInArray)

    def noise_kernel(self, grid, block, args):
        """ll_noise_kernel: codes, out, n, first, the 11 scalars of ll_noise_params, the 6 table pointers."""
        self.launches.append(("noise", int(args[2]), int(args[3])))
        codes, out, n, first, *rest = args
        scalars, tables = rest[:11], rest[11:]
        record = np.zeros(1, native.NOISE_PARAMS_DTYPE)
        for name, value in zip(native.NOISE_PARAMS_DTYPE.names, scalars):
            record[name] = value
        n = int(n)
        out[:n] = native.noise_kernel_serial(np.asarray(codes[:n]), record, *map(np.asarray, tables), first=int(first))

    def batch_kernel(self, grid, block, args):
        """ll_batch_kernel: every job of the table."""
        blob, out, jobs = args
        njobs = int(grid[1])
        table = np.asarray(jobs)[:njobs * cupy_backend.JOB_DTYPE.itemsize].view(cupy_backend.JOB_DTYPE)
        images = {}  # input offset -> (values, jobs): what this pass holds on the device
        for row in table:
            values, count = images.get(int(row["codes"]), (int(row["n"]), 0))
            images[int(row["codes"])] = (values, count + 1)
        self.launches.append(("batch", njobs, 0))
        self.batches.append((len(images), sum(v * (1 + c) for v, c in images.values())))
        if self.batch_error is not None:
            error, self.batch_error = self.batch_error, None
            raise error
        time.sleep(self.batch_delay)
        out[...] = native.batch_kernel_serial(np.asarray(blob), out.size, table)

    def lut_kernel(self, grid, block, args):
        """ll_lut_kernel, as a numpy table lookup."""
        self.launches.append(("lut", int(args[2]), 0))
        codes, out, n, lut = args
        out[:int(n)] = np.asarray(lut)[np.asarray(codes[:int(n)])]

    def mosaic_kernel(self, grid, block, args):
        """ll_phys_mosaic_kernel: params, lut, rgb, m, raw_clean, raw_low (null pointers as 64-bit zeros)."""
        self.launches.append(("physics mosaic", 0, 0))
        native.lib().ll_phys_mosaic_serial(*[ptr(a) for a in args])

    def process_kernel(self, grid, block, args):
        """ll_phys_process_kernel: params, thresholds, m, out."""
        self.launches.append(("physics process", 0, 0))
        native.lib().ll_phys_process_serial(*[ptr(a) for a in args])


def install(monkeypatch):
    """Wire the CuPy backend to a fresh StandInCupy (caches cleared; undone when the test ends)."""
    fake = StandInCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_compile, "_modules", {})
    monkeypatch.setattr(cupy_transfer, "_state", cupy_transfer.ThreadState())
    monkeypatch.setattr(cupy_backend, "_available", None)
    monkeypatch.setattr(cupy_backend, "_batcher", cupy_batch.Batcher(cupy_backend._render_batch_or_alone))
    monkeypatch.setattr(cupy_backend, "SETTINGS", cupy_backend.Settings())
    return fake

