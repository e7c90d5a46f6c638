"""The model's CPU library: ``native.cpp`` (the GPU's own headers) built at install, called through ctypes.

Every per-value step of the model (Philox, detmath, the Poisson search, the compose and
quantisation, the camera physics) is C in ``philox.cuh``, ``detmath.cuh``, ``noise.cuh`` and
``physics.cuh``; the GPU compiles those headers with NVRTC and the CPU runs them from this
library, so there is one source of the arithmetic.  ctypes releases the GIL for each call, so
worker threads render side by side.  This module imports nothing of the package: it is the
bottom layer (numerics), with the record layouts the C functions take.
"""

import ctypes
import glob
import os
import threading

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
ABI_VERSION = 1  # native.cpp's LL_ABI_VERSION

# noise.cuh's model codes (ll_noise_params.model) and its guide table shape.
MODEL_POISSON_READ = 0  # poisson-gaussian and brooks: shot noise plus Gaussian read noise
MODEL_POISSON = 1
MODEL_GAUSSIAN = 2
MODEL_CODES = {"poisson-gaussian": MODEL_POISSON_READ, "brooks": MODEL_POISSON_READ, "poisson": MODEL_POISSON,
               "gaussian": MODEL_GAUSSIAN}
GUIDE_BUCKETS = 256

# physics.cuh's component flags (ll_phys_params.flags), by noise.components letter.
PHYS_FLAGS = {"p": 1, "t": 2, "g": 4, "r": 8, "q": 16, "c": 32}
# Counter word 3 of each purpose's draws (philox.cuh, physics.cuh).
STREAMS = {"params": 0, "noise": 1, "physics sites": 80, "physics rows": 81}

# ll_noise_params of noise.cuh, field for field (tests check the C layout against it).
NOISE_PARAMS_DTYPE = np.dtype([("key0", "<u4"), ("key1", "<u4"), ("step", "<u4"), ("model", "<i4"),
                               ("darken", "<i4"), ("linear", "<i4"), ("inv_peak", "<f4"), ("sigma", "<f4"),
                               ("alpha", "<f4"), ("beta", "<f4"), ("gamma", "<f4")], align=True)

# ll_phys_params of physics.cuh, field for field.
PHYS_PARAMS_DTYPE = np.dtype([("key0", "<u4"), ("key1", "<u4"), ("step", "<u4"), ("flags", "<i4"),
                              ("height", "<i8"), ("width", "<i8"), ("raw_width", "<i8"), ("raw_height", "<i8"),
                              ("K", "<f8"), ("read_scale", "<f8"), ("read_lambda", "<f8"), ("row_sigma", "<f8"),
                              ("black", "<f8"), ("white", "<f8"), ("scale", "<f8"), ("bias", "<f8", (4,)),
                              ("rgb2cam", "<f8", (9,)), ("cam2rgb", "<f8", (9,)), ("gains", "<f8", (3,))],
                             align=True)


class NativeUnavailable(ImportError):
    """The model library is not built (or not this version's): reinstall the package."""


_P = ctypes.c_void_p
_I64 = ctypes.c_longlong
_U64 = ctypes.c_ulonglong
_U32 = ctypes.c_uint
_SIGNATURES = {
    "ll_abi_version": (ctypes.c_int, ()),
    "ll_cpu_level": (ctypes.c_int, ()),
    "ll_philox_blocks": (None, (_U64, _I64, _U32, _U32, _U32, _U32, _P)),
    "ll_log_array": (None, (_P, _P, _I64)),
    "ll_exp_array": (None, (_P, _P, _I64)),
    "ll_expm1_array": (None, (_P, _P, _I64)),
    "ll_pow_array": (None, (_P, _P, _P, _I64)),
    "ll_sincos_array": (None, (_P, _P, _P, _I64)),
    "ll_ndtri_array": (None, (_P, _P, _I64)),
    "ll_log_ext_array": (None, (_P, _P, _P, _I64)),
    "ll_log_factorials": (None, (_P, _I64)),
    "ll_phys_poisson_array": (None, (_P, _P, _P, _I64)),
    "ll_box_muller_array": (None, (_P, _P, _P, _P, _I64)),
    "ll_poisson_array": (None, (_P, _P, _P, _P, _I64)),
    "ll_phys_tukey_array": (None, (_P, ctypes.c_double, _P, _I64)),
    "ll_build_tables": (_I64, (_P, _P, _P, _P, _P, _P, _P, _P)),
    "ll_render_noisy": (None, (_P, _P, _I64, _P, _P)),
    "ll_phys_render": (ctypes.c_int, (_P, _P, _P, _P, _P, _P)),
    "ll_phys_raw": (ctypes.c_int, (_P, _P, _P, _P, _P)),
    "ll_phys_sensor_mosaic": (None, (_P, _P, _P)),
    "ll_noise_kernel_serial": (None, (_P, _P, _I64, _I64, _P, _P)),
    "ll_batch_kernel_serial": (None, (_P, _P, _P, ctypes.c_int)),
    "ll_phys_mosaic_serial": (None, (_P, _P, _P, _P, _P, _P)),
    "ll_phys_process_serial": (None, (_P, _P, _P, _P)),
    "ll_record_layout": (ctypes.c_int, (ctypes.c_int, _P)),
    "ll_constants": (ctypes.c_int, (_P,)),
}

