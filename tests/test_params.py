"""Pair seeds and every sampled scalar: ranges, fixed values, slots, the Brooks relation."""

import hashlib
import json
import math

import numpy as np
import pytest

from lowlight_gpu import params as P
from lowlight_gpu.hashing import pair_seed
from lowlight_gpu.synth import rng
from lowlight_gpu.config import config_from_dict


def noise_cfg(**noise):
    return config_from_dict({"noise": noise}).noise


def test_pair_seed_is_the_documented_hash_of_seed_and_relative_path():
    s = pair_seed(7, "sub/dir/img_001.png")
    digest = hashlib.blake2b(b"7\x00sub/dir/img_001.png", digest_size=8).digest()
    assert s == int.from_bytes(digest, "little") & ((1 << 53) - 1)
    assert 0 <= s < 2 ** 53
    assert s == pair_seed(7, "sub/dir/img_001.png")
    assert s != pair_seed(8, "sub/dir/img_001.png")
    assert s != pair_seed(7, "sub/dir/img_002.png")
    assert s != pair_seed(7, "img_001.png")  # the relative path, not just the file name


def test_params_depend_only_on_the_pair_seed():
    cfg = config_from_dict({"progressive": {"enabled": True, "steps": 4}})
    a = P.sample_params(pair_seed(3, "a.png"), cfg)
    assert a == P.sample_params(pair_seed(3, "a.png"), cfg)
    b = P.sample_params(pair_seed(3, "b.png"), cfg)
    for k in ("alpha", "beta", "gamma"):
        assert a[k] != b[k]
    assert a["noise"]["peak"] != b["noise"]["peak"]
    assert json.loads(json.dumps(a)) == a  # plain JSON-ready data, replayable from a manifest row


def test_default_darken_ranges():
    n = 1500
    cfg = config_from_dict({})
    draws = [P.sample_params(s, cfg) for s in range(n)]
    for name, (lo, hi) in (("alpha", (0.9, 1.0)), ("beta", (0.5, 1.0)), ("gamma", (1.5, 5.0))):
        v = np.array([d[name] for d in draws])
        assert v.min() >= lo and v.max() <= hi, name
        # Uniform on [lo, hi]: mean at the midpoint (5 sigma), and both ends are reached.
        assert abs(v.mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * n), name
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo), name
    # alpha, beta, gamma come from different slots: uncorrelated.
    a = np.array([d["alpha"] for d in draws])
    g = np.array([d["gamma"] for d in draws])
    assert abs(np.corrcoef(a, g)[0, 1]) < 5 / math.sqrt(n)


def test_a_single_number_fixes_the_value():
    cfg = config_from_dict({"darken": {"alpha": 0.95, "beta": 0.7, "gamma": 2.5},
                            "noise": {"peak": 300, "read_sigma": 0.004}})
    for s in range(20):
        p = P.sample_params(s, cfg)
        assert (p["alpha"], p["beta"], p["gamma"]) == (0.95, 0.7, 2.5)
        assert (p["noise"]["peak"], p["noise"]["read_sigma"]) == (300.0, 0.004)


def test_slots_do_not_shift_when_other_settings_change():
    seed = 987654321
    base = P.sample_params(seed, None)
    other = P.sample_params(seed, {"darken": {"gamma": 3}, "noise": {"model": "gaussian"},
                                   "progressive": {"enabled": True}})
    assert other["alpha"] == base["alpha"] and other["beta"] == base["beta"]
    assert base["alpha"] == 0.9 + 0.1 * rng.scalar_uniform(seed, P.SLOTS["alpha"])
    assert base["gamma"] == 1.5 + 3.5 * rng.scalar_uniform(seed, P.SLOTS["gamma"])


