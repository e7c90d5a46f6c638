"""CUDA sources of the CuPy backend, checked on machines without a GPU.

* Every source the backend compiles builds with nvcc for Hopper (sm_90), both as
  the files on disk and as the single inlined string CuPy hands to NVRTC (and
  through NVRTC itself when libnvrtc can be found); skipped without nvcc.
* The noise kernel's body (one CUDA thread's work, run serially by the model's CPU
  library) equals the CPU backend's chunked driver, whole and in slices.
* cupy_backend's Python driver (table blob layout, slicing, out-of-memory
  fallback, batching, threads, CuPy-in/CuPy-out) runs against a stand-in CuPy
  whose kernels are those bodies (tests/stand_in_cupy.py).
"""

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import read_jsonl, read_png, write_images
from lowlight_gpu import pipeline
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import cupy_backend, native, numpy_backend, records
from model_cases import CASES as MODEL_CASES
from model_cases import PHYSICS_CASES
from stand_in_cupy import StandInArray

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

REPO = Path(__file__).resolve().parent.parent
SYNTH = cupy_backend.SOURCE_DIR
ARCH = "sm_90"
GPU_FLAGS = [*cupy_backend.COMPILE_OPTIONS, *cupy_backend.CUPY_ADDED_OPTIONS]  # what NVRTC gets from CuPy

# The Lv cases of the one case table (tests/model_cases.py): every kernel branch, models, orders, spaces,
# progressive steps, normal-approximation rates.
RENDER_NAMES = [name for name in MODEL_CASES if name not in PHYSICS_CASES and name != "none"]  # noisy kernels only
RENDER_CASES = [MODEL_CASES[name] for name in RENDER_NAMES]


def numpy_reference(rgb, params, t, noisy=True):
    """The CPU backend's image: the library's chunked driver."""
    return numpy_backend.render(rgb, params, t, noisy)


def kernel_body(rgb, params, t, first=0, count=None):
    """ll_noise_kernel's body (one thread's work, looped) for values [first, first + count) of rgb."""
    flat = np.ascontiguousarray(rgb).reshape(-1)
    count = flat.size - first if count is None else count
    return native.noise_kernel_serial(flat[first:first + count], records.noise_record(params, t),
                                      *records.noise_sections(params, t), first=first)


def run(cmd):
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


# ---------------------------------------------------------------- compiling the GPU sources

def test_backend_lists_its_sources():
    names = {p.name for p in cupy_backend.source_files()}
    assert names == {p.name for p in SYNTH.glob("*.cu*")}, "a CUDA file is neither compiled nor listed"
    assert '#include "' not in cupy_backend.kernel_source()


@needs_nvcc
@pytest.mark.parametrize("source", ["files", "inlined"])
def test_kernels_compile_for_hopper(tmp_path, source):
    if source == "files":
        src, include = SYNTH / cupy_backend.KERNEL_FILE, ["-I", SYNTH]
    else:  # exactly the text NVRTC receives from cupy_backend
        src, include = tmp_path / "inlined.cu", []
        src.write_text(cupy_backend.kernel_source())
    ptx = tmp_path / "k.ptx"
    run([NVCC, *GPU_FLAGS, f"-arch={ARCH}", *include, "--ptx", src, "-o", ptx])
    text = ptx.read_text()
    for entry in ("ll_noise_kernel", "ll_lut_kernel", "ll_batch_kernel", "ll_phys_mosaic_kernel",
                  "ll_phys_process_kernel"):
        assert f".entry {entry}(" in text
    # ptxas too (register allocation, stack), as CuPy's NVRTC -> cubin path does.
    run([NVCC, *GPU_FLAGS, f"-arch={ARCH}", *include, "-cubin", src, "-o", tmp_path / "k.cubin"])


def find_nvrtc():
    """Path of a libnvrtc shared library ($LL_NVRTC, the nvidia-cuda-nvrtc wheel, or the loader's), or None."""
    if os.environ.get("LL_NVRTC"):
        return os.environ["LL_NVRTC"]
    try:
        import nvidia  # the nvidia-cuda-nvrtc wheel installs nvidia/cu1X/lib/libnvrtc.so.*
        for root in nvidia.__path__:
            hits = sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
            hits = [h for h in hits if "builtins" not in h and ".alt." not in h]
            if hits:
                return hits[-1]
    except ImportError:
        pass
    return ctypes.util.find_library("nvrtc")


NVRTC_ERROR_BUILTIN_OPERATION_FAILURE = 7


