"""lowlight-gpu calibrate: a noise preset from bias and flat frames, and noise.camera: CAMERA.json.

* recovery: frames from a simulator written here (numpy's Poisson shot noise with gain
  K, scipy's Tukey-lambda read noise, per-row Gaussian offsets, ~1% per-pixel PRNU,
  per-column offsets, rounding, colour bias per CFA position), none of the project's
  physics code, at three settings with known log-linear profiles;
* round trip: frames rendered by the project's own sensor noise (the model's physics noise (physics.cuh))
  with SonyA7S2's profiles calibrate back to them;
* the camera raw path: DNG files written here byte by byte, read through rawpy;
* refusals (one line, exit 2, no traceback) and the single-setting warning;
* a generate run with a calibrated preset: rows record its name and content hash, the
  fingerprint follows the content (not the path), --verify replays it.
"""

import contextlib
import io
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import read_jsonl, run_subprocess, write_images

stats = pytest.importorskip("scipy.stats")

from lowlight_gpu import calibrate, cli  # noqa: E402
from lowlight_gpu import cameras  # noqa: E402
from lowlight_gpu.synth import native, records  # noqa: E402

BLACK, WHITE = 512, 16383
H, W = 128, 64          # rows x columns: 128 rows x 20 frames of row means pin sigma_R to ~2%
N_BIAS, N_FLAT = 20, 4  # bias frames per setting, flat frames per level
LEVELS = (0.05, 0.2, 0.4, 0.7)  # flat exposures, as fractions of white - black

# Known truth of the recovery test: three settings, log-linear profiles, a lambda and colour bias each.
TUKEY, ROW = (0.7, 0.8), (0.8, -0.6)  # (slope, bias) of log sigma_TL and log sigma_R against log K
TRUTH = {"ISO100": (0.5, 0.12, [0.5, -0.3, 0.2, 1.0]),  # K, lambda, colour bias in raster order of the cell
         "ISO400": (1.5, 0.04, [0.8, 0.1, 0.0, -0.6]),
         "ISO1600": (4.5, -0.06, [1.5, 0.6, 0.4, -1.2])}
SIM_CFA = "GRBG"  # raster (0,0) G, (0,1) R, (1,0) B, (1,1) G: the preset's R, G, G, B are raster 1, 0, 3, 2


def log_linear(profile, k):
    """exp(slope log K + bias)."""
    return math.exp(profile[0] * math.log(k) + profile[1])


def cli_run(*argv):
    """cli.main(argv) with its output captured: (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- an independent simulator

class Sensor:
    """A simulated camera: fixed PRNU and column offsets, temporal shot, Tukey read and row noise, rounding."""

    def __init__(self, seed, h=H, w=W, black=BLACK):
        self.rng = np.random.default_rng(seed)
        self.prnu = 1.0 + 0.01 * self.rng.standard_normal((h, w))
        col = 0.5 * self.rng.standard_normal(w)
        # Column offsets vary around the colour bias: zero mean over the columns of each CFA column parity.
        col[0::2] -= col[0::2].mean()
        col[1::2] -= col[1::2].mean()
        self.col, self.shape = col, (h, w)
        self.black = np.tile(np.reshape(np.broadcast_to(black, 4), (2, 2)).astype(float), (h // 2, w // 2))

    def frame(self, k, sigma_tl, lam, sigma_r, bias, level=0.0):
        """One raw frame (uint16 DN, black included) at a uniform exposure of `level` DN above black."""
        h, w = self.shape
        electrons = self.rng.poisson(level * self.prnu / k) if level else np.zeros(self.shape)
        x = electrons * k + stats.tukeylambda.rvs(lam, scale=sigma_tl, size=self.shape, random_state=self.rng)
        x = x + self.rng.normal(0.0, sigma_r, size=(h, 1)) + self.col[None, :]
        x = x + np.tile(np.reshape(bias, (2, 2)), (h // 2, w // 2)) + self.black
        return np.clip(np.floor(x + 0.5), 0, WHITE).astype(np.uint16)


def write_setting(root, name, frames_of_level, n_bias=N_BIAS, n_flat=N_FLAT, levels=LEVELS, ext=".npy",
                  writer=None):
    """BIAS/<name>/ and FLAT/<name>/Lxx/ filled with frames_of_level(level) for bias (level 0) and each flat level."""
    writer = writer or (lambda path, arr: np.save(path, arr))
    bias = Path(root, "bias", name)
    bias.mkdir(parents=True, exist_ok=True)
    for i in range(n_bias):
        writer(bias / f"f{i:02d}{ext}", frames_of_level(0.0))
    for lv in levels:
        folder = Path(root, "flat", name, f"L{round(lv * 100):02d}")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_flat):
            writer(folder / f"f{i:02d}{ext}", frames_of_level(lv * (WHITE - BLACK)))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The simulated camera's frames calibrated through the CLI: (json path, code, stdout, stderr)."""
    root = tmp_path_factory.mktemp("calib")
    sensor = Sensor(seed=7)
    for name, (k, lam, bias) in TRUTH.items():
        write_setting(root, name, lambda level: sensor.frame(
            k, log_linear(TUKEY, k), lam, log_linear(ROW, k), bias, level))
    out = root / "cams" / "MyCam.json"
    code, stdout, stderr = cli_run("calibrate", "--bias", root / "bias", "--flat", root / "flat", "--out", out,
                                   "--black", BLACK, "--white", WHITE, "--cfa", SIM_CFA)
    return out, code, stdout, stderr