_lock = threading.Lock()
_lib = []


def _built(suffix):
    """The built library file of one level (setup.py: _model plus the level's suffix and the platform's), or None."""
    for pattern in (f"_model{suffix}.*.so", f"_model{suffix}.so", f"_model{suffix}.*.pyd", f"_model{suffix}.dylib"):
        found = sorted(glob.glob(os.path.join(_HERE, pattern)))
        if found:
            return found[0]
    return None


def _open(path):
    """dlopen path and declare its functions' argument types."""
    handle = ctypes.CDLL(path)
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.restype, fn.argtypes = restype, argtypes
    if handle.ll_abi_version() != ABI_VERSION:
        raise NativeUnavailable(f"{path} was built from other sources: reinstall the package (pip install -e .) "
                                "to rebuild it")
    return handle


def level():
    """The instruction-set level whose build runs here: 4 (AVX-512), 3 (AVX2) or 0 (baseline).

    LOWLIGHT_CPU_LEVEL caps it (0, 3 or 4): every level gives the same bytes, and the tests check that.
    """
    lib()
    return _lib[1]


def lib():
    """The loaded library (loaded once per process): the widest build this CPU runs."""
    if _lib:
        return _lib[0]
    with _lock:
        if not _lib:
            base = _built("")
            if base is None:
                raise NativeUnavailable("lowlight_gpu's model library is not built: reinstall the package "
                                        "(pip install -e . from a checkout), which needs a C++ compiler "
                                        "(g++ or clang++)")
            handle = _open(base)
            cpu = handle.ll_cpu_level()
            cap = os.environ.get("LOWLIGHT_CPU_LEVEL", "").strip()
            if cap.isdigit():
                cpu = min(cpu, int(cap))
            chosen = 0
            for lvl, suffix in ((4, "_v4"), (3, "_v3")):
                path = _built(suffix) if cpu >= lvl else None
                if path:
                    handle, chosen = _open(path), lvl
                    break
            _lib.extend([handle, chosen])
    return _lib[0]


def _ptr(a):
    """The address of a C-contiguous array (None for None: a null pointer)."""
    return None if a is None else a.ctypes.data


def _in(a, dtype):
    """a as a C-contiguous array of dtype (a copy only where needed)."""
    return np.ascontiguousarray(a, dtype=dtype)


# ---------------------------------------------------------------- Philox and detmath

def philox_blocks(key0, key1, step, stream, start, count):
    """Philox4x32-10 words of blocks [start, start + count) of (key, step, stream) as a (count, 4) uint32 array."""
    out = np.empty((count, 4), np.uint32)
    if count:
        lib().ll_philox_blocks(int(start), int(count), int(step) & 0xFFFFFFFF, int(stream) & 0xFFFFFFFF,
                               int(key0) & 0xFFFFFFFF, int(key1) & 0xFFFFFFFF, _ptr(out))
    return out


def _unary(name):
    """An elementwise float64 function of the library, for arrays or scalars (a 0-d array for a scalar)."""
    def fn(x):
        x = np.asarray(x, dtype=np.float64)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        getattr(lib(), name)(_ptr(flat), _ptr(out), flat.size)
        return out.reshape(x.shape)
    return fn


def _broadcast(*args):
    """The float64 arguments broadcast to one shape, flat and contiguous, with that shape."""
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in args))
    return [np.ascontiguousarray(a).reshape(-1) for a in arrays], arrays[0].shape


log = _unary("ll_log_array")
exp = _unary("ll_exp_array")
expm1 = _unary("ll_expm1_array")
ndtri = _unary("ll_ndtri_array")


def pow(x, y):  # noqa: A001 - the name every reader expects
    """x ** y for x >= 0 (detmath.cuh's ll_dm_pow), elementwise."""
    (xf, yf), shape = _broadcast(x, y)
    out = np.empty_like(xf)
    lib().ll_pow_array(_ptr(xf), _ptr(yf), _ptr(out), xf.size)
    return out.reshape(shape)


