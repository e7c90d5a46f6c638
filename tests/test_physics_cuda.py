"""physics.cuh checked without a GPU: host-compiled kernel bodies equal the numpy reference to the bit.

tests/host_physics.cpp compiles the __host__ __device__ code of physics.cuh for the
CPU (g++, -ffp-contract=off as the GPU build uses --fmad=false); physics_gpu's
driver then runs with numpy as its array module and those bodies as its kernels.
The CUDA build of the kernels for Hopper is checked with nvcc where it exists.
"""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import physics, physics_gpu

GXX = shutil.which("g++")
NVCC = shutil.which("nvcc")
REPO = Path(__file__).resolve().parent.parent
SYNTH = physics_gpu.SOURCE.parent

CASES = [  # (config noise keys, progressive steps or None, step t, image shape)
    ({"camera": "virtual"}, None, None, (23, 37)),
    ({"camera": "SonyA7S2", "components": "pgrqc"}, None, None, (16, 20)),
    ({"camera": "IMX686", "components": "ptc", "gain": [0.02, 0.02]}, None, None, (9, 11)),  # lam > 1e4
    ({"camera": "CRVD", "components": "pt"}, None, None, (1, 5)),
    ({"camera": "CanonEOS700D", "components": ""}, None, None, (2, 2)),
    ({"camera": "NikonD850", "components": "ptrqc"}, 3, 1, (12, 13)),
]


