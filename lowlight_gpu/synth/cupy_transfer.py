"""Host-device plumbing of the CuPy backend: the table blob's layout, each thread's stream and pinned buffers.

Each worker thread gets its own non-blocking CUDA stream and its own page-locked
staging buffers, so one thread's copies and kernels overlap with the decoding
and encoding done by the others.
"""

import threading

import numpy as np

ALIGN = 256                  # byte alignment of each table inside the uploaded blob


def padded(nbytes):
    """nbytes rounded up to a whole number of ALIGN-byte units (at least one)."""
    return -(-max(nbytes, 1) // ALIGN) * ALIGN


def layout(jobs, start=0):
    """Assign each job's sections a 256-byte-aligned offset in one blob, from `start`; return the end."""
    size = start
    for job in jobs:
        offsets = []
        for arr in job.sections:
            offsets.append(size)
            size += padded(arr.nbytes)
        job.offsets = tuple(offsets)
    return size


def fill(blob, jobs):
    """Copy every job's sections into the host blob at their offsets."""
    for job in jobs:
        for off, arr in zip(job.offsets, job.sections):
            blob[off:off + arr.nbytes] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def device_views(d_blob, job):
    """The job's sections as typed device arrays inside the uploaded blob."""
    return tuple(d_blob[off:off + arr.nbytes].view(arr.dtype) for off, arr in zip(job.offsets, job.sections))


class ThreadState(threading.local):
    """Each thread's CUDA stream and page-locked staging buffers."""

    def __init__(self):
        self.stream = None
        self.pinned = {}


_state = ThreadState()


def stream():
    """This thread's non-blocking stream (it never waits on the legacy default stream)."""
    import cupy

    if _state.stream is None:
        _state.stream = cupy.cuda.Stream(non_blocking=True)
    return _state.stream


def pinned(name, nbytes):
    """This thread's page-locked buffer `name`, at least nbytes long (grown, never shrunk)."""
    import cupy

    buf = _state.pinned.get(name)
    if buf is None or buf.size < nbytes:
        capacity = max(nbytes, 0 if buf is None else buf.size + buf.size // 4, 4096)
        mem = cupy.cuda.alloc_pinned_memory(capacity)
        buf = np.ndarray((capacity,), np.uint8, buffer=mem)
        _state.pinned[name] = buf
    return buf[:nbytes]