def test_recovers_the_simulated_camera(calibrated):
    out, code, stdout, stderr = calibrated
    assert code == 0, stderr
    preset = json.loads(out.read_text())
    order = [1, 0, 3, 2]  # GRBG raster -> R, G (R's row), G (B's row), B
    assert preset["name"] == "MyCam" and preset["cfa"] == SIM_CFA and preset["bits"] == 14
    assert (preset["black_level"], preset["white_level"]) == (BLACK, WHITE)
    assert "3 setting(s)" in preset["note"] and "60 bias" in preset["note"]
    rows = preset["calibration"]["settings"]
    assert [r["setting"] for r in rows] == ["ISO100", "ISO400", "ISO1600"]  # lowest K first
    for r in rows:
        k, lam, bias = TRUTH[r["setting"]]
        sigma_tl = log_linear(TUKEY, k)
        assert r["K"] == pytest.approx(k, rel=0.03)
        assert r["sigma_TL"] == pytest.approx(sigma_tl, rel=0.10)
        assert r["sigma_g"] == pytest.approx(sigma_tl * stats.tukeylambda.std(lam), rel=0.10)
        assert r["sigma_R"] == pytest.approx(log_linear(ROW, k), rel=0.10)
        assert r["lambda"] == pytest.approx(lam, abs=0.05)
        assert np.allclose(r["bias"], [bias[i] for i in order], atol=0.5)
    ks = [TRUTH[r["setting"]][0] for r in rows]
    assert preset["log_k"] == pytest.approx([math.log(ks[0]), math.log(ks[-1])], abs=0.03)
    assert preset["lambdas"] == [r["lambda"] for r in rows]
    assert preset["biases"] == [r["bias"] for r in rows]
    # The fitted profiles: slopes within 0.1, and sigma at each setting's K within 10%.
    true_g = [math.log(log_linear(TUKEY, k) * stats.tukeylambda.std(TRUTH[r["setting"]][1])) for k, r in zip(ks, rows)]
    g_slope = np.polyfit(np.log(ks), true_g, 1)[0]
    for key, slope in (("tukey", TUKEY[0]), ("row", ROW[0]), ("gauss", g_slope)):
        assert preset[key][0] == pytest.approx(slope, abs=0.1), key
    for k in ks:
        assert log_linear(preset["tukey"], k) == pytest.approx(log_linear(TUKEY, k), rel=0.10)
        assert log_linear(preset["row"], k) == pytest.approx(log_linear(ROW, k), rel=0.10)
    assert cameras.from_dict(preset).name == "MyCam"  # loadable as it stands


