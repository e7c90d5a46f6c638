"""CUDA sources of the CuPy backend, checked on machines without a GPU.

* Every source the backend compiles builds with nvcc for Hopper (sm_90), both as
  the files on disk and as the single inlined string CuPy hands to NVRTC (and
  through NVRTC itself when libnvrtc can be found).
* tests/host_philox.cu compiles the shared __host__ __device__ code for the CPU;
  through ctypes its Philox words, Box-Muller normals, Poisson table search and
  whole per-value kernel body are compared with the numpy reference.
* cupy_backend's Python driver (table blob layout, slicing, out-of-memory
  fallback, threads, CuPy-in/CuPy-out) runs against a stand-in CuPy whose
  noise kernel is that host-compiled kernel body.
Skipped when nvcc is not on PATH.
"""

import ctypes
import ctypes.util
import glob
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from conftest import read_jsonl, read_png, write_images
from lowlight_gpu import pipeline, rng
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import cpu_kernel, cupy_backend, cupy_batch, cupy_compile, cupy_transfer, numpy_backend, poisson

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "tests" / "host_philox.cu"
SYNTH = cupy_backend.SOURCE_DIR
ARCH = "sm_90"
GPU_FLAGS = [*cupy_backend.COMPILE_OPTIONS, *cupy_backend.CUPY_ADDED_OPTIONS]  # what NVRTC gets from CuPy
# The same contraction rule as the GPU build: numpy rounds every float op separately.
HOST_FLAGS = ["-std=c++17", "--fmad=false", "-Xcompiler", "-fPIC,-ffp-contract=off"]

# Random123's known-answer vectors for Philox4x32-10: (counter, key) -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# Configs covering every kernel branch: models, orders, spaces, progressive steps, normal-approximation rates.
RENDER_CASES = [
    ({}, (None,)),
    ({"noise": {"model": "poisson"}}, (None,)),
    ({"noise": {"model": "gaussian"}}, (None,)),
    ({"noise": {"model": "brooks"}}, (None,)),
    ({"noise": {"order": "before"}}, (None,)),
    ({"noise": {"space": "linear"}}, (None,)),
    ({"noise": {"order": "before", "space": "linear"}}, (None,)),
    ({"noise": {"model": "gaussian", "order": "before", "space": "linear"}}, (None,)),
    ({"noise": {"peak": [2e4, 1e6]}}, (None,)),
    ({"progressive": {"enabled": True, "steps": 4}}, (None, 1, 3, 4)),
    ({"progressive": {"enabled": True, "steps": 3}, "noise": {"order": "before"}}, (1, 2, 3)),
]


def numpy_reference(rgb, params, t, noisy=True):
    """numpy_backend.render on its pure-numpy path (the reference), bypassing the optional numba twin."""
    with mock.patch.object(cpu_kernel, "AVAILABLE", False):
        return numpy_backend.render(rgb, params, t, noisy)


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
    for entry in ("ll_noise_kernel", "ll_lut_kernel", "ll_batch_kernel"):
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


# ---------------------------------------------------------------- the host harness

@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """tests/host_philox.cu built as a shared library and loaded with ctypes."""
    out = tmp_path_factory.mktemp("host") / "libllhost.so"
    run([NVCC, "-x", "cu", *HOST_FLAGS, "-shared", "-I", SYNTH, HARNESS, "-o", out])
    return ctypes.CDLL(str(out))


def ptr(a):
    """A C pointer to a contiguous numpy array."""
    assert a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.c_void_p)


def host_philox(host, counters, keys):
    """Philox words of (n, 4) counters under (n, 2) keys, computed by the host-compiled header."""
    counters = np.ascontiguousarray(counters, np.uint32)
    keys = np.ascontiguousarray(keys, np.uint32)
    out = np.empty_like(counters)
    host.ll_host_philox(ptr(counters), ptr(keys), ptr(out), ctypes.c_longlong(len(counters)))
    return out


def c_scalar(value):
    """A numpy scalar from cupy_backend.noise_args as the matching ctypes value."""
    if isinstance(value, np.uint32):
        return ctypes.c_uint32(int(value))
    if isinstance(value, np.int32):
        return ctypes.c_int32(int(value))
    assert isinstance(value, np.float32)
    return ctypes.c_float(float(value))


def prepare(params, t):
    """The kernel's scalar arguments (as ctypes values) and per-code tables for one image."""
    args = [c_scalar(a) for a in cupy_backend.noise_args(params, t)]
    return args, [np.ascontiguousarray(s) for s in cupy_backend.noise_sections(params, t)]


