"""GPU backend: the CPU backend's images, rendered by fused CUDA kernels through CuPy.

The CPU still computes every parameter (scalars, the 256-entry LUTs, the Poisson
tables of ``synth/poisson.py``); the GPU only does per-value work, in one fused
kernel per output image (``synth/kernels.cu``).  Only uint8 images and the small
tables cross PCIe; float data lives in registers.  Noise words come from the
same Philox4x32-10 counters as ``philox.cuh`` (``rng.py``) (never CuPy's own generators) and the
kernels do the reference's arithmetic with ``detmath.cuh``, so the images are
``numpy_backend.render``'s to the bit (ARCHITECTURE.md, "Reproducibility").

This module dispatches: it packs each output's arguments and tables (``_Job``),
launches the kernels, slices an image after an out-of-memory error, and sends
small images to the batcher.  Its helpers each do one job: ``cupy_compile``
(source, options, one build per device), ``cupy_transfer`` (blob layout, each
thread's stream and pinned buffers) and ``cupy_batch`` (group commit of small
images across threads).  The pipeline calls ``render_many`` from many worker
threads at once.  Never fork a process after CUDA has been initialised (a forked
child cannot use the parent's CUDA context): use threads, or start worker
processes with the "spawn"/"forkserver" method.
"""

import dataclasses
import sys
import threading

import numpy as np

from . import cupy_batch, cupy_compile, cupy_transfer
from .cupy_batch import MAX_BATCH_JOBS, Request as _Request  # noqa: F401 - names tests and gpu_check use
from .cupy_compile import (COMPILE_OPTIONS, CUPY_ADDED_OPTIONS, KERNEL_FILE,  # noqa: F401
                           SOURCE_DIR, kernel_source, source_files)
from .cupy_transfer import device_views as _device_views
from .cupy_transfer import fill as _fill
from .cupy_transfer import layout as _layout
from .cupy_transfer import padded as _padded
from . import native, records
from .numpy_backend import render as numpy_render
from .records import noise_step, noise_tables  # noqa: F401 - names tests use
from .signal import clean_lut

NAME = "cupy"

LUT_MAX_GRID = 4096          # the LUT kernel loops; more blocks would only reload the table
THREADS_PER_BLOCK = 256
MAX_GRID = 1 << 20           # grid-stride loops cover anything larger
MIN_SLICE_VALUES = 1 << 16   # smallest slice the out-of-memory fallback tries


# Images up to this many values (87K RGB pixels, e.g. 256 x 341) are batched across threads.  For
# them the per-image CUDA calls and synchronisation cost as much as the work; larger images gain
# nothing, and each thread rendering its own keeps their copies running in parallel.
SMALL_IMAGE_VALUES = 1 << 18

_NOISE_PARAM_FIELDS = [(name, native.NOISE_PARAMS_DTYPE.fields[name][0].str)
                       for name in native.NOISE_PARAMS_DTYPE.names]  # ll_noise_params, in noise_args order
# ll_job of batch.cuh, field for field (tests/test_cuda_sources.py checks the C layout against it).
JOB_DTYPE = np.dtype([("codes", "<i8"), ("out", "<i8"), ("n", "<i8"), ("tables", "<i8", (6,)),
                      *_NOISE_PARAM_FIELDS, ("clean", "<i4")], align=True)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much one device pass holds, and whether small images are batched (configure() sets SETTINGS)."""

    slice_values: int = 48_000_000 * 3  # values per slice (and twice this per batch)
    batch_small_images: bool = True


SETTINGS = Settings()
_probe_lock = threading.Lock()
_available = None


def effective_name(model):
    """What the manifest records as this backend: 'cupy'."""
    return NAME


# ---------------------------------------------------------------- availability and configuration

def available():
    """(True, "") when CuPy can compile and run this backend's kernels here, else (False, reason); cached."""
    global _available
    if _available is None:
        with _probe_lock:
            if _available is None:
                _available = _probe()
    return _available