def build_host_library(folder):
    """tests/host_physics.cpp compiled with g++ into folder and loaded (skips the test without g++)."""
    if GXX is None:
        pytest.skip("g++ is not on PATH")
    out = Path(folder) / "libphys.so"
    cmd = [GXX, "-x", "c++", "-std=c++17", "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-I", str(SYNTH),
           str(REPO / "tests" / "host_physics.cpp"), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return ctypes.CDLL(str(out))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """tests/host_physics.cpp as a shared library."""
    return build_host_library(tmp_path_factory.mktemp("phys"))


def host_physics_backend(folder):
    """A backend-like object: physics images by physics_gpu's driver on the host-compiled kernels (tests/test_golden)."""
    from lowlight_gpu.synth.signal import clean_lut

    kernels = HostKernels(build_host_library(folder))

    class Backend:
        @staticmethod
        def render_many(rgb, params, specs):
            return [physics_gpu.render_device(np, kernels, rgb, params, t)[0] if noisy
                    else np.take(clean_lut(params, t, params["noise"]["space"]), rgb) for t, noisy in specs]
    return Backend


def ptr(a):
    """A C pointer to a contiguous numpy array (None stays a null pointer)."""
    if a is None:
        return None
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


class HostKernels:
    """physics_gpu's two kernels as the host-compiled bodies (grid and block are ignored)."""

    null = None

    def __init__(self, lib):
        self.lib = lib

    def mosaic(self, grid, block, args):
        self.lib.ll_host_phys_mosaic(*map(ptr, args))

    def process(self, grid, block, args):
        self.lib.ll_host_phys_process(*map(ptr, args))


def image(shape, seed=0):
    """A smooth-ish test image with some texture."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    noise = np.random.default_rng(seed).integers(0, 40, shape + (3,))
    base = np.stack([60 + 3 * xx, 90 + 5 * yy, 120 + 2 * (xx + yy)], axis=-1)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def case_params(noise, steps, seed=7):
    """The params of a physics pair for a case."""
    cfg = {"noise": {"model": "physics", **noise}}
    if steps:
        cfg["progressive"] = {"enabled": True, "steps": steps}
    return sample_params(seed, cfg)


def test_params_layout_matches_the_struct(host):
    out = np.zeros(32, np.int64)
    n = host.ll_host_phys_layout(ptr(out))
    dt = physics_gpu.PARAMS_DTYPE
    assert out[0] == dt.itemsize
    assert list(out[1:n + 1]) == [dt.fields[name][1] for name in dt.names]


def test_poisson_and_tukey_twins_are_bit_identical(host):
    rng = np.random.default_rng(2)
    lam = np.concatenate([[0.0, 1e-3, 0.5, 29.999, 30.0, 30.5, 1e4, 1.00001e4, 3e5],
                          np.exp(rng.uniform(-3, 9.5, 4000))])
    u = physics.uniform(rng.integers(0, 2 ** 32, lam.size, dtype=np.uint64))
    u[:3] = physics.uniform(np.array([0, 2 ** 32 - 1, 2 ** 31], dtype=np.uint64))
    got = np.empty_like(lam)
    host.ll_host_phys_poisson(ptr(lam), ptr(u), ptr(got), ctypes.c_longlong(lam.size))
    assert np.array_equal(got, physics.poisson_counts(lam, u))
    for shape in (-0.26, 0.0, 0.102, 0.5):
        want = physics.tukey_lambda(u, shape)
        host.ll_host_phys_tukey(ptr(u), ctypes.c_double(shape), ptr(got), ctypes.c_longlong(u.size))
        assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("noise, steps, t, shape", CASES)
def test_driver_with_host_kernels_equals_numpy(host, noise, steps, t, shape):
    rgb = image(shape)
    params = case_params(noise, steps)
    out, clean, low = physics_gpu.render_device(np, HostKernels(host), rgb, params, t, image=True, raw=True)
    assert np.array_equal(out, physics.render(rgb, params, t))
    want_clean, want_low = physics.render_raw(rgb, params, t)
    assert np.array_equal(clean, want_clean) and np.array_equal(low, want_low)


def test_kernels_compile_for_hopper(tmp_path):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    src = tmp_path / "physics.cu"
    src.write_text(physics_gpu.kernel_source())  # the text NVRTC receives
    ptx = tmp_path / "physics.ptx"
    cmd = [NVCC, *physics_gpu.COMPILE_OPTIONS, "-arch=sm_90", "--ptx", str(src), "-o", str(ptx)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    assert ".entry ll_phys_mosaic_kernel(" in text and ".entry ll_phys_process_kernel(" in text
    assert "fma.rn.f64" not in text  # --fmad=false: no contraction anywhere


class FakeCupyArray(np.ndarray):
    """A host array standing in for cupy.ndarray (get() copies it out)."""

    def get(self):
        return np.asarray(self).copy()


def fake_cupy(lib):
    """A stand-in CuPy module whose RawModule kernels are the host-compiled bodies."""
    import types

    def as_dev(a):
        return np.ascontiguousarray(a).view(FakeCupyArray)

    def launch(fn):
        def call(grid, block, args):
            fn(*[None if isinstance(a, np.integer) else ptr(np.asarray(a)) for a in args])
        return call

    class RawModule:
        def __init__(self, code, options):
            assert "--fmad=false" in options and "ll_phys_mosaic_kernel" in code

        def get_function(self, name):
            return launch({"ll_phys_mosaic_kernel": lib.ll_host_phys_mosaic,
                           "ll_phys_process_kernel": lib.ll_host_phys_process}[name])

    mod = types.ModuleType("cupy")
    mod.ndarray = FakeCupyArray
    mod.asarray = as_dev
    mod.ascontiguousarray = as_dev
    mod.empty = lambda shape, dtype: np.empty(shape, dtype).view(FakeCupyArray)
    mod.RawModule = RawModule
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0))
    return mod


def test_cupy_backend_physics_on_a_stand_in_cupy(host, monkeypatch):
    from lowlight_gpu.synth import cupy_backend, numpy_backend

    monkeypatch.setitem(__import__("sys").modules, "cupy", fake_cupy(host))
    monkeypatch.setattr(physics_gpu, "_compiled", {})
    rgb = image((15, 22))
    params = case_params({"camera": "CanonEOS5D4"}, 4)
    specs = [(2, True), (4, True), (4, False)]
    got = cupy_backend.render_many(rgb, params, specs)
    want = numpy_backend.render_many(rgb, params, specs)
    assert all(type(g) is np.ndarray and np.array_equal(g, w) for g, w in zip(got, want))
    device = cupy_backend.render_many(rgb.view(FakeCupyArray), params, specs[:1])[0]
    assert isinstance(device, FakeCupyArray) and np.array_equal(device, want[0])
    for a, b in zip(cupy_backend.render_raw(rgb, params, 2), numpy_backend.render_raw(rgb, params, 2)):
        assert type(a) is np.ndarray and np.array_equal(a, b)