def host_render(host, rgb, params, t, first=0, count=None, prepared=None):
    """The kernel body run serially on the CPU for values [first, first + count) of rgb."""
    flat = np.ascontiguousarray(rgb).reshape(-1)
    count = flat.size - first if count is None else count
    codes = np.ascontiguousarray(flat[first:first + count])
    out = np.empty_like(codes)
    args, sections = prepared or prepare(params, t)
    host.ll_host_noise(ptr(codes), ptr(out), ctypes.c_longlong(count), ctypes.c_longlong(first),
                       *args, *[ptr(s) for s in sections])
    return out


def test_philox_known_answers(host):
    for counter, key, want in KNOWN_ANSWERS:
        got = host_philox(host, [counter], [key])[0]
        assert [int(w) for w in got] == list(want)
        assert [int(w) for w in rng.philox4x32(*counter, *key)] == list(want)


def test_philox_matches_numpy_counter_layout(host):
    gen = np.random.default_rng(1)
    n = 4096
    seeds = gen.integers(0, 2 ** 63, n, dtype=np.uint64)
    seeds[:4] = [0, 1, 2 ** 32 - 1, 2 ** 53 + 12345]
    blocks = gen.integers(0, 2 ** 40, n, dtype=np.uint64)  # past 2**32: the high counter word matters
    steps = gen.integers(0, 16, n, dtype=np.uint64)
    counters = np.stack([blocks & 0xFFFFFFFF, blocks >> np.uint64(32), steps,
                         np.full(n, rng.STREAM_NOISE, np.uint64)], axis=1)
    keys = np.stack([seeds & 0xFFFFFFFF, seeds >> np.uint64(32)], axis=1)
    got = host_philox(host, counters, keys)
    for i in range(0, n, 97):  # rng.random_blocks works per seed and step
        want = rng.random_blocks(int(seeds[i]), int(steps[i]), rng.STREAM_NOISE, int(blocks[i]), 1)[0]
        assert got[i].tolist() == want.tolist()
    want = np.stack(rng.philox4x32(*counters.T, 0, 0), axis=1)  # one key, every counter, vectorised
    assert np.array_equal(host_philox(host, counters, np.zeros((n, 2))), want)


def test_box_muller_equals_numpy(host):
    words = np.random.default_rng(2).integers(0, 2 ** 32, (200_000, 2), dtype=np.uint64).astype(np.uint32)
    words[:3] = [[0, 0], [0xFFFFFFFF, 0xFFFFFFFF], [0x80000000, 0x40000000]]
    got = np.empty((len(words), 2), np.float32)
    host.ll_host_box_muller(ptr(words), ptr(got), ctypes.c_longlong(len(words)))
    n0, n1 = numpy_backend.box_muller(words[:, 0], words[:, 1])
    want = np.stack([n0, n1], axis=1)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # detmath on both sides


@pytest.mark.parametrize("peak", [3.0, 150.0, 1000.0, 5e4, 1e6])
def test_poisson_search_matches_numpy(host, peak):
    signal = np.linspace(0.0, 1.0, 256) ** 2.2  # includes rate 0 and, for large peaks, normal-approx codes
    tables = poisson.build_tables(peak * signal)
    gen = np.random.default_rng(int(peak))
    n = 100_000
    codes = gen.integers(0, 256, n, dtype=np.uint8)
    words = gen.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    words[:4] = [0, 1, 0xFFFFFFFE, 0xFFFFFFFF]
    got = np.empty(n, np.int64)
    normal = np.ascontiguousarray(tables.normal.view(np.uint8))
    host.ll_host_poisson(ptr(tables.thresholds), ptr(tables.guide), ptr(tables.kshift), ptr(normal),
                         ptr(tables.lam), ptr(codes), ptr(words), ptr(got), ctypes.c_longlong(n))
    want = poisson.sample(tables, codes, words)
    assert np.array_equal(got, want)  # the table search, and detmath's ndtri for the normal approximation
    assert peak < 1e4 or tables.normal[codes].any()


def assert_three_twins_agree(host, config, steps, seeds, shape):
    """The host-compiled kernel body, the numba kernel (when present) and the numpy reference: identical."""
    rgb = np.random.default_rng(len(str(config))).integers(0, 256, shape, dtype=np.uint8)
    twin = cpu_kernel
    for seed in seeds:
        params = sample_params(seed, config_from_dict(config))
        for t in steps:
            want = numpy_reference(rgb, params, t)
            got = host_render(host, rgb, params, t).reshape(shape)
            assert np.array_equal(got, want), f"CUDA body, seed {seed}, t={t}: {np.count_nonzero(got != want)} differ"
            if twin.warmup():
                got = numpy_backend.render(rgb, params, t)
                assert np.array_equal(got, want), f"numba, seed {seed}, t={t}: {np.count_nonzero(got != want)} differ"