def test_kernels_compile_with_nvrtc():
    path = find_nvrtc()
    if path is None:
        pytest.skip("libnvrtc not found (set LL_NVRTC to its path)")
    # NVRTC dlopens its builtins library by name; preload the copy that sits beside it.
    for builtins in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")):
        if ".alt." not in builtins:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    src = cupy_backend.kernel_source().encode()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"kernels.cu", 0, None, None) == 0
    opts = [o.encode() for o in GPU_FLAGS] + [b"-arch=compute_90"]
    status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    if status == NVRTC_ERROR_BUILTIN_OPERATION_FAILURE:
        pytest.skip(f"this NVRTC install is incomplete: {log.value.decode().strip()}")
    assert status == 0, log.value.decode()
    assert "warning" not in log.value.decode().lower(), log.value.decode()


# ---------------------------------------------------------------- the kernel's body against the CPU driver

@pytest.mark.parametrize("config,steps", RENDER_CASES, ids=RENDER_NAMES)
def test_kernel_body_equals_the_cpu_driver(config, steps):
    rgb = np.random.default_rng(len(str(config))).integers(0, 256, (131, 97, 3), dtype=np.uint8)
    for seed in (3, 2 ** 52 + 17, *[1000 + 7919 * i for i in range(6)]):
        params = sample_params(seed, config_from_dict(config))
        for t in steps:
            got = kernel_body(rgb, params, t).reshape(rgb.shape)
            want = numpy_reference(rgb, params, t)
            assert np.array_equal(got, want), f"seed {seed}, t={t}: {np.count_nonzero(got != want)} differ"


@pytest.mark.parametrize("cut", [2, 1000, 4096])
def test_slices_draw_the_counters_of_the_whole_image(cut):
    rgb = np.random.default_rng(9).integers(0, 256, (37, 23, 3), dtype=np.uint8)  # 2553 values: odd
    params = sample_params(11, config_from_dict({}))
    whole = kernel_body(rgb, params, None)
    parts = [kernel_body(rgb, params, None, lo, min(cut, rgb.size - lo)) for lo in range(0, rgb.size, cut)]
    assert np.array_equal(np.concatenate(parts), whole)


# ---------------------------------------------------------------- the Python driver, on a stand-in CuPy

def test_driver_available_with_stand_in(stand_in):
    assert cupy_backend.available() == (True, "")


@pytest.mark.parametrize("broken", ["noise", "batch"])
def test_probe_rejects_kernels_that_run_but_compute_wrong_noise(stand_in, broken):
    def copy_input(grid, block, args):  # runs, returns the right shape, adds no noise
        if broken == "noise":
            codes, out, n = args[:3]
            out[:int(n)] = codes[:int(n)]
        else:
            blob, out, jobs = args
            out[...] = 0

    setattr(stand_in, f"{broken}_kernel", copy_input)
    ok, reason = cupy_backend.available()
    assert not ok and "wrong values" in reason


@pytest.mark.parametrize("config,steps", RENDER_CASES[:3] + RENDER_CASES[-2:],
                         ids=RENDER_NAMES[:3] + RENDER_NAMES[-2:])
def test_driver_render_many_on_stand_in(stand_in, config, steps):
    rgb = np.random.default_rng(5).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    params = sample_params(13, config_from_dict(config))
    specs = [(t, noisy) for t in steps for noisy in (True, False)]
    outs = cupy_backend.render_many(rgb, params, specs)
    sliced = cupy_backend.render_many(rgb, params, specs, slice_values=1000)
    on_device = cupy_backend.render_many(stand_in.asarray(rgb), params, specs)
    for (t, noisy), got, cut, dev in zip(specs, outs, sliced, on_device):
        assert type(got) is np.ndarray and got.shape == rgb.shape
        assert isinstance(dev, StandInArray) and np.array_equal(np.asarray(dev), got)
        assert np.array_equal(cut, got)
        if noisy and params["noise"]["model"] != "none":  # "none" renders the clean LUT
            assert np.array_equal(got.reshape(-1), kernel_body(rgb, params, t))
        assert np.array_equal(got, numpy_reference(rgb, params, t, noisy))


def test_driver_out_of_memory_fallback_on_stand_in(stand_in):
    rgb = np.random.default_rng(6).integers(0, 256, (600, 500, 3), dtype=np.uint8)  # 900000 values
    params = sample_params(14, config_from_dict({}))
    want = cupy_backend.render(rgb, params)
    stand_in.launches.clear()
    cupy_backend.configure(memory_limit_gb=400_000 / 2 ** 30)  # the stand-in refuses any buffer over 400 kB
    got = cupy_backend.render(rgb, params)
    assert [(n, first) for _, n, first in stand_in.launches] == [(225_000, lo) for lo in range(0, 900_000, 225_000)]
    assert np.array_equal(got, want)


