"""Compiling the CuPy backend's CUDA kernels: the inlined source, the options, one build per device.

The kernels are compiled once per process (under a lock) by NVRTC the first time
they are needed, which takes about a second; CuPy also caches the binary on disk
(``~/.cupy/kernel_cache``, or ``$CUPY_CACHE_DIR``), so later processes load it in
milliseconds.
"""

import re
import threading
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
KERNEL_FILE = "kernels.cu"
# --fmad=false: numpy rounds a*b and then +c; a fused multiply-add would round once.
# CuPy appends -ftz=true itself; flushing float32 subnormals to zero cannot move an
# output code (they quantize to 0 either way), so it is left as CuPy sets it.
COMPILE_OPTIONS = ("--std=c++17", "--fmad=false")
CUPY_ADDED_OPTIONS = ("-ftz=true",)

_compile_lock = threading.Lock()
_modules = {}                # device id -> Kernels


def kernel_source():
    """The CUDA source of every kernel, with the local headers inlined."""
    # Inlining (instead of -I) makes CuPy's disk-cache key, a hash of the source
    # text and options, change whenever a header changes.
    return _inline(SOURCE_DIR / KERNEL_FILE, set())


def _inline(path, seen):
    """The text of path with each #include "local.cuh" replaced by that file, once."""
    out = []
    for line in path.read_text().splitlines():
        match = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
        if match:
            name = match.group(1)
            if name not in seen:
                seen.add(name)
                out.append(_inline(path.parent / name, seen))
            continue
        if re.match(r"\s*#\s*pragma\s+once", line):
            continue  # meaningless once inlined, and NVRTC warns about it in a main file
        out.append(line)
    return "\n".join(out) + "\n"


def source_files():
    """Paths of the CUDA files the backend compiles (for tests and packaging checks)."""
    return [SOURCE_DIR / KERNEL_FILE, SOURCE_DIR / "batch.cuh", SOURCE_DIR / "noise.cuh", SOURCE_DIR / "philox.cuh",
            SOURCE_DIR / "detmath.cuh", SOURCE_DIR / "physics.cuh"]


class Kernels:
    """The compiled kernels of one device: the Lv models' and the physics model's."""

    def __init__(self, module):
        self.noise = module.get_function("ll_noise_kernel")
        self.lut = module.get_function("ll_lut_kernel")
        self.batch = module.get_function("ll_batch_kernel")
        self.mosaic = module.get_function("ll_phys_mosaic_kernel")
        self.process = module.get_function("ll_phys_process_kernel")


def kernels():
    """The Kernels of the current device, compiled once per process."""
    import cupy

    key = cupy.cuda.runtime.getDevice()
    kernels = _modules.get(key)
    if kernels is None:
        with _compile_lock:
            kernels = _modules.get(key)
            if kernels is None:
                kernels = Kernels(cupy.RawModule(code=kernel_source(), options=COMPILE_OPTIONS))
                _modules[key] = kernels
    return kernels