def test_writes_a_readable_picture_beside_the_preset(calibrated):
    from PIL import Image

    out, code, stdout, _ = calibrated
    png = out.with_suffix(".png")
    assert code == 0 and f"wrote {out} and {png}" in stdout
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 400
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 10  # drawn, not blank


# ---------------------------------------------------------------- the project's own physics noise

def physics_noise(cam, k, components):
    """The noise dict the model's physics noise (physics.cuh) renders for camera cam at gain k, without jitter."""
    log_k = math.log(k)
    return {"components": components, "K": k, "black_level": cam.black_level, "white_level": cam.white_level,
            "read_scale": log_linear(cam.tukey if "t" in components else cam.gauss, k),
            "read_lambda": cam.lambdas[cameras.iso_index(cam, log_k, len(cam.lambdas))],
            "row_sigma": log_linear(cam.row, k),
            "bias": list(cam.biases[cameras.iso_index(cam, log_k, len(cam.biases))])}


def to_dn(x, noise):
    """Sensor DN above black to the raw file's values, as physics.cuh's ll_phys_to_dn: + black, round, clip."""
    v = np.floor(x + (float(noise["black_level"]) + 0.5))
    return np.minimum(np.maximum(v, 0.0), float(noise["white_level"])).astype(np.uint16)


@pytest.mark.parametrize("components", ["ptrqc", "pgrqc"])
def test_round_trip_through_the_projects_physics_noise(tmp_path, components):
    """Frames rendered in DN by the model's physics noise (physics.cuh) with SonyA7S2's profiles calibrate back to them.

    The model reads with either Tukey-lambda (t) or Gaussian (g) noise, so each read profile gets its own run.
    """
    cam = cameras.get("SonyA7S2")
    gains = (0.75, 2.1, 6.0)  # inside its range, where the read noise is above 1.5 DN
    seeds = iter(range(1, 10 ** 6))
    for k in gains:
        noise = physics_noise(cam, k, components)

        def render(level, noise=noise):
            x = np.full((H, W), float(level))
            sensor = native.sensor_noise(records.sensor_record(noise, next(seeds), 0, x.shape), x)
            return to_dn(sensor, noise)

        write_setting(tmp_path, f"K{k}", render)
    preset, settings, warnings = calibrate.calibrate(tmp_path / "bias", tmp_path / "flat", "RoundTrip",
                                                     cam.black_level, cam.white_level, "RGGB")
    assert not warnings
    read, key = ("sigma_TL", "tukey") if "t" in components else ("sigma_g", "gauss")
    for k, r in zip(gains, preset["calibration"]["settings"]):
        noise = physics_noise(cam, k, components)
        assert r["K"] == pytest.approx(k, rel=0.03)
        assert r[read] == pytest.approx(noise["read_scale"], rel=0.10)
        assert r["sigma_R"] == pytest.approx(noise["row_sigma"], rel=0.10)
        assert np.allclose(r["bias"], noise["bias"], atol=0.5)
        if "t" in components:
            assert r["lambda"] == pytest.approx(noise["read_lambda"], abs=0.05)
        assert log_linear(preset[key], k) == pytest.approx(noise["read_scale"], rel=0.10)
        assert log_linear(preset["row"], k) == pytest.approx(noise["row_sigma"], rel=0.10)
    assert preset[key][0] == pytest.approx(getattr(cam, key)[0], abs=0.1)
    assert preset["row"][0] == pytest.approx(cam.row[0], abs=0.1)


# ---------------------------------------------------------------- camera raw files (rawpy)