def _pair(name):
    """An elementwise function of the library with two float64 results."""
    def fn(x):
        (xf,), shape = _broadcast(x)
        a, b = np.empty_like(xf), np.empty_like(xf)
        getattr(lib(), name)(_ptr(xf), _ptr(a), _ptr(b), xf.size)
        return a.reshape(shape), b.reshape(shape)
    return fn


sincos = _pair("ll_sincos_array")
log_ext = _pair("ll_log_ext_array")


def box_muller(w_radius, w_angle):
    """noise.cuh's Box-Muller: two float32 N(0, 1) arrays from two arrays of 32-bit words."""
    a, b = _in(w_radius, np.uint32).reshape(-1), _in(w_angle, np.uint32).reshape(-1)
    n0, n1 = np.empty(a.size, np.float32), np.empty(a.size, np.float32)
    lib().ll_box_muller_array(_ptr(a), _ptr(b), _ptr(n0), _ptr(n1), a.size)
    return n0, n1


def poisson_sample(thresholds, guide, kshift, normal, lam, codes, words):
    """noise.cuh's Poisson counts (int64) of codes (uint8) from one uint32 word each, through the image's tables."""
    arrays = (_in(thresholds, np.uint32), _in(guide, np.int32), _in(kshift, np.int32), _in(normal, np.uint8),
              _in(lam, np.float64))
    tables = _Tables(*(_ptr(a) for a in arrays), None)
    codes, words = _in(codes, np.uint8).reshape(-1), _in(words, np.uint32).reshape(-1)
    out = np.empty(codes.size, np.int64)
    lib().ll_poisson_array(ctypes.addressof(tables), _ptr(codes), _ptr(words), _ptr(out), codes.size)
    return out


def phys_poisson(lam, u):
    """Poisson counts (float64) of rates lam from uniforms u in (0, 1): physics.cuh's exact inversion."""
    (lf, uf), shape = _broadcast(lam, u)
    out = np.empty_like(lf)
    lib().ll_phys_poisson_array(_ptr(lf), _ptr(uf), _ptr(out), lf.size)
    return out.reshape(shape)


def phys_tukey(u, lam):
    """Tukey-lambda quantiles of uniforms u in (0, 1) for the shape lam (physics.cuh)."""
    (uf,), shape = _broadcast(u)
    out = np.empty_like(uf)
    lib().ll_phys_tukey_array(_ptr(uf), float(lam), _ptr(out), uf.size)
    return out.reshape(shape)


# ---------------------------------------------------------------- Poisson tables

def log_factorials(n):
    """log(k!) for k = 0..n-1 (float64)."""
    out = np.empty(max(int(n), 0), np.float64)
    lib().ll_log_factorials(_ptr(out), out.size)
    return out


def build_tables(lam, log_lam, lo, hi, logfact):
    """(thresholds, guide, kshift) of the inversion tables for 256 rates, from their bounds [lo, hi)."""
    lam, log_lam, logfact = (_in(a, np.float64) for a in (lam, log_lam, logfact))
    lo, hi = _in(lo, np.int64), _in(hi, np.int64)
    thresholds = np.empty(max(int((hi - lo).sum()), 1), np.uint32)
    guide = np.empty(256 * (GUIDE_BUCKETS + 1), np.int32)
    kshift = np.empty(256, np.int32)
    m = lib().ll_build_tables(_ptr(lam), _ptr(log_lam), _ptr(lo), _ptr(hi), _ptr(logfact), _ptr(thresholds),
                              _ptr(guide), _ptr(kshift))
    return thresholds[:m].copy(), guide, kshift


# ---------------------------------------------------------------- the model's images

class _Tables(ctypes.Structure):
    """ll_tables of noise.cuh: six pointers."""

    _fields_ = [("thresholds", _P), ("guide", _P), ("kshift", _P), ("normal", _P), ("lam", _P), ("signal", _P)]


def _noise_call(fn, codes, record, sections, *extra):
    """fn(codes, out, n, *extra, record, tables) of the library on the flat uint8 codes; returns out.

    sections are the image's per-code arrays in ll_tables order (records.noise_sections); they stay
    referenced here for the length of the call.
    """
    codes = _in(codes, np.uint8).reshape(-1)
    record = _in(record, NOISE_PARAMS_DTYPE)
    arrays = [_in(a, t) for a, t in zip(sections, (np.uint32, np.int32, np.int32, np.uint8, np.float64, np.float32))]
    tables = _Tables(*(_ptr(a) for a in arrays))
    out = np.empty_like(codes)
    fn(_ptr(codes), _ptr(out), codes.size, *extra, _ptr(record), ctypes.addressof(tables))
    return out


