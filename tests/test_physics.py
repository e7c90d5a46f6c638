"""noise.model physics: sensor statistics, the ISP round trip, raw outputs, determinism and replay.

The sensor tests fit the photon-transfer line (variance against mean in DN) on
flat raw mosaics for each component set; the image tests use tiny images.
"""

import json

import numpy as np
import pytest

from conftest import read_jsonl, read_png
from lowlight_gpu import cli
from lowlight_gpu.config import ConfigError, config_from_dict
from lowlight_gpu.params import sample_params
from lowlight_gpu import cameras
from lowlight_gpu.synth import native, numpy_backend, physics, records
from lowlight_gpu.synth.signal import clean_lut
from lowlight_gpu.tools import report_stats

NOISE = {"K": 4.0, "read_scale": 3.0, "read_lambda": 0.14, "row_sigma": 2.0, "bias": [1.0, -2.0, 3.0, 0.5],
         "black_level": 512, "white_level": 16383}
LEVELS = (0.0, 40.0, 150.0, 600.0)   # clean DN of the flat fields
ROWS, COLS = 4096, 16                # tall and narrow: many rows for the row-noise variance


def flat_noise(components, level, seed=11):
    """Noisy DN minus clean DN of a flat ROWS x COLS mosaic at `level`, with NOISE's values."""
    noise = dict(NOISE, components=components)
    x = np.full((ROWS, COLS), level)
    return native.sensor_noise(records.sensor_record(noise, seed, 0, x.shape), x) - x, noise


def uniform(w):
    """Words to the model's uniforms (w + 0.5) / 2**32 in (0, 1), exact in float64."""
    return (np.asarray(w, dtype=np.float64) + 0.5) / 2.0 ** 32


def read_variance(noise):
    """The declared per-site read variance (Tukey or Gaussian)."""
    if "t" in noise["components"]:
        return noise["read_scale"] ** 2 * physics.tukey_variance(noise["read_lambda"])
    return noise["read_scale"] ** 2 if "g" in noise["components"] else 0.0


@pytest.mark.parametrize("components", ["p", "pg", "pt", "ptr", "ptrqc"])
def test_photon_transfer_fit_recovers_gain_read_and_row(components):
    within, between = [], []
    for i, level in enumerate(LEVELS):
        d, noise = flat_noise(components, level, seed=11 + i)
        if "c" in components:  # the colour bias moves the mean of each CFA position, not the variance
            cells = (np.arange(ROWS)[:, None] & 1) * 2 + (np.arange(COLS)[None, :] & 1)
            d = d - np.asarray(NOISE["bias"])[cells]
        within.append(d.var(axis=1, ddof=1).mean())      # shot + read (+ quantisation)
        between.append(d.mean(axis=1).var(ddof=1) - within[-1] / COLS)  # row noise (sharpest at level 0)
    x = np.array(LEVELS)
    slope, intercept = np.polyfit(x, within, 1, w=1.0 / (np.array(within) + 1.0))  # ~ relative errors
    assert slope == pytest.approx(NOISE["K"], rel=0.05)
    read = read_variance(noise) + (1.0 / 12.0 if "q" in components else 0.0)
    if read:
        assert intercept == pytest.approx(read, rel=0.10)
    else:
        assert abs(intercept) < 0.05 * NOISE["K"] * x[1]
    row = NOISE["row_sigma"] ** 2 if "r" in components else 0.0
    assert between[0] == pytest.approx(row, abs=0.10 * max(row, 1.0))
    assert physics.declared_variance(noise, 100.0) == pytest.approx(
        (NOISE["K"] * 100.0) + read + row, rel=1e-12)


@pytest.mark.parametrize("lam", [-0.2, 0.0, 0.14, 0.5])
def test_tukey_lambda_variance_matches_closed_form(lam):
    n = 1 << 18
    u = (np.arange(n) + 0.5) / n  # midpoint rule over (0, 1): E[Q(U)^2]
    q = native.phys_tukey(u, lam)
    assert abs(q.mean()) < 1e-9
    assert np.mean(q * q) == pytest.approx(physics.tukey_variance(lam), rel=2e-3)


