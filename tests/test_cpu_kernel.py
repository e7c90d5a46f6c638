"""The numba twin of the noisy numpy path (synth/cpu_kernel.py) against the pure-numpy reference.

The kernel draws the same Philox words, searches the same Poisson tables, evaluates Box-Muller,
ndtri and the per-value darkening and sRGB curve with detmath's twins, and does the same float32
compose/clip/quantise as ``numpy_backend.render_noisy_reference``: outputs must be identical.
"""

import os
import zlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("numba")

from lowlight_gpu import params as P  # noqa: E402
from lowlight_gpu import rng  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402
from lowlight_gpu.synth import cpu_kernel, detmath, poisson  # noqa: E402
from lowlight_gpu.synth import numpy_backend as nb  # noqa: E402
from lowlight_gpu.synth.signal import step_constants32, step_signal, working_codes  # noqa: E402

if not cpu_kernel.AVAILABLE:
    pytest.skip("cpu_kernel disabled (LOWLIGHT_NO_NUMBA is set)", allow_module_level=True)

MODELS = ("poisson-gaussian", "poisson", "brooks", "gaussian")


def make_params(model, seed=11, peak=None, sigma=None, progressive=None, order="after", space="srgb"):
    """Params of one pair; ``peak`` (shot-noise models) / ``sigma`` (gaussian) override the sampled level."""
    cfg = {"noise": {"model": model, "order": order, "space": space}}
    if progressive:
        cfg["progressive"] = {"enabled": True, "steps": progressive}
    p = P.sample_params(seed, config_from_dict(cfg))
    if peak is not None and model != "gaussian":
        p["noise"]["peak"] = float(peak)
    if sigma is not None and model == "gaussian":
        p["noise"]["sigma"] = float(sigma)
    return p


def inputs(rgb, p, t=None):
    """(flat codes, signal, tables, step, darken, linear) exactly as numpy_backend.render builds them."""
    noise = p["noise"]
    before = noise["order"] == "before"
    codes = working_codes(noise["space"])
    signal = codes if before else step_signal(codes, p, t)
    darken = step_constants32(p, t) if before else None
    return (np.ascontiguousarray(rgb).reshape(-1), signal, nb.noise_tables(noise, signal), nb.noise_step(p, t),
            darken, noise["space"] == "linear")


def both(rgb, p, t=None):
    """(kernel output, reference output), flat uint8."""
    flat, signal, tables, step, darken, linear = inputs(rgb, p, t)
    fast = cpu_kernel.render_noisy(flat, signal, tables, p["noise"], p["seed"], step, darken, linear)
    ref = nb.render_noisy_reference(flat, signal, tables, p["noise"], p["seed"], step, darken)
    return fast, ref


def check_equal(fast, ref, case):
    """The kernel's output is the reference's, value for value."""
    assert fast.dtype == np.uint8 and fast.shape == ref.shape
    differ = np.flatnonzero(fast != ref)
    assert differ.size == 0, f"{case}: {differ.size} of {fast.size} values differ (first at {differ[0]})"


def image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------- agreement with the numpy reference

SHAPES = [(37, 23, 3), (5, 7, 3), (1, 1, 1), (2, 1, 1), (131, 97, 3)]  # odd counts; the last spans numpy chunks
PEAKS = {"small": 1.0, "default": None, "large": 3e4}  # small: P(k=0) matters; large: normal-approximation codes


