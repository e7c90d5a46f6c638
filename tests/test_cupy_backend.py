"""The CuPy backend against the numpy reference, on a GPU.

Skipped unless CuPy imports and ``cupy_backend.available()`` runs its kernels.
Every image must be identical to the reference's (ARCHITECTURE.md, "Reproducibility").
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

try:
    import cupy
except Exception as exc:  # ImportError, or a broken CUDA install
    pytest.skip(f"cupy is not importable: {exc}", allow_module_level=True)

from lowlight_gpu.config import config_from_dict
from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import cupy_backend, numpy_backend

_OK, _WHY = cupy_backend.available()
if not _OK:
    pytest.skip(f"cupy backend unavailable: {_WHY}", allow_module_level=True)

# (config, steps to render): every model, order, space, progressive steps, normal-approximation rates.
CASES = [
    ({}, (None,)),
    ({"noise": {"model": "poisson"}}, (None,)),
    ({"noise": {"model": "gaussian"}}, (None,)),
    ({"noise": {"model": "brooks"}}, (None,)),
    ({"noise": {"model": "none"}}, (None,)),
    ({"noise": {"order": "before"}}, (None,)),
    ({"noise": {"space": "linear"}}, (None,)),
    ({"noise": {"order": "before", "space": "linear"}}, (None,)),
    ({"noise": {"model": "gaussian", "order": "before", "space": "linear"}}, (None,)),
    ({"noise": {"peak": [2e4, 1e6]}}, (None,)),
    ({"progressive": {"enabled": True, "steps": 4}}, (None, 1, 3, 4)),
    ({"progressive": {"enabled": True, "steps": 3}, "noise": {"order": "before", "space": "linear"}}, (1, 2, 3)),
]
CASE_IDS = [str(c) for c, _ in CASES]
SHAPES = [(37, 23, 3), (1, 1, 3), (5, 7, 3), (64, 48, 3)]
SEEDS = (3, 2 ** 52 + 17)


def params_for(config, seed):
    """The sampled params of one pair."""
    return sample_params(seed, config_from_dict(config))


def image(shape, seed=0):
    """A reproducible random uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def numpy_reference(rgb, params, t, noisy=True):
    """numpy_backend.render: the model's CPU library, the very C the kernels compile."""
    return numpy_backend.render(rgb, params, t, noisy)


def assert_same(got, want, what=""):
    """Identical images."""
    assert got.shape == want.shape and got.dtype == np.uint8
    differ = int(np.count_nonzero(got != want))
    assert differ == 0, f"{what}: {differ} of {got.size} values differ"


def test_available():
    assert cupy_backend.available() == (True, "")
    assert cupy_backend.NAME == "cupy"


@pytest.mark.parametrize("config,steps", CASES, ids=CASE_IDS)
def test_clean_images_are_identical(config, steps):
    rgb = image((37, 23, 3), 1)
    for seed in SEEDS:
        params = params_for(config, seed)
        for t in steps:
            assert np.array_equal(cupy_backend.render(rgb, params, t, noisy=False),
                                  numpy_reference(rgb, params, t, noisy=False))


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("config,steps", CASES, ids=CASE_IDS)
def test_noisy_images_match_numpy(config, steps, shape):
    rgb = image(shape, 2)
    for seed in SEEDS:
        params = params_for(config, seed)
        for t in steps:
            assert_same(cupy_backend.render(rgb, params, t), numpy_reference(rgb, params, t), f"seed={seed} t={t}")


def test_every_case_on_a_larger_image():
    rgb = image((257, 193, 3), 3)
    for config, steps in CASES:
        for seed in SEEDS:
            params = params_for(config, seed)
            for t in steps:
                got, want = cupy_backend.render(rgb, params, t), numpy_reference(rgb, params, t)
                assert_same(got, want, f"{config} seed={seed} t={t}")


def test_default_config_matches_numpy_backend_as_shipped():
    """Against numpy_backend.render exactly as the pipeline calls it."""
    rgb = image((97, 61, 3), 4)
    params = params_for({}, 5)
    assert_same(cupy_backend.render(rgb, params), numpy_backend.render(rgb, params))


def test_cupy_input_gives_cupy_output():
    rgb = image((37, 23, 3), 5)
    params = params_for({"progressive": {"enabled": True, "steps": 3}}, 6)
    for t, noisy in [(None, True), (2, True), (1, False)]:
        got = cupy_backend.render(cupy.asarray(rgb), params, t, noisy)
        assert isinstance(got, cupy.ndarray) and got.shape == rgb.shape and got.dtype == cupy.uint8
        assert np.array_equal(cupy.asnumpy(got), cupy_backend.render(rgb, params, t, noisy))


def test_non_contiguous_input():
    rgb = image((40, 50, 3), 6)[:, ::2]
    params = params_for({}, 7)
    assert_same(cupy_backend.render(rgb, params), numpy_reference(np.ascontiguousarray(rgb), params, None))


def test_rejects_non_uint8():
    with pytest.raises(TypeError):
        cupy_backend.render(np.zeros((2, 2, 3), np.float32), params_for({}, 1))