def test_tukey_lambda_is_scipys_quantile():
    stats = pytest.importorskip("scipy.stats")
    u = uniform(np.array([1, 2 ** 20, 2 ** 31, 2 ** 32 - 5], dtype=np.uint64))
    for lam in (-0.26, 0.0, 0.102):
        np.testing.assert_allclose(native.phys_tukey(u, lam), stats.tukeylambda.ppf(u, lam), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lam", [0.2, 7.5, 29.99, 30.0, 123.4, 4321.0])
def test_poisson_inversion_is_exact(lam):
    stats = pytest.importorskip("scipy.stats")
    w = np.random.default_rng(3).integers(0, 2 ** 32, 20000, dtype=np.uint64)
    u = uniform(w)
    k = native.phys_poisson(np.full(u.shape, lam), u)
    np.testing.assert_array_equal(k, stats.poisson.ppf(u, lam))


def physics_params(seed=5, t=None, **noise):
    """Params of a physics pair (noise keys over the defaults)."""
    return sample_params(seed, {"noise": {"model": "physics", **noise}})


@pytest.mark.parametrize("camera", ["virtual", "SonyA7S2", "IMX686", "CRVD"])
def test_isp_round_trip_on_flat_fields_is_within_one_level(camera):
    for seed in (1, 2, 3):
        params = physics_params(seed, camera=camera, components="")
        lut = clean_lut(params, None, "srgb")
        for rgb in [(v, v, v) for v in range(0, 256, 17)] + [(200, 120, 90), (60, 140, 200), (255, 40, 130)]:
            flat = np.empty((5, 7, 3), np.uint8)
            flat[...] = rgb
            out = numpy_backend.render(flat, params)
            assert np.abs(out.astype(int) - lut[flat]).max() <= 1, (camera, seed, rgb)


def smooth_image(h=48, w=64):
    """A smooth colour gradient (no edges, no clipping), like a patch of a photo."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([150 + xx, 170 + yy, 190 + (xx + yy) // 2], axis=-1).astype(np.uint8)


def test_noise_on_photos_is_spatially_correlated_after_demosaicing():
    img = smooth_image()
    params = physics_params(9, camera="SonyA7S2", gain=[4.0, 4.0])
    noisy = numpy_backend.render(img, params).astype(float)
    quiet = numpy_backend.render(img, dict(params, noise=dict(params["noise"], components=""))).astype(float)
    r = noisy - quiet
    assert r.std() > 1.0
    horiz = np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1]
    across = np.corrcoef(r[..., 0].ravel(), r[..., 1].ravel())[0, 1]
    assert horiz > 0.3  # bilinear demosaicing shares each raw value between neighbours
    assert abs(across) > 0.1  # WB and the colour matrix mix the channels
    pg = sample_params(9, {"noise": {"model": "poisson-gaussian"}})
    r_pg = numpy_backend.render(img, pg).astype(float) - clean_lut(pg, None, "srgb")[img]
    assert abs(np.corrcoef(r_pg[:, :-1].ravel(), r_pg[:, 1:].ravel())[0, 1]) < 0.15


def test_same_seed_same_bytes_and_json_replay():
    img = smooth_image(23, 37)
    params = physics_params(4, camera="CanonEOS5D4")
    a = numpy_backend.render(img, params)
    replayed = json.loads(json.dumps(params))
    assert np.array_equal(a, numpy_backend.render(img, replayed))
    assert not np.array_equal(a, numpy_backend.render(img, physics_params(5, camera="CanonEOS5D4")))
    c1, l1 = numpy_backend.render_raw(img, params)
    c2, l2 = numpy_backend.render_raw(img, replayed)
    assert np.array_equal(c1, c2) and np.array_equal(l1, l2)


@pytest.mark.parametrize("components", ["ptrqc", "pgrqc", "p", "pt", ""])
@pytest.mark.parametrize("shape", [(23, 37), (2, 2), (5, 64), (1, 3)])
def test_the_row_driver_equals_the_gpu_kernels_site_by_site(components, shape):
    """The CPU library renders row by row with many sites' Poisson chains side by side and a ring of three rows;
    the GPU kernels go site by site and pixel by pixel.  Every site takes the same steps, so the bytes agree."""
    img = np.random.default_rng(list(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for seed, gain in ((4, [0.3, 0.3]), (5, [60.0, 60.0])):  # rates from huge (normal approximation) to small
        params = physics_params(seed, camera="SonyA7S2", components=components, gain=gain)
        rec = records.physics_record(params, None, img.shape)
        lut, thr = physics.code_lut(params, None), physics.thresholds()
        image, clean, low = native.physics_kernels_serial(rec, lut, thr, img, image=True, raw=True)
        assert np.array_equal(numpy_backend.render(img, params), image)
        raw_clean, raw_low = numpy_backend.render_raw(img, params)
        assert np.array_equal(raw_clean, clean) and np.array_equal(raw_low, low)


def test_params_record_the_drawn_noise_and_isp():
    noise = physics_params(3, camera="NikonD850", components="ptrqc")["noise"]
    assert set(noise) == {"model", "camera", "components", "K", "black_level", "white_level", "bits", "cfa", "read",
                          "read_scale", "read_lambda", "row_sigma", "bias", "ccm", "rgb_gain", "red_gain",
                          "blue_gain", "order", "space"}
    cam = cameras.get("NikonD850")
    kmin, kmax = np.exp(cam.log_k)
    assert kmin <= noise["K"] <= kmax and noise["cfa"] == "RGGB" and noise["read"] == "tukey"
    assert noise["read_lambda"] in cam.lambdas and len(noise["bias"]) == 4
    assert tuple(noise["bias"]) in cam.biases
    assert np.allclose(np.sum(noise["ccm"], axis=1), 1.0)
    assert 1.9 <= noise["red_gain"] <= 2.4 and 1.5 <= noise["blue_gain"] <= 1.9
    g = physics_params(3, components="pg", gain=[2.0, 2.0])["noise"]
    assert g["K"] == pytest.approx(2.0) and g["read"] == "gaussian" and g["read_lambda"] is None
    assert g["row_sigma"] == 0.0 and g["bias"] == [0.0] * 4


def test_iso_lists_map_onto_equal_log_gain_bins():
    cam = cameras.get("SonyA7S2")
    lo, hi = cam.log_k
    n = len(cam.lambdas)
    assert [cameras.iso_index(cam, lo + (hi - lo) * (i + 0.5) / n, n) for i in range(n)] == list(range(n))
    assert cameras.iso_index(cam, lo - 5, n) == 0 and cameras.iso_index(cam, hi + 5, n) == n - 1


def test_progressive_steps_get_noise_of_their_own_exposure():
    img = smooth_image(23, 37)
    params = sample_params(2, {"noise": {"model": "physics"}, "progressive": {"enabled": True, "steps": 3}})
    final = numpy_backend.render(img, params, 3)
    assert np.array_equal(final, numpy_backend.render(img, params, None))
    step1 = numpy_backend.render(img, params, 1)
    assert step1.mean() > final.mean()  # brighter exposure
    c1, l1 = numpy_backend.render_raw(img, params, 1)
    c3, l3 = numpy_backend.render_raw(img, params, 3)
    assert c1.mean() > c3.mean()
    # Step 1's noise is its own draw, not step 3's noise on another signal.
    assert not np.array_equal(l1.astype(int) - c1, l3.astype(int) - c3)


@pytest.mark.parametrize("shape", [(23, 37), (16, 20), (1, 5), (2, 2)])
def test_raw_mosaics_are_even_cropped_uint16(shape):
    img = smooth_image(*shape)
    params = physics_params(1, camera="IMX686")
    clean, low = numpy_backend.render_raw(img, params)
    even = (shape[0] // 2 * 2, shape[1] // 2 * 2)
    assert clean.dtype == low.dtype == np.uint16 and clean.shape == low.shape == even
    noise = params["noise"]
    assert clean.size == 0 or (clean.min() >= noise["black_level"] and low.max() <= noise["white_level"])
    assert numpy_backend.render(img, params).shape == shape + (3,)  # the sRGB image keeps every pixel


def test_photon_transfer_report_hook_follows_the_declared_line():
    ramp = np.repeat(np.linspace(30, 200, 96).astype(np.uint8)[None, :, None], 64, axis=0).repeat(3, axis=2)
    params = physics_params(6, camera="virtual", components="ptrq", gain=[3.0, 3.0])
    clean, low = numpy_backend.render_raw(ramp, params)
    pt = report_stats.photon_transfer(clean, low, params["noise"], bins=6)
    assert set(pt) == {"mean", "variance", "count", "declared"} and len(pt["mean"]) >= 4
    good = pt["count"] > 300
    np.testing.assert_allclose(pt["variance"][good], pt["declared"][good], rtol=0.15)


def test_unknown_camera_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'SonyA7S2'"):
        config_from_dict({"noise": {"model": "physics", "camera": "sonya7s2"}})


def test_list_cameras(capsys):
    assert cli.main(["--list-cameras"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(cameras.PRESETS) >= 11
    assert lines[0].startswith("CanonEOS5D4") and "MIT" in lines[0]
    assert any(line.startswith("CRVD") and "Apache-2.0" in line for line in lines)


def physics_run(run_cli, input_dir, out, workers, shard=(0, 1)):
    """A physics dataset with raw outputs through pipeline.run (no end-of-run report); returns its RunResult."""
    from lowlight_gpu import pipeline

    cfg = config_from_dict({"input": str(input_dir), "output": str(out), "backend": "numpy", "workers": workers,
                            "noise": {"model": "physics"}, "save": {"raw": True}})
    return pipeline.run(cfg, shard=shard)


def test_dataset_with_raw_outputs_is_deterministic_and_verifies(run_cli, input_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert physics_run(run_cli, input_dir, one, 1).pairs == 2
    assert physics_run(run_cli, input_dir, two, 2).pairs == 2
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.np[yg]") if "parts" not in p.parts)
    assert "raw_low/a.npy" in files and "raw_clean/b.npy" in files
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    rows = {r["source"]: r for r in read_jsonl(one / "manifest.jsonl")}
    row = rows["a.png"]
    assert row["raw_low"] == "raw_low/a.npy" and row["raw_clean"] == "raw_clean/a.npy"
    assert row["params"]["noise"]["camera"] == "virtual"
    raw = np.load(one / "raw_low/a.npy")
    assert raw.dtype == np.uint16 and raw.shape == (22, 36)  # a.png is 37x23: cropped to even
    assert read_png(one / "low/a.png").shape == (23, 37, 3)
    verify = run_cli("--set", f"input={input_dir}", "--set", f"output={one}", "--verify")
    assert verify.code == 0, verify.out
    np.save(one / "raw_low/a.npy", raw ^ np.uint16(1))
    verify = run_cli("--set", f"input={input_dir}", "--set", f"output={one}", "--verify")
    assert verify.code == 1 and "raw_low/a.npy" in verify.out



def test_raw_outputs_survive_resume_and_shards(run_cli, input_dir, tmp_path):
    from conftest import tree_mtimes

    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert physics_run(run_cli, input_dir, whole, 2).pairs == 2
    npys = lambda tree: {k: v for k, v in tree.items() if k.endswith(".npy")}  # noqa: E731
    before = npys(tree_mtimes(whole))
    assert len(before) == 4
    assert physics_run(run_cli, input_dir, whole, 2).skipped == 2  # a no-op rerun rewrites nothing
    assert npys(tree_mtimes(whole)) == before
    for shard in ((0, 2), (1, 2)):
        physics_run(run_cli, input_dir, sharded, 1, shard)
    assert run_cli("--set", f"input={input_dir}", "--set", f"output={sharded}", "--set", "noise.model=physics",
                   "--set", "save.raw=true", "--merge").code == 0
    for rel in before:
        assert (sharded / rel).read_bytes() == (whole / rel).read_bytes(), rel
    rows = {r["source"]: r for r in read_jsonl(sharded / "manifest.jsonl")}
    assert rows["b.jpg"]["raw_low"] == "raw_low/b.npy"


def test_save_raw_needs_the_physics_model():
    with pytest.raises(ConfigError, match="save.raw"):
        config_from_dict({"save": {"raw": True}})
    assert config_from_dict({"save": {"raw": True}, "noise": {"model": "physics"}}).save.raw
