"""Workers: threads of this process, or worker processes (whole pairs for the CPU backend, encoding for a
process that owns the CUDA context).

Two ways to start worker processes, chosen per pool (``start_method``):

* **fork** -- the CPU backend, from a process running no other thread.  The workers are copies of this
  process, made after it has imported the pipeline and loaded the compiled noise kernels, so each starts in
  milliseconds instead of paying a fresh interpreter's imports and kernel load; on a small machine that
  is a large share of a short run.  The pool is made before the run opens its lock and journal, so no
  worker holds their file descriptors.
* **loky** (fork+exec, joblib's) -- everywhere else: a process with other threads (a fork copies locks a
  thread may hold), workers that use CUDA (a forked child of a CUDA process cannot use it and may hang), or
  a platform other than Linux.  Unlike multiprocessing's spawn and forkserver, loky does not re-run the
  caller's ``__main__`` module in its workers, so a script without a ``__main__`` guard still works.

Results always come back in submission order, with a bounded number in flight (in_order).  This module
imports nothing heavy: joblib (for loky) only when loky starts workers.
"""

import collections
import gc
import os
import sys
import threading
import time

EXECUTORS = ("threads", "processes", "encode-pool")
EXECUTOR_ENV = "LOWLIGHT_GPU_EXECUTOR"

_POOL = {}  # processes -> the ProcessPoolExecutor, kept for later runs of this process
_RELEASE_AT_EXIT = []  # [True] once release() is registered to run at exit


def resolve_workers(workers):
    """The worker count for 'auto' or an int: the CPUs this process may use."""
    if workers != "auto":
        return int(workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def choose_executor(backend, workers, engine=None, gpu_decode=False):
    """How local work runs: threads, processes or encode-pool; $LOWLIGHT_GPU_EXECUTOR overrides the choice.

    fpng holds the GIL while it encodes, and so does the per-pair Python around it, so threads of one process
    stop scaling once encoding is cheap.  The CPU backend runs whole pairs in worker processes.  The GPU
    backend (or GPU decoding) keeps one process that owns the CUDA context -- decode, render and batching stay
    in its threads, so one context and one batcher serve them all -- and sends only encoding and writing to
    worker processes; a context per worker process would split the batcher and time-slice the GPU.
    """
    if engine is not None:
        return "threads"  # a Dask cluster runs the pairs; no local pool
    chosen = os.environ.get(EXECUTOR_ENV, "").strip()
    if chosen:
        if chosen not in EXECUTORS:
            from .errors import ConfigError

            raise ConfigError(f"{EXECUTOR_ENV}={chosen!r}: expected one of {', '.join(EXECUTORS)} (or leave it unset)")
        return chosen
    if workers < 2:
        return "threads"
    return "encode-pool" if backend == "cupy" or gpu_decode else "processes"


def start_method(executor, backend="numpy", gpu_decode=False):
    """'fork' when executor's workers may be forked from this process (see the module docstring), else 'loky'.

    Only workers that never touch CUDA are forked: those of the CPU backend with the CPU decoder.
    """
    cpu_only = backend == "numpy" and not gpu_decode
    if executor != "processes" or not cpu_only or sys.platform != "linux" or threading.active_count() > 1:
        return "loky"
    return "fork"


def pool(processes, method="loky"):
    """The worker processes (whole pairs, or encoding for a CUDA-owning process); started once, then reused."""
    executor = _POOL.get(processes)
    if executor is None:
        release()
        if method == "fork":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            options = {"mp_context": multiprocessing.get_context("fork")}
        else:
            from joblib.externals.loky import ProcessPoolExecutor

            options = {}
        executor = ProcessPoolExecutor(max_workers=processes, initializer=watch_parent, initargs=(os.getpid(),),
                                       **options)
        # Forked workers are all made at the first submit.  Frozen, this process's objects are left alone by
        # their garbage collector, so the pages stay shared instead of being copied on its first collection.
        gc.freeze()
        try:
            for _ in range(processes):  # started now (loky's import the pipeline), while this process prepares
                executor.submit(worker_ready)
        finally:
            gc.unfreeze()
        if not _RELEASE_AT_EXIT:
            import atexit

            # Stopped before the interpreter tears its modules down: the pool's own callbacks need them.
            atexit.register(release)
            _RELEASE_AT_EXIT.append(True)
        _POOL[processes] = executor
    return executor


def release():
    """Stop this process's worker processes and wait for them (10-80 ms), leaving no thread of the pool behind:
    a later run in this process can then fork its workers again (start_method)."""
    for executor in _POOL.values():
        executor.shutdown(wait=True)
    _POOL.clear()


def watch_parent(parent):
    """In a worker process: exit as soon as its parent (pid) is gone, even after a SIGKILL.

    A worker otherwise waits forever for work from a parent that was killed.  The pid comes from the parent
    itself: one killed while this worker was still starting is already gone when this runs.  SIGINT and
    SIGTERM (a terminal's Ctrl-C and SLURM reach the whole process group) are left to the parent, which stops
    between pairs and then shuts the pool down; a worker stopped inside a kernel would fail its pair instead.
    """
    import signal

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="lowlight-gpu-parent-watch", daemon=True).start()


def worker_ready():
    """A worker's first task, which starts it: loads fpng (if it is not loaded yet) and returns the worker's pid."""
    from . import encode

    encode.fpng_version()
    return os.getpid()


def in_threads(calls, workers):
    """Run (fn, args, kwargs) calls in this process, in `workers` threads (one: the calling thread), results in order."""
    if workers < 2:
        for fn, args, kwargs in calls:
            yield fn(*args, **kwargs)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lowlight-gpu-worker") as executor:
        yield from in_order(executor, calls, 2 * workers)


def in_order(executor, calls, window):
    """Submit (fn, args, kwargs) calls to executor with at most window in flight; yield their results in call order."""
    pending = collections.deque()
    try:
        for fn, args, kwargs in calls:
            pending.append(executor.submit(fn, *args, **kwargs))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # Stopped early (an error, Ctrl-C): drop what has not started and wait for what has, so no worker is
        # still writing an output when the caller returns (a rerun would write the same temporary file).
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                try:
                    future.result()
                except Exception:  # noqa: BLE001 - its pair is simply not recorded; the next run redoes it
                    pass