def test_peak_is_log_uniform_and_read_sigma_uniform():
    n = 2000
    nc = noise_cfg(peak=[10, 10000], read_sigma=[0.002, 0.01])
    d = [P.sample_noise(s, nc) for s in range(n)]
    lp = np.log10([x["peak"] for x in d])
    rs = np.array([x["read_sigma"] for x in d])
    assert lp.min() >= 1 and lp.max() <= 4
    # log10(peak) ~ U(1, 4): mean 2.5, and each decade holds a third of the draws.
    assert abs(lp.mean() - 2.5) < 5 * 3 / math.sqrt(12 * n)
    counts = np.bincount(np.minimum(lp - 1, 2.999).astype(int), minlength=3)
    assert np.all(np.abs(counts - n / 3) < 5 * math.sqrt(n * (1 / 3) * (2 / 3)))
    assert rs.min() >= 0.002 and rs.max() <= 0.01
    assert abs(rs.mean() - 0.006) < 5 * 0.008 / math.sqrt(12 * n)
    assert abs(np.corrcoef(lp, rs)[0, 1]) < 5 / math.sqrt(n)


@pytest.mark.parametrize("model,keys", [
    ("poisson-gaussian", {"peak", "read_sigma"}),
    ("poisson", {"peak"}),
    ("gaussian", {"sigma"}),
    ("brooks", {"peak", "read_sigma", "shot", "read"}),
    ("none", set()),
])
def test_noise_params_per_model(model, keys):
    nc = noise_cfg(model=model, sigma=[0.01, 0.05], order="before", space="linear")
    p = P.sample_noise(42, nc)
    assert set(p) == {"model", "order", "space"} | keys
    assert (p["model"], p["order"], p["space"]) == (model, "before", "linear")
    if "sigma" in keys:
        assert 0.01 <= p["sigma"] <= 0.05
    if model in ("poisson", "poisson-gaussian"):
        assert 100 <= p["peak"] <= 1000


def test_brooks_relation_over_many_seeds():
    n = 3000
    nc = noise_cfg(model="brooks")
    d = [P.sample_noise(s, nc) for s in range(n)]
    shot = np.array([x["shot"] for x in d])
    read = np.array([x["read"] for x in d])
    assert shot.min() >= 1e-4 and shot.max() <= 0.012
    # shot is the variance per unit signal (1/peak); read is a variance (read_sigma ** 2).
    assert np.allclose([x["peak"] for x in d], 1 / shot, rtol=1e-12)
    assert np.allclose([x["read_sigma"] ** 2 for x in d], read, rtol=1e-12)
    x, y = np.log(shot), np.log(read)
    # log(shot) ~ U(log 1e-4, log 0.012).
    span = math.log(0.012) - math.log(1e-4)
    assert abs(x.mean() - (math.log(1e-4) + span / 2)) < 5 * span / math.sqrt(12 * n)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    # Standard errors of least squares with residual sd 0.26 (about 0.004 on the slope, 0.03 on the intercept).
    sxx = np.sum((x - x.mean()) ** 2)
    se_slope = 0.26 / math.sqrt(sxx)
    se_int = 0.26 * math.sqrt(1 / n + x.mean() ** 2 / sxx)
    assert abs(slope - 2.18) < 5 * se_slope
    assert abs(intercept - 1.20) < 5 * se_int
    assert abs(resid.std(ddof=2) - 0.26) < 5 * 0.26 / math.sqrt(2 * n)
    assert abs(np.mean(resid)) < 5 * 0.26 / math.sqrt(n)


def test_progressive_params_follow_the_formula():
    cfg = config_from_dict({"progressive": {"enabled": True, "steps": 6}})
    assert "progressive" not in P.sample_params(1, None)
    for s in range(5):
        p = P.sample_params(s, cfg)
        prog = p["progressive"]
        T, g = 6, p["gamma"]
        eta = g ** (1 / T)
        b = p["beta"] * p["alpha"] ** g
        a = b ** ((1 - eta) / (eta * (1 - eta ** T)))
        assert set(prog) == {"steps", "eta", "a"} and prog["steps"] == T
        assert prog["eta"] == pytest.approx(eta, rel=1e-14)
        assert prog["a"] == pytest.approx(a, rel=1e-12)