def test_driver_threads_on_stand_in(stand_in):
    tasks = [(np.random.default_rng(i).integers(0, 256, (19 + i, 11, 3), dtype=np.uint8),
              sample_params(i, config_from_dict({"progressive": {"enabled": True, "steps": 2}})))
             for i in range(12)]
    specs = [(1, True), (2, True), (2, False)]
    serial = [cupy_backend.render_many(rgb, p, specs) for rgb, p in tasks]
    with ThreadPoolExecutor(6) as pool:
        threaded = list(pool.map(lambda task: cupy_backend.render_many(*task, specs), tasks))
    for outs, want in zip(threaded, serial):
        assert all(np.array_equal(a, b) for a, b in zip(outs, want))


# ---------------------------------------------------------------- batching small images

def batch_requests(count=7):
    """Small images of odd sizes with a mix of clean, noisy, gaussian and progressive jobs."""
    configs = [{}, {"noise": {"model": "gaussian"}}, {"noise": {"order": "before", "space": "linear"}},
               {"progressive": {"enabled": True, "steps": 3}}, {"noise": {"model": "none"}}]
    requests = []
    for i in range(count):
        rgb = np.random.default_rng(40 + i).integers(0, 256, (5 + 7 * i, 3 + 5 * i, 3), dtype=np.uint8)
        params = sample_params(100 + i, config_from_dict(configs[i % len(configs)]))
        specs = [(None, True), (None, False)] if "progressive" not in params else [(1, True), (3, True), (2, False)]
        requests.append((rgb, params, specs))
    return requests


def test_batched_pass_equals_images_rendered_alone(stand_in):
    requests = batch_requests()
    alone = [cupy_backend.render_many(rgb, p, specs, slice_values=10 ** 6) for rgb, p, specs in requests]
    stand_in.launches.clear()
    batch = [cupy_backend._Request(rgb, [cupy_backend._Job(p, t, noisy) for t, noisy in specs])
             for rgb, p, specs in requests]
    got = cupy_backend._render_batch(batch)
    assert [kind for kind, *_ in stand_in.launches] == ["batch"]  # one launch for every image
    want = [img for outs in alone for img in outs]
    assert len(got) == len(want) == sum(len(specs) for *_, specs in requests)
    for a, b in zip(got, want):
        assert a.shape == b.shape and np.array_equal(a, b)
    for (rgb, p, specs), outs in zip(requests, alone):  # and per-image kernels equal the references
        for (t, noisy), img in zip(specs, outs):
            if noisy and p["noise"]["model"] != "none":
                assert np.array_equal(img.reshape(-1), kernel_body(rgb, p, t))
            else:
                assert np.array_equal(img, numpy_reference(rgb, p, t, noisy=False))


def test_concurrent_small_images_share_passes(stand_in):
    requests = batch_requests(24)
    cupy_backend.configure(batch_small_images=False)
    serial = [cupy_backend.render_many(*r) for r in requests]
    assert all(kind != "batch" for kind, *_ in stand_in.launches)
    cupy_backend.configure(batch_small_images=True)
    stand_in.launches.clear()
    stand_in.batch_delay = 0.02  # while one pass runs, the other threads' images queue for the next
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda r: cupy_backend.render_many(*r), requests))
    for outs, want in zip(threaded, serial):
        assert len(outs) == len(want) and all(np.array_equal(a, b) for a, b in zip(outs, want))
    kinds = [kind for kind, *_ in stand_in.launches]
    assert set(kinds) == {"batch"}
    assert len(kinds) < len(requests) // 2, f"{len(kinds)} passes for {len(requests)} images"
    assert sum(n for _, n, _ in stand_in.launches) == sum(len(specs) for *_, specs in requests)


def test_batches_respect_the_size_cap(stand_in):
    requests = batch_requests(12)
    cupy_backend.configure(batch_megapixels=0.01)  # at most 2 * 30000 values on the device per pass
    cap = 2 * cupy_backend.SETTINGS.slice_values
    sizes = [r[0].size * (1 + len(r[2])) for r in requests]
    assert max(sizes) < cap < sum(sizes)
    stand_in.batch_delay = 0.02
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda r: cupy_backend.render_many(*r), requests))
    assert sum(images for images, _ in stand_in.batches) == len(requests)
    assert max(images for images, _ in stand_in.batches) > 1  # batching still happened
    assert all(values <= cap for _, values in stand_in.batches)