def render_noisy(codes, record, thresholds, guide, kshift, normal, lam, signal32):
    """Noisy uint8 codes of the flat uint8 codes under one ll_noise_params record and the image's tables."""
    return _noise_call(lib().ll_render_noisy, codes, record, (thresholds, guide, kshift, normal, lam, signal32))


def render_physics(record, lut, thresholds, rgb):
    """The physics low image (H, W, 3) uint8 of an (H, W, 3) uint8 image under one ll_phys_params record."""
    rgb = _in(rgb, np.uint8)
    record = _in(record, PHYS_PARAMS_DTYPE)
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    if h and w:
        m = np.empty(3 * w, np.float64)  # a ring of three gained mosaic rows
        if lib().ll_phys_render(_ptr(record), _ptr(_in(lut, np.float64)), _ptr(_in(thresholds, np.float64)),
                                _ptr(rgb), _ptr(m), _ptr(out)):
            raise MemoryError(f"no memory for the physics rows of a {w}-pixel-wide image")
    return out


def render_physics_raw(record, lut, rgb):
    """(raw_clean, raw_low) uint16 mosaics of the record's even crop."""
    rgb = _in(rgb, np.uint8)
    record = _in(record, PHYS_PARAMS_DTYPE)
    rh, rw = int(record["raw_height"][0]), int(record["raw_width"][0])
    clean = np.empty((rh, rw), np.uint16)
    low = np.empty((rh, rw), np.uint16)
    if rh and rw and lib().ll_phys_raw(_ptr(record), _ptr(_in(lut, np.float64)), _ptr(rgb), _ptr(clean), _ptr(low)):
        raise MemoryError(f"no memory for the physics rows of a {rw}-pixel-wide mosaic")
    return clean, low


def sensor_noise(record, x):
    """Sensor DN of a clean (H, W) DN mosaic x under one ll_phys_params record (its height and width are x's)."""
    x = _in(x, np.float64)
    record = _in(record, PHYS_PARAMS_DTYPE)
    assert x.shape == (int(record["height"][0]), int(record["width"][0])), "the record's size is the mosaic's"
    out = np.empty_like(x)
    if x.size:
        lib().ll_phys_sensor_mosaic(_ptr(record), _ptr(x), _ptr(out))
    return out


# ---------------------------------------------------------------- the GPU kernels' bodies, serially (tests)

def noise_kernel_serial(codes, record, thresholds, guide, kshift, normal, lam, signal32, first=0):
    """ll_noise_kernel's body over the flat codes, as values [first, first + n) of an image: one GPU thread's work."""
    return _noise_call(lib().ll_noise_kernel_serial, codes, record, (thresholds, guide, kshift, normal, lam, signal32),
                       int(first))


def batch_kernel_serial(blob, out_size, jobs):
    """ll_batch_kernel's body over every job of a structured job table (cupy_backend.JOB_DTYPE)."""
    blob = _in(blob, np.uint8)
    jobs = np.ascontiguousarray(jobs)
    out = np.zeros(int(out_size), np.uint8)
    lib().ll_batch_kernel_serial(_ptr(blob), _ptr(out), _ptr(jobs), len(jobs))
    return out


def physics_kernels_serial(record, lut, thresholds, rgb, image=True, raw=False):
    """(image, raw_clean, raw_low) by the two physics kernels' bodies site by site and pixel by pixel."""
    rgb = _in(rgb, np.uint8)
    record = _in(record, PHYS_PARAMS_DTYPE)
    h, w = rgb.shape[:2]
    m = np.empty(h * w, np.float64) if image else None
    rh, rw = int(record["raw_height"][0]), int(record["raw_width"][0])
    clean = np.empty((rh, rw), np.uint16) if raw else None
    low = np.empty((rh, rw), np.uint16) if raw else None
    lib().ll_phys_mosaic_serial(_ptr(record), _ptr(_in(lut, np.float64)), _ptr(rgb), _ptr(m), _ptr(clean), _ptr(low))
    out = None
    if image:
        out = np.empty((h, w, 3), np.uint8)
        lib().ll_phys_process_serial(_ptr(record), _ptr(_in(thresholds, np.float64)), _ptr(m), _ptr(out))
    return out, clean, low


def record_layout(which):
    """(size, field offsets) of a C record: 'noise' (ll_noise_params), 'physics' (ll_phys_params) or 'job' (ll_job)."""
    out = np.zeros(32, np.int64)
    n = lib().ll_record_layout({"noise": 0, "physics": 1, "job": 2}[which], _ptr(out))
    return int(out[0]), [int(v) for v in out[1:n + 1]]


def constants():
    """The C side's model codes, component flags and streams, in native.cpp's ll_constants order."""
    out = np.zeros(32, np.int64)
    n = lib().ll_constants(_ptr(out))
    return [int(v) for v in out[:n]]