def write_dng(path, mosaic, black, white, cfa):
    """A minimal uncompressed DNG (little-endian TIFF, one CFA IFD): black per 2x2 position, white, CFA pattern
    (4 letters for a 2x2 Bayer cell, 36 for a 6x6 X-Trans one)."""
    h, w = mosaic.shape
    dim = round(len(cfa) ** 0.5)
    data = np.ascontiguousarray(mosaic, dtype="<u2").tobytes()
    # (tag, TIFF type, values); types: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 10 SRATIONAL.  Tags in ascending order.
    entries = [(254, 4, [0]), (256, 4, [w]), (257, 4, [h]), (258, 3, [16]), (259, 3, [1]), (262, 3, [32803]),
               (271, 2, b"Calib\0"), (272, 2, b"Test\0"), (273, 4, [0]), (277, 3, [1]), (278, 4, [h]),
               (279, 4, [len(data)]), (284, 3, [1]), (33421, 3, [dim, dim]),
               (33422, 1, ["RGB".index(c) for c in cfa]), (50706, 1, [1, 4, 0, 0]), (50708, 2, b"Calib Test\0"),
               (50713, 3, [2, 2]), (50714, 4, list(black)), (50717, 4, [white]),
               (50721, 10, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1]), (50778, 3, [21])]
    fmt = {1: "B", 3: "H", 4: "I", 10: "i"}
    packed = [(tag, typ, len(v) // (2 if typ == 10 else 1), bytes(v) if typ == 2 else
               struct.pack("<" + fmt[typ] * len(v), *v)) for tag, typ, v in entries]
    extra_at = 8 + 2 + 12 * len(packed) + 4
    strip_at = extra_at + sum(len(raw) + len(raw) % 2 for *_, raw in packed if len(raw) > 4)
    ifd, extra = struct.pack("<H", len(packed)), b""
    for tag, typ, count, raw in packed:
        raw = struct.pack("<I", strip_at) if tag == 273 else raw
        if len(raw) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) % 2)
    Path(path).write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra + data)


def test_reads_camera_raw_files_through_rawpy(tmp_path):
    """DNG frames: black per position, white and CFA come from the files; one setting warns and has zero slopes."""
    rawpy = pytest.importorskip("rawpy")
    blacks = [510, 512, 514, 516]  # raster order of a BGGR cell: B, G, G, R
    sensor = Sensor(seed=3, h=64, w=64, black=blacks)
    frame = sensor.frame(1.0, 3.0, 0.05, 0.8, [0, 0, 0, 0])
    write_dng(tmp_path / "probe.dng", frame, blacks, WHITE, "BGGR")
    with rawpy.imread(str(tmp_path / "probe.dng")) as raw:  # rawpy itself sees what we wrote
        assert np.array_equal(raw.raw_image_visible, frame)
    mosaic, meta = calibrate.read_frame(tmp_path / "probe.dng")
    assert np.array_equal(mosaic, frame)
    assert meta["cfa"] == "BGGR" and meta["white"] == WHITE and meta["black"] == [510.0, 512.0, 514.0, 516.0]

    write_setting(tmp_path, "ISO800", lambda level: sensor.frame(1.0, 3.0, 0.05, 0.8, [0, 0, 0, 0], level),
                  n_bias=8, n_flat=2, levels=(0.1, 0.3, 0.6), ext=".dng",
                  writer=lambda path, arr: write_dng(path, arr, blacks, WHITE, "BGGR"))
    out = tmp_path / "raw.json"
    code, stdout, stderr = cli_run("calibrate", "--bias", tmp_path / "bias", "--flat", tmp_path / "flat",
                                   "--out", out, "--name", "DNG cam")
    assert code == 0, stderr
    assert stderr.count("\n") == 1 and "warning: one setting ('ISO800')" in stderr and "zero slopes" in stderr
    preset = json.loads(out.read_text())
    assert (preset["name"], preset["cfa"], preset["black_level"], preset["white_level"]) == \
        ("DNG cam", "BGGR", 513, WHITE)
    # The preset's black is the mean of the four; the rest is colour bias, in R, G, G, B order: raster 3, 2, 1, 0.
    assert np.allclose(preset["biases"][0], [3, 1, -1, -3], atol=0.3)
    assert preset["calibration"]["settings"][0]["K"] == pytest.approx(1.0, rel=0.05)
    for key in ("tukey", "gauss", "row"):
        slope, bias, jitter = preset[key]
        assert slope == 0 and jitter == 0 and math.isfinite(bias)
    assert preset["log_k"][0] == preset["log_k"][1] and len(preset["lambdas"]) == 1
    assert out.with_suffix(".png").stat().st_size > 0


