"""The clean darkening low = beta * (alpha * x) ** gamma on the numpy backend (no noise)."""

import numpy as np
import pytest

from lowlight_gpu import params as P
from lowlight_gpu.hashing import pair_seed
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.synth import get, numpy_backend as nb, signal

CODES = np.arange(256, dtype=np.uint8)


def all_codes_image():
    """16 x 16 x 3: every code once per channel, in a different order in each channel."""
    r = CODES
    g = CODES[::-1]
    b = np.roll(CODES, 101)
    return np.stack([r, g, b], axis=-1).reshape(16, 16, 3)


def random_image(seed, h=48, w=40):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def srgb_to_linear(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v):
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.maximum(v, 0.0031308) ** (1 / 2.4) - 0.055)


def clean_params(seed, **darken):
    cfg = config_from_dict({"darken": darken, "noise": {"model": "none"}})
    return P.sample_params(seed, cfg)


@pytest.mark.parametrize("seed", [0, 1, 2, 12345, 2 ** 52 + 17])
def test_low_is_the_float64_formula_within_one_lsb(seed):
    p = clean_params(seed)
    for rgb in (all_codes_image(), random_image(seed)):
        low = nb.render(rgb, p)
        assert low.dtype == np.uint8 and low.shape == rgb.shape
        x = rgb.astype(np.float64) / 255.0
        ref = p["beta"] * (p["alpha"] * x) ** p["gamma"] * 255.0
        err = np.abs(low - ref)
        assert err.max() <= 1.0
        # The tables round half up in float64, so the error is in fact at most half a step.
        assert err.max() <= 0.5 + 1e-9


def test_darkening_is_a_256_entry_lookup_table():
    p = clean_params(77)
    lut = signal.clean_lut(p, None, "srgb")
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert np.all(np.diff(lut.astype(int)) >= 0) and lut[0] == 0
    assert lut[255] == int(np.floor(p["beta"] * p["alpha"] ** p["gamma"] * 255 + 0.5))
    rgb = random_image(5, 64, 64)
    assert np.array_equal(nb.render(rgb, p), lut[rgb])
    # With a noise model configured, noisy=False is the same table.
    noisy_cfg = config_from_dict({"darken": {"alpha": p["alpha"], "beta": p["beta"], "gamma": p["gamma"]}})
    q = P.sample_params(77, noisy_cfg)
    assert q["noise"]["model"] == "poisson-gaussian"
    assert np.array_equal(nb.render(rgb, q, noisy=False), lut[rgb])


def test_each_channel_is_darkened_independently():
    p = clean_params(9)
    rgb = random_image(9)
    low = nb.render(rgb, p)
    perm = [2, 0, 1]
    assert np.array_equal(nb.render(rgb[..., perm], p), low[..., perm])
    # A pixel's output depends on its own code only.
    assert np.array_equal(nb.render(rgb[:7, 3:9], p), low[:7, 3:9])


def test_identity_parameters_give_back_the_input():
    p = clean_params(0, alpha=1, beta=1, gamma=1)
    rgb = all_codes_image()
    assert np.array_equal(nb.render(rgb, p), rgb)


def test_fixed_values_are_applied():
    p = clean_params(3, alpha=0.5, beta=0.8, gamma=2)
    low = nb.render(all_codes_image(), p)
    x = all_codes_image() / 255.0
    assert np.array_equal(low, np.floor(0.8 * (0.5 * x) ** 2 * 255 + 0.5).astype(np.uint8))


def test_linear_space_without_noise():
    cfg = config_from_dict({"noise": {"model": "none", "space": "linear"}})
    p = P.sample_params(21, cfg)
    rgb = all_codes_image()
    low = nb.render(rgb, p)
    y = p["beta"] * (p["alpha"] * srgb_to_linear(rgb / 255.0)) ** p["gamma"]
    ref = linear_to_srgb(y) * 255.0
    assert np.abs(low - ref).max() <= 0.5 + 1e-9
    # Darkening in linear light is not the same as darkening the sRGB values.
    assert not np.array_equal(low, nb.render(rgb, clean_params(21)))


def test_srgb_curves_invert_each_other_and_are_continuous():
    v = np.linspace(0, 1, 10001)
    assert np.abs(signal.linear_to_srgb(signal.srgb_to_linear(v)) - v).max() < 1e-12
    assert np.abs(signal.srgb_to_linear(v) - srgb_to_linear(v)).max() < 1e-15
    # No jump at the knee of either curve.
    k = 0.04045
    assert abs(signal.srgb_to_linear(np.nextafter(k, 1)) - signal.srgb_to_linear(k)) < 1e-6
    kl = 0.0031308
    assert abs(signal.linear_to_srgb(np.nextafter(kl, 1)) - signal.linear_to_srgb(kl)) < 1e-6


def test_render_is_a_function_of_seed_and_relative_path():
    cfg = config_from_dict({})
    rgb = random_image(1, 32, 32)

    def low(seed, rel):
        return nb.render(rgb, P.sample_params(pair_seed(seed, rel), cfg))

    a = low(4, "x/a.png")
    assert np.array_equal(a, low(4, "x/a.png"))
    assert not np.array_equal(a, low(4, "x/b.png"))
    assert not np.array_equal(a, low(5, "x/a.png"))


def test_backend_lookup_and_render_many():
    assert get("numpy") is nb
    p = P.sample_params(8, config_from_dict({"progressive": {"enabled": True, "steps": 3}}))
    rgb = random_image(8, 16, 16)
    specs = [(1, True), (3, False), (None, True)]
    outs = nb.render_many(rgb, p, specs)
    assert len(outs) == 3
    for (t, noisy), out in zip(specs, outs):
        assert np.array_equal(out, nb.render(rgb, p, t, noisy))


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (3, 5, 3), (7, 9, 4), (48, 40, 3), (2, 2)])
def test_apply_lut_is_the_table_lookup(shape):
    gen = np.random.default_rng(len(shape) * 100 + shape[0])
    lut = gen.integers(0, 256, 256).astype(np.uint8)
    rgb = gen.integers(0, 256, shape, dtype=np.uint8)
    got = nb.apply_lut(lut, rgb)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    assert np.array_equal(got, lut[rgb])  # odd sizes too: the last byte has no partner
    view = np.asarray(all_codes_image())[:, 1:, :]  # not contiguous
    assert np.array_equal(nb.apply_lut(lut, view), lut[view])