def _probe():
    """Compile the kernels and render a tiny image with each of them."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install raising something else
        return False, f"cupy is not importable: {type(exc).__name__}: {exc}"
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * np.uint8(13)
    params = {"seed": 7, "alpha": 0.9, "beta": 0.8, "gamma": 2.0,
              "noise": {"model": "poisson-gaussian", "peak": 200.0, "read_sigma": 0.01,
                        "order": "after", "space": "srgb"}}
    specs = [(None, True), (None, False)]
    try:
        noisy, clean = render_many(rgb, params, specs, slice_values=2 * rgb.size)  # per-image kernels
        batched = _render_batch([_Request(rgb, [_Job(params, t, n) for t, n in specs])])  # the batch kernel
    except Exception as exc:
        return False, f"CuPy could not run the kernels: {type(exc).__name__}: {exc}"
    # Both images must equal the CPU library's to the bit.
    if (not np.array_equal(clean, clean_lut(params, None, "srgb")[rgb]) or not np.array_equal(noisy, numpy_render(rgb, params))
            or not all(np.array_equal(a, b) for a, b in zip(batched, (noisy, clean)))):
        return False, "CuPy kernels ran but returned wrong values"
    return True, ""


def configure(batch_megapixels=None, memory_limit_gb=None, batch_small_images=None):
    """Set the largest slice (or batch) one pass keeps on the GPU, cap CuPy's memory pool, switch batching.

    Replaces SETTINGS, the options render_many uses unless it is given its own; returns them.
    """
    global SETTINGS
    if batch_megapixels is not None:
        SETTINGS = dataclasses.replace(
            SETTINGS, slice_values=_even(max(MIN_SLICE_VALUES, int(batch_megapixels * 1e6) * 3)))
    if batch_small_images is not None:
        SETTINGS = dataclasses.replace(SETTINGS, batch_small_images=bool(batch_small_images))
    if memory_limit_gb is not None:
        import cupy

        cupy.get_default_memory_pool().set_limit(size=int(memory_limit_gb * 2 ** 30))


def _even(n):
    """n rounded down to an even count (a slice must start on a Philox block)."""
    return int(n) & ~1


# ---------------------------------------------------------------- per-image parameters (CPU)

def noise_args(params, t):
    """The scalar kernel arguments of one noisy image, in ll_noise_kernel's order (records.noise_record's fields)."""
    rec = records.noise_record(params, t)[0]
    return tuple(rec[name] for name in rec.dtype.names)


noise_sections = records.noise_sections


class _Job:
    """One requested output: a LUT (noise-free) or scalar args plus per-code tables (noisy)."""

    def __init__(self, params, t, noisy):
        noise = params["noise"]
        self.clean = not noisy or noise["model"] == "none"
        if self.clean:
            self.args = ()
            self.sections = (clean_lut(params, t, noise["space"]),)
        else:
            self.args = noise_args(params, t)
            self.sections = noise_sections(params, t)
        self.offsets = ()


# ---------------------------------------------------------------- kernel launches

def _launch(job, views, d_codes, d_out, first):
    """Run the job's kernel on one slice of codes whose first value has global index `first`."""
    kernels = cupy_compile.kernels()
    n = d_codes.size
    if job.clean:
        grid = max(1, min(LUT_MAX_GRID, -(-n // (16 * THREADS_PER_BLOCK))))
        kernels.lut((grid,), (THREADS_PER_BLOCK,), (d_codes, d_out, np.int64(n), views[0]))
    else:
        grid = max(1, min(MAX_GRID, -(-((n + 1) // 2) // THREADS_PER_BLOCK)))
        kernels.noise((grid,), (THREADS_PER_BLOCK,),
                      (d_codes, d_out, np.int64(n), np.int64(first), *job.args, *views))


# ---------------------------------------------------------------- rendering

def _is_cupy(arr):
    """True for a cupy.ndarray (without importing CuPy when it was never imported)."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(arr, cupy.ndarray)


def _check_input(rgb):
    """Reject arrays the 8-bit tables cannot index."""
    if rgb.dtype != np.uint8:
        raise TypeError(f"cupy backend renders uint8 images, got dtype {rgb.dtype}")


def render(rgb, params, t=None, noisy=True):
    """The low image of step t (None: the one-shot image) for an 8-bit (H, W, 3) array (numpy or CuPy)."""
    return render_many(rgb, params, [(t, noisy)])[0]


def render_many(rgb, params, specs, *, slice_values=None, settings=None):
    """One low image per (t, noisy) in specs, uploading rgb once; numpy in -> numpy out, CuPy in -> CuPy out.

    ``settings`` (default SETTINGS) bound each device pass; ``slice_values`` forces slices of that size, alone.
    """
    settings = settings or SETTINGS
    if params["noise"]["model"] == "physics" and any(noisy for _, noisy in specs):
        from . import physics_gpu  # two kernels of physics.cuh per noisy image

        return physics_gpu.render_many(rgb, params, specs)
    if not _is_cupy(rgb):
        rgb = np.asarray(rgb)
    _check_input(rgb)
    jobs = [_Job(params, t, noisy) for t, noisy in specs]
    if _is_cupy(rgb):
        return _render_on_device(rgb, jobs)
    if not jobs:
        return []
    rgb = np.ascontiguousarray(rgb)
    if settings.batch_small_images and slice_values is None and 0 < rgb.size <= SMALL_IMAGE_VALUES:
        return _batcher.render(_Request(rgb, jobs), 2 * settings.slice_values)
    return _render_from_host(rgb, jobs, slice_values or settings.slice_values)


def _render_on_device(rgb, jobs):
    """Render a CuPy input on the caller's current stream; results stay on the GPU."""
    import cupy

    flat = cupy.ascontiguousarray(rgb).reshape(-1)
    blob = np.zeros(_layout(jobs), np.uint8)
    _fill(blob, jobs)
    for attempt in (0, 1):
        try:
            return [out.reshape(rgb.shape) for out in _device_outputs(flat, blob, jobs)]
        except cupy.cuda.memory.OutOfMemoryError:
            if attempt:
                raise
        # Every output must exist whole on the device, so slicing cannot help here: free the
        # pool's cached blocks (the failed try's buffers are unreferenced by now) and retry once.
        cupy.cuda.get_current_stream().synchronize()
        cupy.get_default_memory_pool().free_all_blocks()


def _device_outputs(flat, blob, jobs):
    """Upload the tables and run every job on device codes; one new flat output array per job."""
    import cupy

    d_blob = cupy.empty(blob.size, cupy.uint8)
    d_blob.set(blob)  # on the current stream; pageable memory is staged before set() returns
    outs = []
    for job in jobs:
        out = cupy.empty_like(flat)
        _launch(job, _device_views(d_blob, job), flat, out, 0)
        outs.append(out)
    return outs


def _render_from_host(rgb, jobs, slice_values):
    """Render a numpy input through this thread's stream and pinned buffers; returns numpy arrays."""
    n = rgb.size
    if n == 0:
        return [np.empty_like(rgb) for _ in jobs]
    blob = cupy_transfer.pinned("tables", _layout(jobs))
    _fill(blob, jobs)
    codes = cupy_transfer.pinned("codes", n)
    np.copyto(codes, rgb.reshape(-1))
    outs = cupy_transfer.pinned("outs", n * len(jobs))
    _run_with_fallback(codes, blob, jobs, outs, _even(max(2, min(slice_values, n + (n & 1)))))
    return [outs[i * n:(i + 1) * n].copy().reshape(rgb.shape) for i in range(len(jobs))]


def _slice_attempts(slice_values):
    """Slice sizes to try in turn: the configured one, quartered down to MIN_SLICE_VALUES, that once more."""
    sizes = [slice_values]
    while sizes[-1] > MIN_SLICE_VALUES:
        sizes.append(_even(max(MIN_SLICE_VALUES, sizes[-1] // 4)))
    return sizes + [sizes[-1]]


def _run_with_fallback(codes, blob, jobs, outs, slice_values):
    """Run the device pass on this thread's stream, in smaller slices after an out-of-memory error."""
    import cupy

    stream = cupy_transfer.stream()
    attempts = _slice_attempts(slice_values)
    try:
        for i, size in enumerate(attempts):
            try:
                with stream:
                    _device_pass(codes, blob, jobs, outs, size, stream)
                return
            except cupy.cuda.memory.OutOfMemoryError:
                if i == len(attempts) - 1:
                    raise
            # Out of device memory: redo this image in smaller slices of the flat array.
            # Each slice passes its global value offset to the kernel, so every value
            # still draws the same Philox counter and the output equals an unsplit run.
            # (Out here the failed pass's buffers are unreferenced, so the pool can free them.)
            stream.synchronize()
            cupy.get_default_memory_pool().free_all_blocks()
    finally:
        # Also after an error: the next call rewrites the pinned buffers this call's copies use.
        stream.synchronize()


def _device_pass(codes, blob, jobs, outs, slice_values, stream):
    """Upload tables and codes, run every job slice by slice, queue the results into pinned `outs`."""
    import cupy

    n = codes.size
    d_blob = cupy.empty(blob.size, cupy.uint8)
    d_blob.set(blob, stream=stream)
    views = [_device_views(d_blob, job) for job in jobs]
    size = min(slice_values, n)
    d_codes = cupy.empty(size, cupy.uint8)
    d_out = cupy.empty(size, cupy.uint8)  # one buffer for all jobs: the stream orders reuse after each copy-out
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        d_in = d_codes[:hi - lo]
        d_in.set(codes[lo:hi], stream=stream)
        for i, job in enumerate(jobs):
            _launch(job, views[i], d_in, d_out[:hi - lo], lo)
            d_out[:hi - lo].get(stream=stream, out=outs[i * n + lo:i * n + hi], blocking=False)


# ---------------------------------------------------------------- batching small images across threads

# Small images: group commit across threads (cupy_batch); each pass renders through _render_batch_or_alone.
_batcher = cupy_batch.Batcher(lambda batch: _render_batch_or_alone(batch))


def _render_batch_or_alone(batch):
    """Fill each request's outputs (or error): one batched pass, or image by image after out-of-memory."""
    import cupy

    try:
        outputs = _render_batch(batch)
    except cupy.cuda.memory.OutOfMemoryError:
        outputs = None  # each image alone, with the per-image slicing fallback
    except Exception as exc:  # noqa: BLE001 - every waiting thread re-raises it
        for req in batch:
            req.error = exc
        return
    start = 0
    for req in batch:
        if outputs is not None:
            req.outputs = outputs[start:start + len(req.jobs)]
            start += len(req.jobs)
            continue
        try:
            req.outputs = _render_from_host(req.rgb, req.jobs, SETTINGS.slice_values)
        except Exception as exc:  # noqa: BLE001
            req.error = exc


def _render_batch(batch):
    """Every job of every request in one upload, one launch and one download; the images, in order."""
    import cupy

    # The blob: every input image, then every job's tables, then the job table.
    inputs_at, size = [], 0
    for req in batch:
        inputs_at.append(size)
        size += _padded(req.rgb.size)
    jobs = [job for req in batch for job in req.jobs]
    table_at = _layout(jobs, size)
    size = table_at + JOB_DTYPE.itemsize * len(jobs)
    blob = cupy_transfer.pinned("batch_blob", size)
    _fill(blob, jobs)
    table = np.zeros(len(jobs), JOB_DTYPE)
    k = out_at = 0
    for req, at in zip(batch, inputs_at):
        n = req.rgb.size
        blob[at:at + n] = req.rgb.reshape(-1)
        for job in req.jobs:
            row = table[k]  # a view: assignments land in the table
            row["codes"], row["out"], row["n"], row["clean"] = at, out_at, n, job.clean
            row["tables"][:len(job.offsets)] = job.offsets
            for (name, _), value in zip(_NOISE_PARAM_FIELDS, job.args):
                row[name] = value
            k, out_at = k + 1, out_at + n
    blob[table_at:size] = table.view(np.uint8)
    outs = cupy_transfer.pinned("batch_outs", out_at)
    pairs = (max(req.rgb.size for req in batch) + 1) // 2  # the largest image sets the grid's width
    stream = cupy_transfer.stream()
    try:
        with stream:
            d_blob = cupy.empty(size, cupy.uint8)
            d_blob.set(blob, stream=stream)
            d_out = cupy.empty(out_at, cupy.uint8)
            grid = (max(1, min(MAX_GRID, -(-pairs // THREADS_PER_BLOCK))), len(jobs))
            cupy_compile.kernels().batch(grid, (THREADS_PER_BLOCK,), (d_blob, d_out, d_blob[table_at:]))
            d_out.get(stream=stream, out=outs, blocking=False)
    finally:
        stream.synchronize()  # also after an error: the next pass rewrites these pinned buffers
    shapes = [req.rgb.shape for req in batch for _ in req.jobs]
    return [outs[at:at + n].copy().reshape(shape)
            for at, n, shape in zip(table["out"].tolist(), table["n"].tolist(), shapes)]


def render_raw(rgb, params, t=None):
    """(raw_clean, raw_low) uint16 RGGB mosaics of a physics pair at step t, rendered on the GPU (physics_gpu)."""
    from . import physics_gpu

    return physics_gpu.render_raw(rgb, params, t)