SPECS = [(None, True), (None, False), (1, True), (2, False), (3, True), (3, False)]


def test_render_many_equals_render():
    rgb = image((37, 23, 3), 7)
    params = params_for({"progressive": {"enabled": True, "steps": 3}}, 8)
    many = cupy_backend.render_many(rgb, params, SPECS)
    assert len(many) == len(SPECS)
    for (t, noisy), got in zip(SPECS, many):
        assert isinstance(got, np.ndarray)
        assert np.array_equal(got, cupy_backend.render(rgb, params, t, noisy))
    assert cupy_backend.render_many(rgb, params, []) == []


def test_threads_match_serial():
    tasks = [(image((31 + i, 17 + 2 * i, 3), i), params_for({"progressive": {"enabled": True, "steps": 3}}, i))
             for i in range(24)]
    serial = [cupy_backend.render_many(rgb, params, SPECS) for rgb, params in tasks]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda task: cupy_backend.render_many(*task, SPECS), tasks * 3))
    for i, outs in enumerate(threaded):
        for got, want in zip(outs, serial[i % len(tasks)]):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("slice_values", [2, 1000, 4096])
def test_forced_slices_are_identical(slice_values):
    rgb = image((37, 23, 3), 8)  # 2553 values: the last slice is odd
    params = params_for({"noise": {"order": "before", "space": "linear"}}, 9)
    whole = cupy_backend.render_many(rgb, params, SPECS[:2])
    sliced = cupy_backend.render_many(rgb, params, SPECS[:2], slice_values=slice_values)
    for got, want in zip(sliced, whole):
        assert np.array_equal(got, want)


@pytest.fixture
def slice_spy(monkeypatch):
    """Records the slice size of every device pass."""
    sizes = []
    real = cupy_backend._device_pass

    def spy(codes, blob, jobs, outs, slice_values, stream):
        sizes.append(slice_values)
        return real(codes, blob, jobs, outs, slice_values, stream)

    monkeypatch.setattr(cupy_backend, "_device_pass", spy)
    return sizes


def test_out_of_memory_falls_back_to_slices(slice_spy):
    rgb = image((1536, 2048, 3), 9)  # 9 MiB of codes: a full pass needs about 19 MiB
    params = params_for({}, 10)
    want = cupy_backend.render(rgb, params)
    pool = cupy.get_default_memory_pool()
    limit = pool.get_limit()
    pool.free_all_blocks()
    slice_spy.clear()
    pool.set_limit(size=pool.total_bytes() + 10 * 2 ** 20)  # quarter slices (about 6 MiB) fit, the full pass does not
    try:
        got = cupy_backend.render(rgb, params)
    finally:
        pool.set_limit(size=limit)
    assert len(slice_spy) >= 2 and slice_spy[-1] < slice_spy[0], slice_spy
    assert np.array_equal(got, want)


def test_configure_batch_megapixels_slices(monkeypatch, slice_spy):
    monkeypatch.setattr(cupy_backend, "SETTINGS", cupy_backend.SETTINGS)  # restored afterwards
    rgb = image((1000, 800, 3), 10)  # above SMALL_IMAGE_VALUES: rendered on its own, in slices
    assert rgb.size > cupy_backend.SMALL_IMAGE_VALUES
    params = params_for({}, 11)
    want = cupy_backend.render(rgb, params)
    cupy_backend.configure(batch_megapixels=0.2)
    slice_spy.clear()
    got = cupy_backend.render(rgb, params)
    assert slice_spy == [600_000]
    assert np.array_equal(got, want)


@pytest.fixture
def batch_spy(monkeypatch):
    """Records how many images each batched device pass carried."""
    sizes = []
    real = cupy_backend._render_batch

    def spy(batch):
        sizes.append(len(batch))
        return real(batch)

    monkeypatch.setattr(cupy_backend, "_render_batch", spy)
    monkeypatch.setattr(cupy_backend, "SETTINGS", cupy_backend.Settings(cupy_backend.SETTINGS.slice_values, True))
    return sizes


def test_batched_small_images_equal_images_rendered_alone(batch_spy):
    tasks = [(image((29 + 3 * i, 41 + i, 3), 50 + i), params_for(CASES[i % len(CASES)][0], 60 + i))
             for i in range(48)]
    cupy_backend.configure(batch_small_images=False)
    try:
        alone = [cupy_backend.render_many(rgb, params, SPECS[:2]) for rgb, params in tasks]
    finally:
        cupy_backend.configure(batch_small_images=True)
    assert batch_spy == []
    with ThreadPoolExecutor(16) as pool:
        batched = list(pool.map(lambda task: cupy_backend.render_many(*task, SPECS[:2]), tasks))
    assert sum(batch_spy) == len(tasks)
    print(f"48 small images in {len(batch_spy)} batched passes (largest {max(batch_spy)})")
    for (rgb, params), outs, want in zip(tasks, batched, alone):
        for got, ref, (t, noisy) in zip(outs, want, SPECS[:2]):
            assert np.array_equal(got, ref)
            if noisy:
                assert_same(got, numpy_reference(rgb, params, t), "batched")
