"""Progressive darkening: x_t = (a * x_{t-1}) ** eta, t = 1..T, ending at the one-shot low image."""

import itertools

import numpy as np
import pytest

from lowlight_gpu import params as P
from lowlight_gpu.config import config_from_dict
from lowlight_gpu.synth import numpy_backend as nb, records, signal

X0 = np.arange(256, dtype=np.float64) / 255.0
RGB = np.stack([np.arange(256), np.arange(256)[::-1], np.roll(np.arange(256), 77)], -1).astype(np.uint8).reshape(16, 16, 3)


def recurrence(x0, a, eta, steps):
    """[x_1, ..., x_T] of x_t = (a * x_{t-1}) ** eta, in float64."""
    out, x = [], np.asarray(x0, dtype=np.float64)
    for _ in range(steps):
        x = (a * x) ** eta
        out.append(x)
    return out


def prog_params(seed, steps, model="none", **darken):
    cfg = config_from_dict({"darken": darken, "noise": {"model": model},
                            "progressive": {"enabled": True, "steps": steps}})
    return P.sample_params(seed, cfg)


@pytest.mark.parametrize("gamma,steps", list(itertools.product([1.5, 2.2, 5.0, 0.7], [1, 2, 5, 10])))
def test_schedule_matches_the_formula_and_lands_on_the_one_shot_curve(gamma, steps):
    alpha, beta = 0.93, 0.61
    prog = signal.progressive_schedule(alpha, beta, gamma, steps)
    eta = gamma ** (1 / steps)
    b = beta * alpha ** gamma
    a = b ** ((1 - eta) / (eta * (1 - eta ** steps)))
    assert prog == {"steps": steps, "eta": pytest.approx(eta, rel=1e-14), "a": pytest.approx(a, rel=1e-12)}
    xs = recurrence(X0, prog["a"], prog["eta"], steps)
    # x_T = b' * x_0 ** gamma = beta * (alpha * x_0) ** gamma
    assert np.allclose(xs[-1], beta * (alpha * X0) ** gamma, rtol=1e-12, atol=1e-300)
    # Closed form x_t = a ** (eta (1 - eta^t) / (1 - eta)) * x_0 ** (eta^t), and step_exponents agrees with it.
    for t, xt in enumerate(xs, start=1):
        closed = a ** (eta * (1 - eta ** t) / (1 - eta)) * X0 ** (eta ** t)
        assert np.allclose(xt, closed, rtol=1e-11, atol=1e-300)
        e, pw = signal.step_exponents(gamma, steps, t)
        assert np.allclose(b ** e * X0 ** pw, xt, rtol=1e-11, atol=1e-300)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_step_is_within_one_lsb_of_the_float64_recurrence(seed):
    T = 8
    p = prog_params(seed, T)
    prog = p["progressive"]
    xs = recurrence(RGB / 255.0, prog["a"], prog["eta"], T)
    prev = None
    for t in range(1, T + 1):
        low = nb.render(RGB, p, t)
        err = np.abs(low - xs[t - 1] * 255.0)
        assert err.max() <= 1.0, t
        assert err.max() <= 0.5 + 1e-6, t  # rounding half up of an exact closed form
        if prev is not None:
            assert np.all(low <= prev), t  # gamma >= 1.5: every step is darker than the last
        prev = low
    assert not np.array_equal(nb.render(RGB, p, 1), nb.render(RGB, p, T))


def test_last_step_equals_the_one_shot_image():
    for seed in range(5):
        p = prog_params(seed, 7)
        one_shot = nb.render(RGB, prog_params(seed, 7) | {"progressive": None})
        assert np.array_equal(nb.render(RGB, p, 7), one_shot)
        assert np.array_equal(nb.render(RGB, p, None), one_shot)
        x = RGB / 255.0
        assert np.abs(one_shot - p["beta"] * (p["alpha"] * x) ** p["gamma"] * 255).max() <= 0.5 + 1e-9


def test_recorded_a_and_eta_reproduce_the_saved_images():
    # Someone holding only the manifest row (alpha, beta, gamma, progressive) can rebuild every step.
    p = prog_params(1234, 5)
    row = {"steps": p["progressive"]["steps"], "eta": p["progressive"]["eta"], "a": p["progressive"]["a"]}
    xs = recurrence(RGB / 255.0, row["a"], row["eta"], row["steps"])
    for t in range(1, 6):
        rebuilt = np.floor(xs[t - 1] * 255.0 + 0.5)
        diff = np.abs(nb.render(RGB, p, t).astype(int) - rebuilt)
        assert diff.max() <= 1


def test_eta_one_is_handled():
    p = prog_params(5, 4, gamma=1)
    prog = p["progressive"]
    b = p["beta"] * p["alpha"]
    assert prog["eta"] == 1.0
    assert prog["a"] == pytest.approx(b ** 0.25, rel=1e-14)  # the limit of the exponent is 1 / T
    assert signal.step_exponents(1.0, 4, 3) == (0.75, 1.0)
    xs = recurrence(RGB / 255.0, prog["a"], 1.0, 4)
    for t in range(1, 5):
        low = nb.render(RGB, p, t)
        assert np.abs(low - xs[t - 1] * 255).max() <= 0.5 + 1e-6
    # Continuity: gamma a hair away from 1 gives the same constants.
    near = signal.progressive_schedule(p["alpha"], p["beta"], 1 + 1e-12, 4)
    assert near["a"] == pytest.approx(prog["a"], rel=1e-9) and near["eta"] == pytest.approx(1.0, abs=1e-12)
    e, pw = signal.step_exponents(1 + 1e-12, 4, 3)
    assert e == pytest.approx(0.75, rel=1e-9) and pw == pytest.approx(1.0, abs=1e-12)


def test_single_step_is_the_one_shot_curve():
    p = prog_params(6, 1)
    assert p["progressive"]["eta"] == p["gamma"]
    assert np.array_equal(nb.render(RGB, p, 1), nb.render(RGB, p))


def test_progressive_is_deterministic_and_each_step_has_its_own_noise():
    # alpha = beta = gamma = 1: every step has the same clean signal, so only the noise stream tells them apart.
    T = 4
    p = prog_params(99, T, model="poisson-gaussian", alpha=1, beta=1, gamma=1)
    rgb = np.full((32, 32, 3), 128, np.uint8)
    lows = {t: nb.render(rgb, p, t) for t in (1, 2, 3, 4, None)}
    assert all(np.array_equal(lows[t], nb.render(rgb, p, t)) for t in lows)
    assert np.array_equal(lows[T], lows[None])  # the last step is the low image, noise included
    for s, t in itertools.combinations((1, 2, 3, 4), 2):
        assert not np.array_equal(lows[s], lows[t]), (s, t)
    assert [records.noise_step(p, t) for t in (1, 2, 3, 4, None)] == [1, 2, 3, 0, 0]