@pytest.mark.parametrize("config,steps", RENDER_CASES, ids=[str(c) for c, _ in RENDER_CASES])
def test_kernel_body_equals_numpy_render(host, config, steps):
    assert_three_twins_agree(host, config, steps, (3, 2 ** 52 + 17), (131, 97, 3))


def test_kernel_body_equals_numpy_render_for_many_seeds(host):
    """Every case, 12 more pair seeds each, on a larger image: not one value may differ."""
    for config, steps in RENDER_CASES:
        assert_three_twins_agree(host, config, steps[-1:], [1000 + 7919 * i for i in range(12)], (61, 53, 3))


@pytest.mark.parametrize("cut", [2, 1000, 4096])
def test_slices_draw_the_counters_of_the_whole_image(host, cut):
    rgb = np.random.default_rng(9).integers(0, 256, (37, 23, 3), dtype=np.uint8)  # 2553 values: odd
    params = sample_params(11, config_from_dict({}))
    prepared = prepare(params, None)
    whole = host_render(host, rgb, params, None, prepared=prepared)
    parts = [host_render(host, rgb, params, None, lo, min(cut, rgb.size - lo), prepared)
             for lo in range(0, rgb.size, cut)]
    assert np.array_equal(np.concatenate(parts), whole)


# ---------------------------------------------------------------- the Python driver, on a stand-in CuPy

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
    """Just enough of CuPy for cupy_backend, with ll_noise_kernel run by the host-compiled kernel body."""

    ndarray = StandInArray
    uint8 = np.uint8

    class OutOfMemoryError(Exception):
        pass

    def __init__(self, host):
        self.host = host
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
                assert "ll_noise_kernel" in code and "--fmad=false" in options

            def get_function(self, name):
                return {"ll_noise_kernel": outer.noise_kernel, "ll_lut_kernel": outer.lut_kernel,
                        "ll_batch_kernel": outer.batch_kernel}[name]

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
        """ll_noise_kernel, run by the host-compiled kernel body."""
        self.launches.append(("noise", int(args[2]), int(args[3])))
        codes, out, n, first, *rest = args
        scalars, tables = rest[:11], rest[11:]
        self.host.ll_host_noise(ptr(codes), ptr(out), ctypes.c_longlong(int(n)), ctypes.c_longlong(int(first)),
                                *map(c_scalar, scalars), *map(ptr, tables))

    def batch_kernel(self, grid, block, args):
        """ll_batch_kernel, run by the host-compiled batch body."""
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
        self.host.ll_host_batch(ptr(blob), ptr(out), ptr(jobs), ctypes.c_int(njobs))

    def lut_kernel(self, grid, block, args):
        """ll_lut_kernel, as a numpy table lookup."""
        self.launches.append(("lut", int(args[2]), 0))
        codes, out, n, lut = args
        out[:int(n)] = np.asarray(lut)[np.asarray(codes[:int(n)])]


@pytest.fixture
def stand_in(host, monkeypatch):
    """cupy_backend wired to a StandInCupy, with its caches cleared before and after."""
    fake = StandInCupy(host)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_compile, "_modules", {})
    monkeypatch.setattr(cupy_transfer, "_state", cupy_transfer.ThreadState())
    monkeypatch.setattr(cupy_backend, "_available", None)
    monkeypatch.setattr(cupy_backend, "_batcher", cupy_batch.Batcher(cupy_backend._render_batch_or_alone))
    monkeypatch.setattr(cupy_backend, "SETTINGS", cupy_backend.Settings())
    return fake


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
                         ids=[str(c) for c, _ in RENDER_CASES[:3] + RENDER_CASES[-2:]])
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
        if noisy:
            assert np.array_equal(got.reshape(-1), host_render(stand_in.host, rgb, params, t))
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

def test_job_table_layout_matches_the_c_struct(host):
    out = np.zeros(32, np.int64)
    count = host.ll_host_job_layout(ptr(out))
    dtype = cupy_backend.JOB_DTYPE
    assert count == len(dtype.names)
    assert out[0] == dtype.itemsize == 120
    assert list(out[1:count + 1]) == [dtype.fields[name][1] for name in dtype.names]


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
                assert np.array_equal(img.reshape(-1), host_render(stand_in.host, rgb, p, t))
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
    cpu_name = numpy_backend.effective_name("poisson-gaussian")  # numba where it runs, else numpy
    assert [r.pop("backend") for r in rows["cupy"]] == ["cupy"] * len(specs)
    assert [r.pop("backend") for r in rows["numpy"]] == [cpu_name] * len(specs)
    assert rows["cupy"] == rows["numpy"]  # the same params, seeds and paths
    for row in rows["numpy"]:
        for rel in [row["high"], row["low"], row["clean_low"]] + [s["path"] for s in row["steps"]]:
            assert np.array_equal(read_png(tmp_path / "numpy" / rel), read_png(tmp_path / "cupy" / rel)), rel