def test_a_failed_pass_raises_in_every_waiting_thread(stand_in):
    requests = batch_requests(6)
    stand_in.batch_delay = 0.05
    stand_in.batch_error = RuntimeError("device lost")
    errors, results = [], []

    def one(r):
        try:
            results.append(cupy_backend.render_many(*r))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(r,)) for r in requests]
    for th in threads:
        th.start()
        time.sleep(0.005)  # the first thread's pass fails; the rest queue behind it
    for th in threads:
        th.join(10)
    assert not any(th.is_alive() for th in threads)
    assert errors and all(e == "device lost" for e in errors)
    assert len(errors) + len(results) == len(requests)
    # The batcher is not stuck: a later image renders.
    rgb, p, specs = requests[0]
    assert len(cupy_backend.render_many(rgb, p, specs)) == len(specs)


def test_out_of_memory_in_a_batch_renders_each_image_alone(stand_in):
    requests = batch_requests(5)
    want = [cupy_backend.render_many(*r, slice_values=10 ** 6) for r in requests]
    batch = [cupy_backend._Request(rgb, [cupy_backend._Job(p, t, noisy) for t, noisy in specs])
             for rgb, p, specs in requests]
    alone = max(cupy_backend._layout(req.jobs) + 2 * req.rgb.size for req in batch)
    together = cupy_backend._layout([job for req in batch for job in req.jobs])
    assert alone < together
    stand_in.launches.clear()
    stand_in.max_alloc = alone  # enough for any single image's pass, too little for the batch's blob
    cupy_backend._render_batch_or_alone(batch)
    assert all(req.error is None for req in batch)
    assert "batch" not in [kind for kind, *_ in stand_in.launches]
    for req, outs in zip(batch, want):
        assert all(np.array_equal(a, b) for a, b in zip(req.result(), outs))


def test_large_images_are_not_batched(stand_in):
    rgb = np.zeros((1, cupy_backend.SMALL_IMAGE_VALUES // 3 + 1, 3), np.uint8)
    params = sample_params(3, config_from_dict({}))
    cupy_backend.render_many(rgb, params, [(None, False)])
    assert [kind for kind, *_ in stand_in.launches] == ["lut"]
    cupy_backend.render_many(rgb[:, :1000], params, [(None, False)])
    assert [kind for kind, *_ in stand_in.launches] == ["lut", "batch"]


def test_pipeline_with_the_cupy_backend_on_stand_in_equals_numpy(stand_in, tmp_path):
    """The whole pipeline with backend: cupy (threads, batching) against backend: numpy."""
    specs = {f"img{i:02d}.png": (13 + 7 * i, 9 + 5 * i) for i in range(10)}
    specs.update({"big.png": (600, 160)})  # 288000 values: above SMALL_IMAGE_VALUES, rendered on its own
    write_images(tmp_path / "in", specs)
    base = {"input": str(tmp_path / "in"), "workers": 4, "save": {"clean_low": True},
            "progressive": {"enabled": True, "steps": 2, "save": "all"}}
    stand_in.batch_delay = 0.01
    results = {}
    for backend in ("numpy", "cupy"):
        cfg = config_from_dict({**base, "output": str(tmp_path / backend), "backend": backend})
        results[backend] = pipeline.run(cfg)
    assert results["cupy"].pairs == results["numpy"].pairs == len(specs) and results["cupy"].errors == 0
    kinds = {kind for kind, *_ in stand_in.launches}
    assert {"batch", "noise", "lut"} <= kinds  # small images batched, the big one alone
    rows = {b: read_jsonl(tmp_path / b / "manifest.jsonl") for b in results}
    cpu_name = numpy_backend.effective_name("poisson-gaussian")
    assert [r.pop("backend") for r in rows["cupy"]] == ["cupy"] * len(specs)
    assert [r.pop("backend") for r in rows["numpy"]] == [cpu_name] * len(specs)
    assert rows["cupy"] == rows["numpy"]  # the same params, seeds and paths
    for row in rows["numpy"]:
        for rel in [row["high"], row["low"], row["clean_low"]] + [s["path"] for s in row["steps"]]:
            assert np.array_equal(read_png(tmp_path / "numpy" / rel), read_png(tmp_path / "cupy" / rel)), rel
