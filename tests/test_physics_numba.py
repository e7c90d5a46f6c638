"""The compiled physics twin (synth/physics_numba.py) against the numpy reference, byte for byte.

Small odd-sized images, every component set, several cameras and seeds, a
progressive step, raw mosaics, the Poisson inversion on its own over all three
rate regimes, and the fallback to the reference without numba.
"""

import numpy as np
import pytest

from lowlight_gpu.params import sample_params
from lowlight_gpu.synth import cpu_kernel, numpy_backend, physics

numba_twin = physics.compiled()
pytestmark = pytest.mark.skipif(numba_twin is None, reason="numba is not available (or LOWLIGHT_NO_NUMBA is set)")

COMPONENTS = ["p", "pg", "pt", "ptr", "ptrqc", ""]
CAMERAS = ["virtual", "SonyA7S2", "IMX686", "CanonEOS70D"]


def photo(h, w, seed):
    """A smooth gradient with texture: dark and bright regions (every Poisson regime), odd sizes allowed."""
    gen = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 255.0 * (x + y) / max(h + w - 2, 1)
    return np.clip(base[..., None] + gen.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def check_same(fast, ref, what):
    """Equal bytes, with the count and first position of any difference in the message."""
    assert fast.dtype == ref.dtype and fast.shape == ref.shape, what
    bad = np.argwhere(fast != ref)
    assert bad.size == 0, f"{what}: {len(bad)} values differ, first at {tuple(bad[0])}"


@pytest.mark.parametrize("components", COMPONENTS)
def test_image_and_raw_match_the_reference_for_every_component_set(components):
    for i, camera in enumerate(CAMERAS):
        seed = 11 + 7 * i
        params = sample_params(seed, {"noise": {"model": "physics", "camera": camera, "components": components}})
        img = photo(23 + 2 * i, 37 - 3 * i, seed)
        what = f"{camera}/{components!r}/seed {seed}"
        check_same(numba_twin.render(img, params), physics.render_reference(img, params), what)
        for fast, ref in zip(numba_twin.render_raw(img, params), physics.render_raw_reference(img, params)):
            check_same(fast, ref, what + "/raw")


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (2, 3), (3, 2), (17, 29)])
def test_odd_and_degenerate_sizes_match(shape):
    params = sample_params(4, {"noise": {"model": "physics", "camera": "NikonD850"}})
    img = photo(*shape, 4)
    for noisy in (True, False):
        check_same(numba_twin.render(img, params, None, noisy), physics.render_reference(img, params, None, noisy),
                   f"{shape} noisy={noisy}")
    for fast, ref in zip(numba_twin.render_raw(img, params), physics.render_raw_reference(img, params)):
        check_same(fast, ref, f"{shape} raw")


def test_progressive_steps_and_normal_approximation_match():
    img = photo(19, 31, 8)
    params = sample_params(8, {"noise": {"model": "physics", "camera": "IMX686", "gain": 0.02},
                               "progressive": {"enabled": True, "steps": 3}})
    for t in (1, 2, 3, None):
        check_same(numba_twin.render(img, params, t), physics.render_reference(img, params, t), f"step {t}")
        for fast, ref in zip(numba_twin.render_raw(img, params, t), physics.render_raw_reference(img, params, t)):
            check_same(fast, ref, f"step {t} raw")


def test_reference_bands_and_the_ring_of_rows_agree(monkeypatch):
    img = photo(21, 9, 3)
    params = sample_params(3, {"noise": {"model": "physics", "camera": "SonyA7S2"}})
    fast = numba_twin.render(img, params)
    monkeypatch.setattr(physics, "CHUNK_SITES", 9)  # one row per band in the reference
    check_same(fast, physics.render_reference(img, params), "one-row bands")


@pytest.mark.parametrize("lam", [0.0, 1e-9, 0.7, 29.99, 30.0, 30.5, 512.3, 9999.5, 1e4, 1e4 + 1.0, 3e5])
def test_poisson_row_is_the_reference_inversion(lam):
    gen = np.random.default_rng(int(lam) + 1)
    u = physics.uniform(gen.integers(0, 2 ** 32, 3000, dtype=np.uint64))
    u[:4] = physics.uniform(np.array([0, 1, 2 ** 32 - 2, 2 ** 32 - 1], np.uint64))  # the extreme words
    rates = np.full(u.shape, lam)
    rates[1::3] = lam * 0.5  # a row mixes rates (and so walk lengths and regimes)
    k = np.empty_like(u)
    work = np.zeros((12, u.size))
    numba_twin.poisson_row(rates, u, k, *work[:4], work[4:])
    check_same(k, physics.poisson_counts(rates, u), f"lam={lam}")


def test_without_numba_the_reference_renders_and_the_row_says_numpy(monkeypatch):
    img = photo(9, 11, 2)
    params = sample_params(2, {"noise": {"model": "physics"}})
    fast = physics.render(img, params)
    assert numpy_backend.effective_name("physics") == "numba"
    monkeypatch.setattr(cpu_kernel, "AVAILABLE", False)
    monkeypatch.setitem(numba_twin._state, "compiled", False)
    assert physics.compiled() is None and numpy_backend.effective_name("physics") == "numpy"
    calls = []
    real = physics.render_reference
    monkeypatch.setattr(physics, "render_reference", lambda *a: calls.append(1) or real(*a))
    check_same(physics.render(img, params), fast, "fallback")
    assert calls


@pytest.mark.parametrize("lam", [-0.26, 0.0, 0.14, 1.0, 29.5, 35.0])
def test_read_noise_for_every_tukey_shape_matches(lam):
    """pow_unit's range (0 < |lam| <= 30, lam != 1) and the general pow and log outside it."""
    img = photo(13, 15, 5)
    params = sample_params(5, {"noise": {"model": "physics", "camera": "SonyA7S2", "components": "t"}})
    params["noise"]["read_lambda"] = lam
    for fast, ref in zip(numba_twin.render_raw(img, params), physics.render_raw_reference(img, params)):
        check_same(fast, ref, f"lambda {lam}")


def test_code_guide_is_searchsorted():
    t, guide = numba_twin.code_guide()
    v = np.concatenate([t, np.nextafter(t, 0.0), np.nextafter(t, 1.0), np.linspace(0.0, 1.0, 4099)])
    got = np.array([numba_twin.code_of(t, guide, x) for x in v])
    np.testing.assert_array_equal(got, np.searchsorted(t, v, side="right"))