def test_non_bayer_raw_files_are_refused(tmp_path):
    pytest.importorskip("rawpy")
    write_dng(tmp_path / "xtrans.dng", np.full((36, 48), 600, np.uint16), [512] * 4, WHITE,
              "GGRGGBGGBGGRBRGRBGGGBGGRGGRGGBRBGBRG")
    with pytest.raises(calibrate.CalibrationError, match="has no 2x2 Bayer CFA"):
        calibrate.read_frame(tmp_path / "xtrans.dng")


def test_raw_files_without_rawpy_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy raises ImportError
    (tmp_path / "x.dng").write_bytes(b"II*\0")
    with pytest.raises(calibrate.CalibrationError, match=r"needs rawpy: pip install 'lowlight-gpu\[raw\]'"):
        calibrate.read_frame(tmp_path / "x.dng")


def test_without_scipy_calibrate_says_what_to_install(tmp_path, monkeypatch):
    tiny_layout(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import scipy.stats raises ImportError
    code, _, stderr = cli_run("calibrate", "--bias", tmp_path / "bias", "--flat", tmp_path / "flat",
                              "--out", tmp_path / "c.json", "--black", BLACK, "--white", WHITE)
    assert code == 2 and stderr.count("\n") == 1 and "needs scipy" in stderr and "lowlight-gpu[raw]" in stderr


# ---------------------------------------------------------------- refusals

def tiny_layout(root, settings=("ISO100",), n_bias=2, levels=(0.1, 0.3, 0.6), n_flat=2, shape=(16, 16)):
    """A small valid layout of simulated .npy frames."""
    sensor = Sensor(seed=1, h=shape[0], w=shape[1])
    for name in settings:
        write_setting(root, name, lambda level: sensor.frame(1.0, 3.0, 0.0, 0.5, [0, 0, 0, 0], level),
                      n_bias=n_bias, n_flat=n_flat, levels=levels)


def _one_bias_frame(root):
    tiny_layout(root)
    next((root / "bias" / "ISO100").iterdir()).unlink()


def _two_levels(root):
    tiny_layout(root, levels=(0.1, 0.3))


def _one_flat_frame(root):
    tiny_layout(root)
    next((root / "flat" / "ISO100" / "L30").iterdir()).unlink()


def _mismatched_settings(root):
    tiny_layout(root, settings=("ISO100", "ISO200"))
    shutil.rmtree(root / "flat" / "ISO200")
    tiny_layout(root / "more", settings=("ISO400",))
    shutil.move(root / "more" / "flat" / "ISO400", root / "flat" / "ISO400")


def _different_sizes(root):
    tiny_layout(root)
    np.save(root / "flat" / "ISO100" / "L60" / "f01.npy", np.full((16, 18), 9000, np.uint16))


def _saturated(root):
    tiny_layout(root)
    for p in (root / "flat" / "ISO100" / "L60").iterdir():
        np.save(p, np.full((16, 16), WHITE, np.uint16))


def _black(root):
    tiny_layout(root)
    for p in (root / "flat" / "ISO100" / "L10").iterdir():
        np.save(p, np.load(root / "bias" / "ISO100" / "f00.npy"))


def _not_a_mosaic(root):
    tiny_layout(root)
    np.save(root / "bias" / "ISO100" / "f00.npy", np.zeros((16, 16, 3), np.uint16))


REFUSALS = {
    "fewer than 2 frames": (_one_bias_frame, [], "has 1 bias frame(s)"),
    "fewer than 3 levels": (_two_levels, [], "has 2 flat level(s)"),
    "one frame of a level": (_one_flat_frame, [], "level 'L30' has 1 flat frame(s)"),
    "mismatched settings": (_mismatched_settings, [], "only under --bias: ISO200; only under --flat: ISO400"),
    "different sizes": (_different_sizes, [], "is 18x16, others are 16x16"),
    "saturated flats": (_saturated, [], "level 'L60' are saturated"),
    "black flats": (_black, [], "level 'L10' are black"),
    "a demosaicked frame": (_not_a_mosaic, [], "not a demosaicked image"),
    "no levels for .npy": (tiny_layout, ["--black"], "carries no levels; give --black ("),
    "unknown CFA": (tiny_layout, ["--cfa", "RGBW"], "invalid choice: 'RGBW'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_one_line_and_exit_2(tmp_path, case):
    make, drop, message = REFUSALS[case]
    make(tmp_path)
    flags = {"--black": str(BLACK), "--white": str(WHITE)}
    argv = ["calibrate", "--bias", tmp_path / "bias", "--flat", tmp_path / "flat", "--out", tmp_path / "c.json"]
    for flag, value in flags.items():
        if flag not in drop:
            argv += [flag, value]
    if drop and drop[0] == "--cfa":
        argv += drop
    code, stdout, stderr = cli_run(*argv)
    assert code == 2, (case, stderr)
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert "Traceback" not in stderr and not (tmp_path / "c.json").exists()


def test_calibrate_is_a_subcommand_of_generate_py(tmp_path):
    """In a real process: `python generate.py calibrate ...` refuses in one line, without a traceback."""
    _two_levels(tmp_path)
    res = run_subprocess("calibrate", "--bias", tmp_path / "bias", "--flat", tmp_path / "flat",
                         "--out", tmp_path / "c.json", "--black", BLACK, "--white", WHITE)
    assert res.code == 2 and res.err.count("\n") == 1 and "at least 3 level subfolders" in res.err, res.err


# ---------------------------------------------------------------- noise.camera: CAMERA.json

def sony_file(path, **changes):
    """SonyA7S2 written as a preset file, renamed and with the given fields changed; returns the path."""
    data = dict(cameras.to_dict(cameras.get("SonyA7S2")), name="MySony", **changes)
    Path(path).write_text(json.dumps(data, indent=1))
    return Path(path)


def test_a_preset_file_samples_what_the_same_builtin_samples(tmp_path):
    from lowlight_gpu.params import sample_params

    path = sony_file(tmp_path / "sony.json")
    a = sample_params(5, {"noise": {"model": "physics", "camera": "SonyA7S2"}})["noise"]
    b = sample_params(5, {"noise": {"model": "physics", "camera": str(path)}})["noise"]
    assert b.pop("camera") == "MySony" and b.pop("camera_sha256") == cameras.preset_hash(json.loads(path.read_text()))
    assert a.pop("camera") == "SonyA7S2" and "camera_sha256" not in a
    assert a == b


def test_config_fingerprint_follows_the_content_not_the_path(tmp_path):
    from lowlight_gpu.config import config_from_dict

    fp = lambda p: config_from_dict({"noise": {"model": "physics", "camera": str(p)}}).fingerprint()  # noqa: E731
    (tmp_path / "a").mkdir()
    one = sony_file(tmp_path / "a" / "one.json")
    two = tmp_path / "two.json"
    two.write_text(json.dumps(json.loads(one.read_text())))  # same content, another path and layout
    edited = sony_file(tmp_path / "edited.json", lambdas=[0.1])
    assert fp(one) == fp(two) != fp(edited)
    assert fp(one) != config_from_dict({"noise": {"model": "physics", "camera": "SonyA7S2"}}).fingerprint()
    cfg = config_from_dict({"noise": {"model": "physics", "camera": str(one)}})
    assert config_from_dict(cfg.to_dict()).fingerprint() == cfg.fingerprint()  # as dataset.json records it


@pytest.mark.parametrize("content, message", [
    (None, "camera preset file '{}' not found"),
    ("{not json", "is not a valid preset: not JSON"),
    ('{"name": "x"}', "lacks field(s) bits, black_level"),
    ("tukey", "field 'tukey' must be a list of 3 finite numbers"),
    ("biases", "field 'biases' must be a list of 4 finite numbers"),
    ("typo", "has unknown field(s) lambda;"),
])
def test_bad_preset_files_are_one_line_config_errors(tmp_path, run_cli, content, message):
    path = tmp_path / "cam.json"
    if content in ("tukey", "biases", "typo"):
        base = cameras.to_dict(cameras.get("NikonD850"))
        change = {"tukey": {"tukey": [1, 2]}, "biases": {"biases": [[0, 0, 0]]}, "typo": {"lambda": [0.1]}}[content]
        path.write_text(json.dumps({**base, **change}))
    elif content is not None:
        path.write_text(content)
    res = run_cli("--set", "noise.model=physics", "--set", f"noise.camera={path}", "--dry-run")
    assert res.code == 2 and res.err.count("\n") == 1, res.err
    assert "noise.camera" in res.err and message.format(path) in res.err, res.err


def test_list_cameras_shows_a_preset_file(calibrated):
    out = calibrated[0]
    code, stdout, stderr = cli_run("--list-cameras", out)
    lines = stdout.splitlines()
    assert code == 0 and len(lines) == len(cameras.PRESETS) + 1
    digest = cameras.preset_hash(json.loads(out.read_text()))
    assert lines[-1].startswith("MyCam ") and f"sha256 {digest[:16]}" in lines[-1] and str(out) in lines[-1]
    code, _, stderr = cli_run("--list-cameras", out.parent / "missing.json")
    assert code == 2 and stderr.count("\n") == 1 and "missing.json" in stderr


def test_generate_with_a_calibrated_preset(calibrated, tmp_path, run_cli):
    """A CPU run with noise.camera: CAMERA.json: rows name the preset and its content hash; a moved file resumes,
    an edited one is refused; --verify replays from the preset dataset.json recorded."""
    preset_path = tmp_path / "MyCam.json"
    shutil.copy(calibrated[0], preset_path)
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_images(inputs, {"a.png": (24, 16), "b.png": (17, 12)})
    base = ("--set", f"input={inputs}", "--set", f"output={out}", "--set", "noise.model=physics",
            "--set", "workers=1")
    res = run_cli(*base, "--set", f"noise.camera={preset_path}")
    assert res.code == 0, res.err
    digest = cameras.preset_hash(json.loads(preset_path.read_text()))
    rows = read_jsonl(out / "manifest.jsonl")
    assert len(rows) == 2
    for row in rows:
        noise = row["params"]["noise"]
        assert noise["camera"] == "MyCam" and noise["camera_sha256"] == digest
        k = math.log(noise["K"])
        assert json.loads(preset_path.read_text())["log_k"][0] <= k <= json.loads(preset_path.read_text())["log_k"][1]
    recorded = json.loads((out / "dataset.json").read_text())["config"]["noise"]["camera"]
    assert recorded["name"] == "MyCam" and "calibration" not in recorded and str(tmp_path) not in json.dumps(recorded)
    assert run_cli(*base, "--set", f"noise.camera={preset_path}", "--verify").code == 0

    moved = tmp_path / "elsewhere" / "renamed.json"
    moved.parent.mkdir()
    shutil.move(preset_path, moved)
    res = run_cli(*base, "--set", f"noise.camera={moved}")
    assert res.code == 0 and "(2 already done)" in res.out, res.out + res.err

    data = json.loads(moved.read_text())
    data["row"][2] += 0.05  # an edit to the preset: another dataset
    moved.write_text(json.dumps(data))
    res = run_cli(*base, "--set", f"noise.camera={moved}")
    assert res.code == 2 and res.err.count("\n") == 1, res.err
    assert "different config" in res.err and "noise.camera.row" in res.err


def test_reads_16_bit_tiff_frames(tmp_path):
    from PIL import Image

    frame = Sensor(seed=2, h=16, w=24).frame(1.0, 3.0, 0.0, 0.5, [0, 0, 0, 0], 4000.0)
    Image.fromarray(frame).save(tmp_path / "f.tif")
    mosaic, meta = calibrate.read_frame(tmp_path / "f.tif")
    assert meta is None and mosaic.dtype == np.uint16 and np.array_equal(mosaic, frame)
