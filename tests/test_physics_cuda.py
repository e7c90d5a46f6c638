"""physics.cuh's GPU driver checked without a GPU: physics_gpu with its kernels' bodies equals the CPU backend.

physics_gpu's driver runs with numpy as its array module and, as its kernels, the bodies of
ll_phys_mosaic_kernel and ll_phys_process_kernel run serially by the model's CPU library (the very
header NVRTC compiles); and the CuPy backend routes physics images through it on the stand-in CuPy.
The CUDA build of the kernels for Hopper is checked with nvcc where it exists.
"""

import shutil
import subprocess

import numpy as np
import pytest

import model_cases
from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import cupy_backend, cupy_compile, native, numpy_backend, physics_gpu

NVCC = shutil.which("nvcc")

SHAPES = [(23, 37), (2, 2), (2, 5), (9, 11)]


class SerialKernels:
    """physics_gpu's two kernels as the library's serial kernel bodies (grid and block are ignored)."""

    null = None

    @staticmethod
    def _ptr(a):
        return None if a is None else np.asarray(a).ctypes.data

    def mosaic(self, grid, block, args):
        native.lib().ll_phys_mosaic_serial(*map(self._ptr, args))

    def process(self, grid, block, args):
        native.lib().ll_phys_process_serial(*map(self._ptr, args))


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


@pytest.mark.parametrize("case", model_cases.PHYSICS_CASES)
def test_driver_with_the_kernel_bodies_equals_the_cpu_backend(case):
    """The physics cases of the one case table (tests/model_cases.py), every step, on odd shapes."""
    for shape in SHAPES:
        rgb = model_cases.image(shape, 1)
        params = model_cases.case_params(case, shape, 1)
        for t in model_cases.CASES[case][1]:
            out, clean, low = physics_gpu.render_device(np, SerialKernels(), rgb, params, t, image=True, raw=True)
            assert np.array_equal(out, numpy_backend.render(rgb, params, t)), (shape, t)
            want_clean, want_low = numpy_backend.render_raw(rgb, params, t)
            assert np.array_equal(clean, want_clean) and np.array_equal(low, want_low), (shape, t)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_kernels_compile_for_hopper_without_contraction(tmp_path):
    src = tmp_path / "kernels.cu"
    src.write_text(cupy_compile.kernel_source())  # the text NVRTC receives
    ptx = tmp_path / "kernels.ptx"
    cmd = [NVCC, *cupy_compile.COMPILE_OPTIONS, "-arch=sm_90", "--ptx", str(src), "-o", str(ptx)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    assert ".entry ll_phys_mosaic_kernel(" in text and ".entry ll_phys_process_kernel(" in text
    assert "fma.rn.f64" not in text and "fma.rn.f32" not in text  # --fmad=false: no contraction anywhere


def test_cupy_backend_physics_on_the_stand_in(stand_in):
    rgb = image((15, 22))
    params = case_params({"camera": "CanonEOS5D4"}, 4)
    specs = [(2, True), (4, True), (4, False)]
    got = cupy_backend.render_many(rgb, params, specs)
    want = numpy_backend.render_many(rgb, params, specs)
    assert all(type(g) is np.ndarray and np.array_equal(g, w) for g, w in zip(got, want))
    device = cupy_backend.render_many(stand_in.asarray(rgb), params, specs[:1])[0]
    assert isinstance(device, stand_in.ndarray) and np.array_equal(np.asarray(device), want[0])
    for a, b in zip(cupy_backend.render_raw(rgb, params, 2), numpy_backend.render_raw(rgb, params, 2)):
        assert type(a) is np.ndarray and np.array_equal(a, b)
    assert ("physics mosaic", 0, 0) in stand_in.launches


def test_a_physics_image_out_of_gpu_memory_is_rendered_by_the_cpu_library(stand_in, capsys, monkeypatch):
    monkeypatch.setattr(physics_gpu, "_NOTED", [])
    rgb = image((40, 60))
    params = case_params({"camera": "SonyA7S2"}, None)
    stand_in.max_alloc = 4000  # the float64 mosaic (19200 bytes) cannot be had
    got = cupy_backend.render_many(rgb, params, [(None, True)])[0]
    raw = cupy_backend.render_raw(rgb, params)
    assert np.array_equal(got, numpy_backend.render(rgb, params))
    assert all(np.array_equal(a, b) for a, b in zip(raw, numpy_backend.render_raw(rgb, params)))
    err = capsys.readouterr().err
    assert err.count("did not fit in GPU memory") == 1 and "the same bytes" in err
