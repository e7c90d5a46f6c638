"""Sensor noise: counter layout, exact Poisson, the normal-approximation threshold, moments, models."""

import math

import numpy as np
import pytest

from lowlight_gpu import params as P
from lowlight_gpu.hashing import pair_seed
from lowlight_gpu.config import ConfigError, config_from_dict
from lowlight_gpu.synth import detmath, native, numpy_backend as nb, poisson, rng, signal

ACKLAM_LOW = 0.02425  # detmath.cuh: below (and above 1 - it) ndtri's tail formula applies
Q_VAR = 1.0 / (12 * 255.0 ** 2)  # variance of 8-bit rounding when the noise spans many steps


def params_for(seed=0, darken=None, **noise):
    cfg = config_from_dict({"darken": darken or {"alpha": 1, "beta": 1, "gamma": 1}, "noise": noise})
    return P.sample_params(seed, cfg)


def flat(code, h=256, w=256):
    return np.full((h, w, 3), code, np.uint8)


def noise_words(seed, step, first_value, count):
    """(poisson word, normal) of values [first_value, first_value + count), built here from the documented
    layout: value i uses block i // 2, its Poisson word i % 2 and its normal i % 2 of the block's Box-Muller pair."""
    nblocks = (first_value % 2 + count + 1) // 2
    words = rng.random_blocks(seed, step, rng.STREAM_NOISE, first_value // 2, nblocks)
    n0, n1 = native.box_muller(words[:, 2], words[:, 3])
    at = first_value % 2
    poisson_words = words[:, :2].reshape(-1)[at:at + count]
    normals = np.stack((n0, n1), axis=1).reshape(-1)[at:at + count]
    return poisson_words, normals


def srgb_to_linear(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def u32_words(seed, n):
    return np.random.default_rng(seed).integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)


def poisson_pmf(lam, kmax):
    return np.array([math.exp(k * math.log(lam) - lam - math.lgamma(k + 1)) for k in range(kmax + 1)])


# ----------------------------------------------------------------- counter layout and reproducibility

@pytest.mark.parametrize("first_value,count", [(0, 9), (1000, 11), (2 * (1 << 32) + 6, 5)])
def test_noise_words_follow_the_documented_counter(first_value, count):
    seed, step = 0x0ABCDEF0123456, 3
    words, normals = noise_words(seed, step, first_value, count)
    assert words.shape == normals.shape == (count,) and normals.dtype == np.float32
    k0, k1 = rng.split_key(seed)
    for off in range(count):
        i = first_value + off
        j = i // 2
        w = [np.uint32(x) for x in native.philox_blocks(k0, k1, step, 1, j, 1)[0]]
        assert words[off] == w[i % 2]
        n0, n1 = native.box_muller(np.array([w[2]]), np.array([w[3]]))
        assert normals[off] == (n0 if i % 2 == 0 else n1)[0]


def test_box_muller_from_words():
    w = u32_words(1, 200000)
    a, b = native.box_muller(w[:100000], w[100000:])
    n = a.size
    for g in (a, b):
        assert abs(g.mean()) < 5 / math.sqrt(n) and abs(g.std() - 1) < 5 / math.sqrt(2 * n)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(n)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    # Extreme words stay finite (u1 is never 0).
    e0, e1 = native.box_muller(np.array([0, 0xFFFFFFFF], np.uint32), np.array([0, 0xFFFFFFFF], np.uint32))
    assert np.all(np.isfinite(e0)) and np.all(np.isfinite(e1)) and abs(e0[0]) > 5


def test_render_rebuilt_from_the_counter_layout():
    # Value i of the flat (H, W, 3) array: Poisson word i%2 and normal i%2 of block i // 2 of step 0.
    p = params_for(31, darken={"alpha": 0.95, "beta": 0.8, "gamma": 2}, peak=3e4, read_sigma=0.004)
    rgb = np.random.default_rng(2).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    low = nb.render(rgb, p)
    flat_codes = rgb.reshape(-1)
    y = signal.darken(np.arange(256) / 255.0, 0.95, 0.8, 2.0)
    tables = poisson.build_tables(p["noise"]["peak"] * y)
    assert tables.normal.any() and not tables.normal.all()  # both branches are exercised at this peak
    words, normals = noise_words(p["seed"], 0, 0, flat_codes.size)
    k = poisson.sample(tables, flat_codes, words)
    z = k.astype(np.float32) * np.float32(1 / p["noise"]["peak"]) + np.float32(p["noise"]["read_sigma"]) * normals
    ref = np.floor(np.clip(z, 0, 1) * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    assert np.array_equal(low.reshape(-1), ref)


def test_same_pair_same_noise_other_pair_other_noise():
    rgb = np.random.default_rng(3).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    cfg = config_from_dict({})
    p = P.sample_params(pair_seed(0, "a.png"), cfg)
    a = nb.render(rgb, p)
    assert np.array_equal(a, nb.render(rgb, p))
    assert np.array_equal(a, nb.render(rgb, P.sample_params(pair_seed(0, "a.png"), cfg)))
    assert not np.array_equal(a, nb.render(rgb, p, noisy=False))
    # Same darkening and noise levels, another seed: only the noise changes.
    q = dict(p, seed=p["seed"] + 1)
    b = nb.render(rgb, q)
    assert np.mean(a != b) > 0.3
    assert np.abs(a.astype(float).mean() - b.astype(float).mean()) < 0.5


NOISE_CASES = [
    {"model": "poisson-gaussian", "peak": [100, 1000]},
    {"model": "poisson", "peak": [20, 200]},
    {"model": "gaussian", "sigma": [0.01, 0.05]},
    {"model": "brooks"},
    {"model": "poisson-gaussian", "order": "before"},
    {"model": "poisson-gaussian", "space": "linear"},
    {"model": "poisson-gaussian", "peak": 3e4},  # normal-approximation codes
]


@pytest.mark.parametrize("noise", NOISE_CASES)
def test_an_image_is_the_same_whole_or_in_parts(noise):
    """A value's noise depends only on its index: a prefix of the flat image renders as the prefix of the whole."""
    p = P.sample_params(17, config_from_dict({"noise": noise}))
    rgb = np.random.default_rng(4).integers(0, 256, size=(31, 29, 3), dtype=np.uint8)  # odd value count
    whole = nb.render(rgb, p).reshape(-1)
    for rows in (1, 7, 30):  # across the library's chunks of 1024 values
        part = nb.render(np.ascontiguousarray(rgb[:rows]), p).reshape(-1)
        assert np.array_equal(part, whole[:part.size]), rows


# ----------------------------------------------------------------- exact Poisson

@pytest.mark.parametrize("lam", [0.05, 0.5, 1.0, 4.5, 37.2, 900.0, poisson.LAMBDA_EXACT_MAX])
def test_table_sampling_is_inversion_of_the_exact_cdf(lam):
    # k = #{k' : round(CDF(k') * 2**32) <= u}, CDF computed here independently in float64.
    sd = math.sqrt(lam)
    kmax = int(lam + 12 * sd + 40)
    thr = np.floor(np.cumsum(poisson_pmf(lam, kmax)) * 2.0 ** 32 + 0.5)
    lam_codes = np.zeros(256)
    lam_codes[200] = lam
    tables = poisson.build_tables(lam_codes)
    assert not tables.normal[200]
    words = np.concatenate([u32_words(int(lam * 10), 1 << 17),
                            (np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)).astype(np.uint32),
                            np.array([0, 1, 0xFFFFFFFE, 0xFFFFFFFF], np.uint32)])
    k = poisson.sample(tables, np.full(words.size, 200, np.uint8), words)
    ref = np.searchsorted(thr, words.astype(np.float64), side="right")
    assert np.count_nonzero(k != ref) <= 2  # a word exactly on a threshold may tie-break differently
    assert np.abs(k - ref).max() <= 1
    # The stratified grid of words reproduces the pmf to its resolution 2**-16.
    grid = k[1 << 17:(1 << 17) + (1 << 16)]
    freq = np.bincount(grid, minlength=kmax + 1)[:kmax + 1] / grid.size
    assert np.abs(freq - poisson_pmf(lam, kmax)).max() < 2.0 ** -16 + 2.0 ** -31


def test_zero_rate_gives_zero_counts_and_codes_do_not_leak():
    lam = np.zeros(256)
    lam[1], lam[2] = 3.0, 250.0
    tables = poisson.build_tables(lam)
    w = u32_words(8, 30000)
    codes = np.tile(np.array([0, 1, 2], np.uint8), 10000)
    k = poisson.sample(tables, codes, w)
    assert np.all(k[codes == 0] == 0)
    assert abs(k[codes == 1].mean() - 3) < 5 * math.sqrt(3 / 10000)
    assert abs(k[codes == 2].mean() - 250) < 5 * math.sqrt(250 / 10000)
    assert k.min() >= 0


def test_p_zero_and_histogram_at_lambda_one():
    n = 1_000_000
    lam = np.full(256, 1.0)
    k = poisson.sample(poisson.build_tables(lam), np.zeros(n, np.uint8), u32_words(2024, n))
    assert k.dtype.kind == "i" and k.min() >= 0
    p0 = np.mean(k == 0)
    assert abs(p0 - math.exp(-1)) < 5 * math.sqrt(math.exp(-1) * (1 - math.exp(-1)) / n)
    # Chi-square over k = 0..7 and k >= 8 (8 degrees of freedom; P(chi2_8 > 45) is about 4e-7).
    pmf = poisson_pmf(1.0, 7)
    expected = n * np.append(pmf, 1 - pmf.sum())
    observed = np.bincount(np.minimum(k, 8), minlength=9)
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert chi2 < 45
    assert abs(k.mean() - 1) < 5 / math.sqrt(n) and abs(k.var() - 1) < 5 * math.sqrt(3 / n)


def test_image_path_at_tiny_peak_gives_whole_photon_counts():
    # peak = 1 on a white flat field: lambda = 1, z = k clipped to 1, so every code is 0 or 255.
    p = params_for(7, model="poisson", peak=1)
    low = nb.render(flat(255), p)
    assert set(np.unique(low)) == {0, 255}
    n = low.size
    p0 = np.mean(low == 0)
    assert abs(p0 - math.exp(-1)) < 5 * math.sqrt(math.exp(-1) * (1 - math.exp(-1)) / n)
    # peak = 255: z = k / 255 so each output code *is* the photon count; compare with Poisson(128).
    p = params_for(8, model="poisson", peak=255)
    low = nb.render(flat(128), p).reshape(-1).astype(int)
    pmf = poisson_pmf(128.0, 255)
    lo, hi = 95, 162  # bins with expected counts >= ~30, plus the two tails
    expected = low.size * np.concatenate(([pmf[:lo].sum()], pmf[lo:hi], [1 - pmf[:hi].sum()]))
    observed = np.bincount(np.clip(low, lo - 1, hi) - (lo - 1), minlength=hi - lo + 2)
    chi2 = np.sum((observed - expected) ** 2 / expected)
    df = expected.size - 1
    assert chi2 < df + 5 * math.sqrt(2 * df) + 10
    assert abs(low.mean() - 128) < 5 * math.sqrt(128 / low.size)


# ----------------------------------------------------------------- normal approximation and its threshold

def test_normal_approximation_error_at_the_threshold_is_below_one_step():
    lam = poisson.LAMBDA_EXACT_MAX
    exact = np.zeros(256)
    exact[1] = np.nextafter(lam, 0)  # just inside the exact range
    approx = np.zeros(256)
    approx[1] = np.nextafter(lam, np.inf)  # just above it: normal approximation
    te, tn = poisson.build_tables(exact), poisson.build_tables(approx)
    assert not te.normal[1] and tn.normal[1]
    # A fine grid of words (every 4096th) plus every word in the outer 4096 at both ends, in increasing order.
    step, top = 1 << 12, 1 << 32
    words = np.concatenate([np.arange(0, step), np.arange(step, top - step, step),
                            np.arange(top - step, top)]).astype(np.uint32)
    codes = np.ones(words.size, np.uint8)
    k_exact = poisson.sample(te, codes, words)
    k_normal = poisson.sample(tn, codes, words)
    # Both are quantile functions of the same uniform: non-decreasing in the word.
    assert np.all(np.diff(k_exact) >= 0) and np.all(np.diff(k_normal) >= 0)
    # Worst case y = 1, peak = lambda: the error in [0, 1] units is |dk| / lambda; it must be under one 8-bit step.
    worst = np.abs(k_exact - k_normal).max() / lam
    assert worst < 1 / 255
    # In the bulk (|z| < 3) the approximation is within 2 counts.
    z = (words.astype(np.float64) + 0.5) / 2 ** 32
    bulk = (z > 0.00135) & (z < 0.99865)
    assert np.abs(k_exact - k_normal)[bulk].max() <= 2


def test_ndtri_is_the_inverse_normal_cdf():
    from statistics import NormalDist

    p = np.concatenate([[1e-12, 1e-9, 1e-4, 0.01, 0.024, 0.0243, 0.025, 0.3],
                        np.linspace(0.001, 0.999, 999), [0.7, 0.975, 0.9757, 0.99, 1 - 1e-4, 1 - 1e-9]])
    ref = np.array([NormalDist().inv_cdf(float(x)) for x in p])
    assert np.abs(detmath.ndtri(p) - ref).max() < 1e-8
    q = np.unique(p)
    z = detmath.ndtri(q)
    # Monotone up to the last bit of detmath.log (inputs 1 ulp apart may swap), also across the switch at 0.02425.
    assert np.all(np.diff(z) >= -2 * np.spacing(np.abs(z[1:])))
    edge = detmath.ndtri(np.array([np.nextafter(ACKLAM_LOW, 0), ACKLAM_LOW]))
    assert 0 < edge[1] - edge[0] < 1e-8


def test_normal_branch_moments_above_the_threshold():
    n = 200000
    lam = 5e4
    tables = poisson.build_tables(np.full(256, lam))
    assert tables.normal.all()
    k = poisson.sample(tables, np.zeros(n, np.uint8), u32_words(99, n))
    assert np.all(k == np.round(k))
    assert abs(k.mean() - lam) < 5 * math.sqrt(lam / n)
    assert abs(k.var() / lam - 1) < 5 * math.sqrt(2 / n)


# ----------------------------------------------------------------- moments on flat fields

def check_moments(low, y, var, encode=None):
    """Mean unbiased (5 sigma) and variance within 5 sigma of var + the 8-bit rounding variance."""
    v = low.reshape(-1).astype(np.float64) / 255.0
    if encode is not None:
        v = encode(v)
    n = v.size
    measured = v.var()
    ratio = measured / var
    assert abs(v.mean() - y) < 5 * math.sqrt(var / n) + 1e-5, (v.mean(), y)
    assert abs(ratio - 1) < 5 * math.sqrt(2.2 / n), ratio
    return ratio


def test_poisson_gaussian_flat_field_moments():
    code = 128
    y = code / 255
    p = params_for(1, model="poisson-gaussian", peak=200, read_sigma=0.01)
    assert p["noise"] == {"model": "poisson-gaussian", "peak": 200.0, "read_sigma": 0.01,
                          "order": "after", "space": "srgb"}
    low = nb.render(flat(code), p)
    check_moments(low, y, y / 200 + 0.01 ** 2 + Q_VAR)


def test_poisson_gaussian_flat_field_moments_with_sampled_levels():
    code = 140
    y = code / 255
    for seed in (3, 4):
        p = params_for(seed, model="poisson-gaussian", peak=[50, 2000], read_sigma=[0.005, 0.02])
        nz = p["noise"]
        check_moments(nb.render(flat(code), p), y, y / nz["peak"] + nz["read_sigma"] ** 2 + Q_VAR)


def test_poisson_only_flat_field_moments_are_exact_counts():
    p = params_for(2, model="poisson", peak=255)
    assert set(p["noise"]) == {"model", "peak", "order", "space"}
    low = nb.render(flat(100), p)
    check_moments(low, 100 / 255, (100 / 255) / 255)  # output code == photon count: no rounding term


def test_gaussian_flat_field_moments():
    p = params_for(3, model="gaussian", sigma=0.03)
    assert p["noise"]["sigma"] == 0.03 and "peak" not in p["noise"]
    check_moments(nb.render(flat(128), p), 128 / 255, 0.03 ** 2 + Q_VAR)


def test_brooks_flat_field_moments():
    p = params_for(5, model="brooks")  # a seed with a large shot level, so read noise is ~5% of the variance
    nz = p["noise"]
    y = 128 / 255
    assert nz["read"] > 0.03 * nz["shot"] * y
    # Brooks: variance = shot * y + read.
    check_moments(nb.render(flat(128), p), y, nz["shot"] * y + nz["read"] + Q_VAR)


def test_noise_before_darkening():
    # gamma = 1: low = beta * alpha * noisy(x), so every variance scales by (alpha beta) ** 2.
    darken = {"alpha": 1, "beta": 0.5, "gamma": 1}
    x = 200 / 255
    before = params_for(4, darken=darken, peak=200, read_sigma=0.01, order="before")
    after = params_for(4, darken=darken, peak=200, read_sigma=0.01, order="after")
    check_moments(nb.render(flat(200), before), 0.5 * x, 0.25 * (x / 200 + 1e-4) + Q_VAR)
    check_moments(nb.render(flat(200), after), 0.5 * x, 0.5 * x / 200 + 1e-4 + Q_VAR)


def test_noise_in_linear_light():
    # space linear: decode, darken, add noise in linear light, re-encode.  Decoding the output gives the
    # linear moments back (up to the sRGB rounding step, about 0.006 in linear units here).
    code = 188
    y = float(srgb_to_linear(code / 255))
    p = params_for(5, peak=200, read_sigma=0.01, space="linear")
    low = nb.render(flat(code), p)
    slope = 2.4 / 1.055 * ((float(np.mean(low)) / 255 + 0.055) / 1.055) ** 1.4  # d linear / d sRGB
    ratio = check_moments(low, y, y / 200 + 1e-4 + slope ** 2 * Q_VAR, encode=srgb_to_linear)
    assert 0.95 < ratio < 1.05
    # The same levels in sRGB space would give a clearly different linear variance.
    srgb_low = nb.render(flat(code), params_for(5, peak=200, read_sigma=0.01))
    assert srgb_to_linear(srgb_low / 255).var() > 1.5 * (y / 200 + 1e-4)


def test_noise_is_independent_across_pixels_and_channels():
    p = params_for(6, peak=200, read_sigma=0.01)
    low = nb.render(flat(128), p).astype(np.float64)
    n = low.shape[0] * low.shape[1]
    bound = 5 / math.sqrt(n)

    def corr(a, b):
        return abs(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])

    assert corr(low[:, :-1], low[:, 1:]) < bound  # horizontal neighbours
    assert corr(low[:-1], low[1:]) < bound  # vertical neighbours
    for c0, c1 in ((0, 1), (1, 2), (0, 2)):
        assert corr(low[..., c0], low[..., c1]) < bound
    f = low.reshape(-1)
    assert corr(f[0::2], f[1::2]) < bound  # the two values sharing one Philox block
    # And the noise is not trivially constant.
    assert low.std() > 5


# ----------------------------------------------------------------- models and configs

def test_model_none_is_the_clean_image():
    p = params_for(9, model="none")
    rgb = np.random.default_rng(1).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    assert np.array_equal(nb.render(rgb, p), nb.render(rgb, p, noisy=False))
    assert set(p["noise"]) == {"model", "order", "space"}


@pytest.mark.parametrize("model", ["none", "poisson-gaussian", "poisson", "gaussian", "brooks"])
def test_every_model_name_is_accepted(model):
    assert config_from_dict({"noise": {"model": model}}).noise.model == model


@pytest.mark.parametrize("model", ["Poisson", "gauss", "poisson+gaussian", "", "brooks2019", 1])
def test_bad_model_names_are_rejected(model):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"noise": {"model": model}})
    msg = str(exc.value)
    assert msg.startswith("config key 'noise.model' must be one of")
    for name in ("none", "poisson-gaussian", "poisson", "gaussian", "brooks"):
        assert name in msg
