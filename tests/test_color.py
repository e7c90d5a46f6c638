"""Colour management on decode: embedded ICC profiles (Adobe RGB, Display P3) are converted to sRGB."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from lowlight_gpu import imageio

D50 = np.array([0.9642, 1.0, 0.8249])
D65_XY = (0.3127, 0.3290)
ADOBE_RGB = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
DISPLAY_P3 = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
SRGB = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
ADOBE_GAMMA = 563 / 256


def _xyz(xy):
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz_d50(primaries):
    """The RGB -> XYZ(D50) matrix of primaries with a D65 white, Bradford-adapted (what ICC colorants hold)."""
    cols = np.stack([_xyz(p) for p in primaries], axis=1)
    scale = np.linalg.solve(cols, _xyz(D65_XY))
    m = cols * scale
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    cone = np.diag((bradford @ D50) / (bradford @ _xyz(D65_XY)))
    return np.linalg.inv(bradford) @ cone @ bradford @ m


def srgb_decode(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v):
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def _s15(v):
    return struct.pack(">i", int(round(v * 65536)))


def _tag_xyz(xyz):
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(c) for c in xyz)


def _tag_curve(gamma=None, table=None):
    if table is None:
        return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"
    body = b"curv" + b"\0" * 4 + struct.pack(">I", len(table)) + struct.pack(f">{len(table)}H", *table)
    return body + b"\0" * (-len(body) % 4)


def _tag_desc(text):
    ascii_ = text.encode("ascii") + b"\0"
    body = b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + struct.pack(">II", 0, 0)
    body += struct.pack(">HB", 0, 0) + b"\0" * 67
    return body + b"\0" * (-len(body) % 4)


def make_icc(description, primaries, gamma=None, table=None):
    """A minimal ICC v2 display profile (matrix/TRC) built by hand: colorants, white point and one TRC."""
    m = rgb_to_xyz_d50(primaries)
    curve = _tag_curve(gamma, table)
    tags = [(b"desc", _tag_desc(description)), (b"wtpt", _tag_xyz(D50)), (b"rXYZ", _tag_xyz(m[:, 0])),
            (b"gXYZ", _tag_xyz(m[:, 1])), (b"bXYZ", _tag_xyz(m[:, 2])), (b"rTRC", curve), (b"gTRC", curve),
            (b"bTRC", curve), (b"cprt", b"text" + b"\0" * 4 + b"no copyright, test data\0")]
    offset = 128 + 4 + 12 * len(tags)
    table_bytes, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table_bytes += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
    header += struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
    header += b"".join(_s15(c) for c in D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table_bytes + data


P3_TABLE = [int(round(float(srgb_decode(np.float64(i / 1023))) * 65535)) for i in range(1024)]
PROFILES = {
    "adobe": (make_icc("Adobe RGB (1998) test", ADOBE_RGB, gamma=ADOBE_GAMMA), ADOBE_RGB,
              lambda v: v ** ADOBE_GAMMA),
    "p3": (make_icc("Display P3 test", DISPLAY_P3, table=P3_TABLE), DISPLAY_P3, srgb_decode),
}


def expected_srgb(pixels, primaries, decode_trc):
    """The sRGB codes of pixels in a source space, computed in float64 (out-of-gamut values clipped)."""
    lin = decode_trc(pixels.astype(np.float64) / 255)
    xyz = lin @ rgb_to_xyz_d50(primaries).T
    srgb_lin = xyz @ np.linalg.inv(rgb_to_xyz_d50(SRGB)).T
    return np.floor(srgb_encode(srgb_lin) * 255 + 0.5)


def saturation(rgb):
    rgb = rgb.astype(np.float64)
    return float(np.mean(rgb.max(-1) - rgb.min(-1)))


def _png_bytes(pixels, icc=None, mode=None):
    buf = io.BytesIO()
    im = Image.fromarray(pixels)
    im.save(buf, format="PNG", **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def muted_pixels():
    """Moderately saturated colours: in gamut for sRGB after conversion from either wide space."""
    rng = np.random.default_rng(7)
    base = rng.integers(60, 200, size=(19, 23, 1))
    return np.clip(base + rng.integers(-45, 46, size=(19, 23, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_wide_gamut_profile_is_converted_to_srgb(name, muted_pixels):
    icc, primaries, trc = PROFILES[name]
    data = _png_bytes(muted_pixels, icc)
    converted = imageio.decode_bytes(data, 1 << 30, "x.png").rgb
    ignored = imageio.decode_bytes(data, 1 << 30, "x.png", color="ignore").rgb
    assert np.array_equal(ignored, muted_pixels)  # ignore: the stored codes as they are
    want = expected_srgb(muted_pixels, primaries, trc)
    diff = np.abs(converted.astype(np.int64) - want)
    assert diff.max() <= 2, diff.max()  # LittleCMS vs float64 reference
    # The report: wide-gamut photos came out desaturated when taken as sRGB.
    assert saturation(converted) > saturation(ignored) * 1.05


def test_srgb_profile_changes_nothing(muted_pixels):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_profile = imageio.decode_bytes(_png_bytes(muted_pixels, srgb), 1 << 30, "x.png").rgb
    assert np.array_equal(with_profile, muted_pixels)


def test_alpha_passes_through_conversion(muted_pixels):
    icc = PROFILES["adobe"][0]
    alpha = np.arange(muted_pixels[..., 0].size, dtype=np.uint8).reshape(muted_pixels.shape[:2])
    rgba = np.concatenate([muted_pixels, alpha[..., None]], axis=2)
    dec = imageio.decode_bytes(_png_bytes(rgba, icc), 1 << 30, "x.png")
    assert np.array_equal(dec.alpha, alpha)
    assert np.array_equal(dec.rgb, imageio.decode_bytes(_png_bytes(muted_pixels, icc), 1 << 30, "x.png").rgb)


def test_palette_image_with_a_profile_is_converted(muted_pixels):
    icc = PROFILES["adobe"][0]
    pal = Image.fromarray(muted_pixels).quantize(64)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", icc_profile=icc)
    plain = np.asarray(pal.convert("RGB"))
    converted = imageio.decode_bytes(buf.getvalue(), 1 << 30, "p.png").rgb
    assert saturation(converted) > saturation(plain) * 1.05
    assert np.array_equal(imageio.decode_bytes(buf.getvalue(), 1 << 30, "p.png", color="ignore").rgb, plain)


def test_damaged_profile_is_ignored(muted_pixels):
    dec = imageio.decode_bytes(_png_bytes(muted_pixels, b"not an icc profile" * 8), 1 << 30, "x.png")
    assert np.array_equal(dec.rgb, muted_pixels)


def test_pipeline_converts_and_records_the_choice(tmp_path, muted_pixels, run_cli, monkeypatch):
    import json

    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "p3.png").write_bytes(_png_bytes(muted_pixels, PROFILES["p3"][0]))
    for color in ("convert", "ignore"):
        out = tmp_path / color
        res = run_cli("--set", f"input={inp}", "--set", f"output={out}", "--set", f"decode.color={color}",
                      "--set", "workers=1", "--set", "noise.model=none")
        assert res.code == 0, res.err
        info = json.loads((out / "dataset.json").read_text())
        assert info["config"]["decode"]["color"] == color
        high = np.asarray(Image.open(out / "high" / "p3.png"))
        assert np.array_equal(high, muted_pixels) == (color == "ignore")