VARIANTS = {"after": ("after", "srgb"), "before": ("before", "srgb"), "linear": ("after", "linear"),
            "before-linear": ("before", "linear")}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("peak", list(PEAKS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("step_t", [None, 3])
def test_kernel_matches_reference(model, peak, shape, step_t):
    seed = zlib.crc32(f"{model}/{peak}/{shape}/{step_t}".encode()) & 0xFFFF
    p = make_params(model, seed=seed, peak=PEAKS[peak], sigma=0.05 if peak == "large" else None,
                    progressive=5 if step_t else None)
    if peak == "large" and model != "gaussian":
        assert nb.noise_tables(p["noise"], step_signal(working_codes("srgb"), p, step_t)).normal.any()
    rgb = image(shape, seed=sum(shape))
    fast, ref = both(rgb, p, step_t)
    check_equal(fast, ref, f"{model}/{peak}/{'x'.join(map(str, shape))}/t={step_t}")


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("step_t", [None, 2])
def test_kernel_matches_reference_before_and_linear(variant, model, step_t):
    order, space = VARIANTS[variant]
    p = make_params(model, seed=zlib.crc32(f"{variant}/{model}/{step_t}".encode()) & 0xFFFF,
                    progressive=4 if step_t else None, order=order, space=space)
    check_equal(*both(image((67, 41, 3), seed=5), p, step_t), f"{variant}/{model}/t={step_t}")


@pytest.mark.parametrize("model", MODELS)
def test_kernel_matches_reference_on_a_large_image(model):
    # 512x512x3 values with the default-like parameters: enough values to see last-bit effects if there were any.
    p = make_params(model, seed=7)
    check_equal(*both(image((512, 512, 3), seed=3), p), f"{model}/default/512x512x3")


def test_kernel_matches_reference_across_a_steep_darkening():
    # Every code of a flat ramp, many times over: each of the 256 table rows is exercised.
    p = make_params("poisson-gaussian", seed=5)
    rgb = np.tile(np.arange(256, dtype=np.uint8), 3 * 977).reshape(-1, 1, 3)
    check_equal(*both(rgb, p), "poisson-gaussian/ramp")


def test_high_32_bits_of_the_block_counter():
    # Values past 2**33 use counter word 1 (j >> 32); check the kernel's counter against rng directly.
    seed, step = 0x0ABCDEF0123456, 7
    k0, k1 = rng.split_key(seed)
    wp = np.empty(8, np.uint32)
    w2 = np.empty(4, np.uint32)
    w3 = np.empty(4, np.uint32)
    first = (1 << 32) - 2  # blocks 2**32 - 2 .. 2**32 + 1 straddle the carry into c1
    cpu_kernel.philox_chunk(first, 4, np.uint64(k0), np.uint64(k1), np.uint64(step), np.uint64(rng.STREAM_NOISE),
                            wp, w2, w3)
    want = rng.random_blocks(seed, step, rng.STREAM_NOISE, first, 4)
    assert np.array_equal(wp.reshape(4, 2), want[:, :2])
    assert np.array_equal(w2, want[:, 2]) and np.array_equal(w3, want[:, 3])


# ----------------------------------------------------------------- the pieces

def test_poisson_counts_equal_poisson_sample():
    lam = np.concatenate([np.linspace(0.0, 3.0, 64), np.geomspace(3.0, 5e3, 128), np.geomspace(1.1e4, 1e6, 64)])
    tables = poisson.build_tables(lam)
    assert tables.normal.any() and (lam == 0).any()
    gen = np.random.default_rng(9)
    n = 1 << 18
    codes = gen.integers(0, 256, n).astype(np.uint8)
    words = gen.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    words[:64] = [0, 1, 2, 0xFFFFFFFF, 0xFFFFFFFE, 1 << 31, (1 << 31) - 1, 1 << 24] * 8  # edges of u
    k = np.empty(n, np.int64)
    cpu_kernel.poisson_chunk(codes, 0, n, words, tables.guide, tables.thresholds, tables.kshift, tables.normal,
                             tables.lam, True, k)
    assert np.array_equal(k, poisson.sample(tables, codes, words))


def test_normals_equal_the_reference():
    gen = np.random.default_rng(2)
    n = 1 << 18
    w2 = gen.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    w3 = gen.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    w2[:4] = [0, 0xFFFFFFFF, 0x100, 0xFFFFFF00]
    w3[:4] = [0, 0xFFFFFFFF, 0x40000000, 0xC0000000]
    g = np.empty(2 * n, np.float32)
    cpu_kernel.box_muller_chunk(n, w2, w3, g)
    n0, n1 = nb.box_muller(w2, w3)
    assert np.array_equal(g[0::2].view(np.uint32), n0.view(np.uint32))
    assert np.array_equal(g[1::2].view(np.uint32), n1.view(np.uint32))


def test_box_muller_transcendentals_are_correctly_rounded():
    # Exhaustive over the 2**24 inputs each function can receive: float32(f64 evaluation) equals
    # float32(numpy's float64 function), i.e. the correctly rounded float32 result.
    import numba

    @numba.njit(nogil=True)
    def evaluate(m, log_out, sin_out, cos_out):
        for i in range(m.size):
            u1 = np.float32(np.float32(np.float32(m[i]) + np.float32(0.5)) * np.float32(1.0 / (1 << 24)))
            theta = np.float32(np.float32(np.float32(m[i]) * np.float32(1.0 / (1 << 24))) * np.float32(2.0 * np.pi))
            log_out[i] = np.float32(cpu_kernel.log_f64(np.float64(u1)))
            s, c = cpu_kernel.sincos_f64(np.float64(theta))
            sin_out[i] = np.float32(s)
            cos_out[i] = np.float32(c)

    step = 1 << 22
    for lo in range(0, 1 << 24, step):
        m = np.arange(lo, lo + step, dtype=np.uint32)
        out = [np.empty(step, np.float32) for _ in range(3)]
        evaluate(m, *out)
        u1 = (m.astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / (1 << 24))
        theta = m.astype(np.float32) * np.float32(1.0 / (1 << 24)) * np.float32(2.0 * np.pi)
        assert np.array_equal(out[0], np.log(u1.astype(np.float64)).astype(np.float32))
        assert np.array_equal(out[1], np.sin(theta.astype(np.float64)).astype(np.float32))
        assert np.array_equal(out[2], np.cos(theta.astype(np.float64)).astype(np.float32))


def test_float32_power_equals_signal_pow32():
    """The kernel's branch-free power against the reference on [0, 1], float32 subnormals and extreme exponents."""
    import numba

    from lowlight_gpu.synth import signal

    @numba.njit
    def run(x, y, out):
        for i in range(x.size):
            out[i] = cpu_kernel.powf_f32(x[i], y[i])

    gen = np.random.default_rng(12)
    subnormals = gen.integers(1, 1 << 23, 2000, dtype=np.int64).astype(np.uint32).view(np.float32)
    x = np.concatenate([gen.random(200_000).astype(np.float32), subnormals,
                        np.array([0.0, 1.0, 0.0031308, 1e-38], np.float32)])
    y = gen.uniform(0.01, 12.0, x.size).astype(np.float32)
    y[:100] = [100.0, 1 / 2.4, 1e-3, 1.0] * 25  # exponents far past exp's range, the sRGB curve's, tiny, one
    got = np.empty(x.size, np.float32)
    run(x, y, got)
    assert np.array_equal(got.view(np.uint32), signal.pow32(x, y).view(np.uint32))


def test_ndtri_equals_detmath_ndtri():
    p = np.concatenate([(np.array([0, 1, 2, 1000, 2 ** 31, 2 ** 32 - 1001, 2 ** 32 - 2, 2 ** 32 - 1]) + 0.5) / 2 ** 32,
                        np.random.default_rng(4).random(4096)])
    import numba

    @numba.njit
    def run(ps, out):
        for i in range(ps.size):
            out[i] = cpu_kernel.ndtri_f64(ps[i])

    got = np.empty_like(p)
    run(p, got)
    assert np.array_equal(got.view(np.uint64), detmath.ndtri(p).view(np.uint64))
    assert np.all(np.sign(got) == np.sign(p - 0.5))


# ----------------------------------------------------------------- determinism and threads

def test_two_calls_give_identical_output():
    p = make_params("poisson-gaussian", seed=3)
    flat, signal, tables, step, _, _ = inputs(image((64, 48, 3), seed=1), p)
    a = cpu_kernel.render_noisy(flat, signal, tables, p["noise"], p["seed"], step)
    b = cpu_kernel.render_noisy(flat, signal, tables, p["noise"], p["seed"], step)
    assert np.array_equal(a, b)


def test_output_does_not_depend_on_thread_count():
    jobs = [(make_params(MODELS[i % 4], seed=40 + i), image((33 + i, 29, 3), seed=i)) for i in range(12)]

    def one(job):
        p, rgb = job
        return nb.render(rgb, p)

    serial = [one(j) for j in jobs]
    for workers in (2, 4, 8):
        with ThreadPoolExecutor(workers) as pool:
            threaded = list(pool.map(one, jobs))
        assert all(np.array_equal(a, b) for a, b in zip(serial, threaded)), workers


def test_read_only_input_uses_the_same_compiled_kernel():
    p = make_params("poisson", seed=8)
    rgb = image((9, 11, 3), seed=8)
    writable = nb.render(rgb, p)
    rgb.flags.writeable = False
    assert np.array_equal(nb.render(rgb, p), writable)
    assert len(cpu_kernel.render_noisy_kernel.signatures) == 1


# ----------------------------------------------------------------- dispatch inside numpy_backend.render

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_render_uses_the_kernel_for_every_order_and_space(monkeypatch, variant):
    order, space = VARIANTS[variant]
    calls = []
    real = cpu_kernel.render_noisy
    monkeypatch.setattr(cpu_kernel, "render_noisy", lambda *a: calls.append(1) or real(*a))
    p = P.sample_params(6, config_from_dict({"noise": {"order": order, "space": space}}))
    rgb = image((13, 17, 3), seed=6)
    fast = nb.render(rgb, p)
    assert calls and nb.effective_name(p["noise"]["model"]) == "numba"
    monkeypatch.setattr(cpu_kernel, "AVAILABLE", False)
    assert nb.effective_name(p["noise"]["model"]) == "numpy"
    ref = nb.render(rgb, p)
    assert fast.shape == rgb.shape and fast.dtype == np.uint8
    check_equal(fast.reshape(-1), ref.reshape(-1), f"render/{order}/{space}")


def test_env_variable_disables_the_kernel():
    code = ("import numpy as np\n"
            "from lowlight_gpu.synth import cpu_kernel, numpy_backend as nb\n"
            "from lowlight_gpu.params import sample_params\n"
            "assert cpu_kernel.AVAILABLE is False\n"
            "p = sample_params(1, {})\n"
            "print(nb.render(np.zeros((4, 4, 3), np.uint8) + 77, p).sum())\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, LOWLIGHT_NO_NUMBA="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "numba" not in proc.stderr
    p = P.sample_params(1, {})
    assert int(proc.stdout) == int(nb.render(np.zeros((4, 4, 3), np.uint8) + 77, p).sum())


def test_a_kernel_that_cannot_compile_falls_back_to_numpy(monkeypatch, capsys):
    """A numba that imports but cannot compile here must cost speed, never pairs."""
    def broken(*args, **kwargs):
        raise RuntimeError("LLVM says no")

    monkeypatch.setattr(cpu_kernel, "_compiled", False)
    monkeypatch.setattr(cpu_kernel, "AVAILABLE", True)
    monkeypatch.setattr(cpu_kernel, "_call", broken)
    rgb = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    params = P.sample_params(11, config_from_dict({}))
    low = nb.render(rgb, params)
    assert cpu_kernel.AVAILABLE is False
    assert "pure-numpy path" in capsys.readouterr().err
    monkeypatch.setattr(cpu_kernel, "AVAILABLE", False)
    assert np.array_equal(low, nb.render(rgb, params))
