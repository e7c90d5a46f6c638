"""Tests for lowlight_gpu.imageio: decode rules, PNG encoding, atomic writes."""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from lowlight_gpu import encode, fsutil
from lowlight_gpu.fsutil import temp_name, write_atomic
from lowlight_gpu.imageio import (
    IMAGE_EXTENSIONS,
    DecodeError,
    Decoded,
    decode,
    decode_bytes,
    is_image_name,
)

W, H = 37, 23  # odd sizes catch width/height mix-ups
BIG = 89_478_485


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rand(shape, seed=0):
    return _rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(im, path, **kw):
    im.save(path, **kw)
    return path


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png16(values: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h but whose pixel data is a stub."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def _check_contract(d: Decoded, h=H, w=W, alpha=False):
    assert d.rgb.dtype == np.uint8 and d.rgb.shape == (h, w, 3)
    assert d.rgb.flags.c_contiguous and not d.rgb.flags.writeable
    if alpha:
        assert d.alpha is not None
        assert d.alpha.dtype == np.uint8 and d.alpha.shape == (h, w)
        assert d.alpha.flags.c_contiguous and not d.alpha.flags.writeable
        assert not np.shares_memory(d.rgb, d.alpha)
    else:
        assert d.alpha is None


def _one_line_error(fn, *args, match=None):
    with pytest.raises(DecodeError) as info:
        fn(*args)
    msg = str(info.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    if match is not None:
        assert msg.startswith(match), msg
    return msg


# ---------------------------------------------------------------- modes


def test_rgb_round_trip_exact(tmp_path):
    src = _rand((H, W, 3))
    d = decode(_save(Image.fromarray(src), tmp_path / "a.png"), BIG)
    _check_contract(d)
    np.testing.assert_array_equal(d.rgb, src)


def test_rgba_alpha_kept_byte_exact(tmp_path):
    src = _rand((H, W, 4), seed=1)
    d = decode(_save(Image.fromarray(src), tmp_path / "a.png"), BIG)
    _check_contract(d, alpha=True)
    np.testing.assert_array_equal(d.rgb, src[:, :, :3])
    np.testing.assert_array_equal(d.alpha, src[:, :, 3])


def test_fully_opaque_alpha_still_passed_through(tmp_path):
    src = _rand((H, W, 4), seed=2)
    src[:, :, 3] = 255
    d = decode(_save(Image.fromarray(src), tmp_path / "a.png"), BIG)
    _check_contract(d, alpha=True)
    assert (d.alpha == 255).all()


def test_one_by_one_rgba_arrays_are_independent(tmp_path):
    src = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    d = decode(_save(Image.fromarray(src), tmp_path / "a.png"), BIG)
    _check_contract(d, h=1, w=1, alpha=True)
    assert d.rgb.tolist() == [[[1, 2, 3]]] and d.alpha.tolist() == [[4]]


def test_gray_replicated_to_rgb(tmp_path):
    g = _rand((H, W), seed=3)
    d = decode(_save(Image.fromarray(g), tmp_path / "g.png"), BIG)
    _check_contract(d)
    for c in range(3):
        np.testing.assert_array_equal(d.rgb[:, :, c], g)


def test_bilevel_becomes_0_or_255(tmp_path):
    bits = _rand((H, W), seed=4) > 127
    im = Image.fromarray(bits.astype(np.uint8) * 255).convert("1")
    d = decode(_save(im, tmp_path / "b.png"), BIG)
    _check_contract(d)
    np.testing.assert_array_equal(d.rgb[:, :, 1], np.where(bits, 255, 0))


def test_la_gives_gray_rgb_and_alpha(tmp_path):
    la = _rand((H, W, 2), seed=5)
    d = decode(_save(Image.fromarray(la), tmp_path / "la.png"), BIG)
    _check_contract(d, alpha=True)
    np.testing.assert_array_equal(d.rgb, np.repeat(la[:, :, :1], 3, axis=2))
    np.testing.assert_array_equal(d.alpha, la[:, :, 1])


def _palette_image():
    idx = (_rand((H, W), seed=6) % 4).astype(np.uint8)
    im = Image.frombytes("P", (W, H), idx.tobytes())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * (3 * 252))
    return im, idx


def test_palette_without_transparency_is_rgb(tmp_path):
    im, idx = _palette_image()
    d = decode(_save(im, tmp_path / "p.png"), BIG)
    _check_contract(d)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(d.rgb, colours[idx])


def test_palette_with_transparency_is_rgba(tmp_path):
    im, idx = _palette_image()
    d = decode(_save(im, tmp_path / "p.png", transparency=2), BIG)
    _check_contract(d, alpha=True)
    np.testing.assert_array_equal(d.alpha, np.where(idx == 2, 0, 255))


def test_rgb_colour_key_becomes_alpha(tmp_path):
    src = _rand((H, W, 3), seed=7)
    src[0, 0] = (1, 2, 3)
    d = decode(_save(Image.fromarray(src), tmp_path / "k.png", transparency=(1, 2, 3)), BIG)
    _check_contract(d, alpha=True)
    assert d.alpha[0, 0] == 0
    np.testing.assert_array_equal(d.rgb, src)


def test_gray16_png_scaled_by_round_v_over_257(tmp_path):
    values = np.array([0, 65535, 257 * 100, 128, 129, 385, 386, 32896, 65407], dtype=np.uint16)
    expected = [round(int(v) / 257) for v in values]
    assert expected[:5] == [0, 255, 100, 0, 1]
    arr = np.resize(values, (H, W)).astype(np.uint16)
    path = tmp_path / "g16.png"
    path.write_bytes(_png16(arr, color_type=0))
    assert Image.open(path).mode.startswith("I;16")  # really a 16-bit decode path
    d = decode(path, BIG)
    _check_contract(d)
    want = np.resize(np.array(expected, dtype=np.uint8), (H, W))
    np.testing.assert_array_equal(d.rgb[:, :, 0], want)
    np.testing.assert_array_equal(d.rgb[:, :, 2], want)


def test_gray16_tiff_big_endian_and_int32(tmp_path):
    v = np.array([[0, 128, 129, 25700, 65535]], dtype=np.uint16)
    want = [[0, 0, 1, 100, 255]]
    im16 = Image.frombytes("I;16B", (5, 1), v.astype(">u2").tobytes())
    d = decode(_save(im16, tmp_path / "b.tif"), BIG)
    assert d.rgb[:, :, 0].tolist() == want
    # Mode I: taken as 0..65535, clipped outside it.
    i32 = np.array([[-5, 128, 129, 25700, 70000]], dtype=np.int32)
    d = decode(_save(Image.fromarray(i32), tmp_path / "i.tif"), BIG)
    assert d.rgb[:, :, 1].tolist() == want


def test_float_taken_as_unit_range(tmp_path):
    f = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]], dtype=np.float32)
    d = decode(_save(Image.fromarray(f), tmp_path / "f.tif"), BIG)
    assert d.rgb[:, :, 0].tolist() == [[0, 0, 128, 255, 255, 0]]


def test_rgb16_png_becomes_8_bit(tmp_path):
    # Pillow 13 opens 16-bit RGB PNGs as mode RGB, keeping each sample's high
    # byte; the result is within one level of round(v / 257).
    rgb16 = _rng(8).integers(0, 65536, size=(H, W, 3), dtype=np.uint16)
    rgb16[0, 0] = (0, 65535, 257 * 100)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16(rgb16, color_type=2))
    d = decode(path, BIG)
    _check_contract(d)
    assert d.rgb[0, 0].tolist() == [0, 255, 100]
    ideal = (rgb16.astype(np.int64) + 128) // 257
    assert np.abs(d.rgb.astype(np.int64) - ideal).max() <= 1


def test_rgba16_png_keeps_alpha(tmp_path):
    rgba16 = _rng(9).integers(0, 65536, size=(H, W, 4), dtype=np.uint16)
    path = tmp_path / "rgba16.png"
    path.write_bytes(_png16(rgba16, color_type=6))
    d = decode(path, BIG)
    _check_contract(d, alpha=True)
    ideal = (rgba16[:, :, 3].astype(np.int64) + 128) // 257
    assert np.abs(d.alpha.astype(np.int64) - ideal).max() <= 1


def test_cmyk_jpeg_gives_rgb(tmp_path):
    im = Image.fromarray(_rand((H, W, 3), seed=10)).convert("CMYK")
    d = decode(_save(im, tmp_path / "c.jpg", quality=95), BIG)
    _check_contract(d)


def test_ycbcr_tiff_converts(tmp_path):
    im = Image.fromarray(_rand((H, W, 3), seed=11)).convert("YCbCr")
    d = decode(_save(im, tmp_path / "y.tif"), BIG)
    _check_contract(d)


# ---------------------------------------------------------------- orientation


def test_exif_orientation_6_transposes_jpeg(tmp_path):
    im = Image.fromarray(_rand((H, W, 3), seed=12))
    exif = im.getexif()
    exif[0x0112] = 6
    d = decode(_save(im, tmp_path / "o.jpg", exif=exif), BIG)
    _check_contract(d, h=W, w=H)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_exif_transpose(tmp_path, orientation):
    src = _rand((H, W, 4), seed=13)
    im = Image.fromarray(src)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = _save(im, tmp_path / "o.png", exif=exif)
    d = decode(path, BIG)
    with Image.open(path) as ref_im:
        ref = np.asarray(ImageOps.exif_transpose(ref_im))
    np.testing.assert_array_equal(d.rgb, ref[:, :, :3])
    np.testing.assert_array_equal(d.alpha, ref[:, :, 3])
    assert d.rgb.flags.c_contiguous and d.alpha.flags.c_contiguous


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_ignores_orientation(tmp_path):
    src = _rand((H, W, 3), seed=14)
    path = _save(Image.fromarray(src), tmp_path / "e.jpg", exif=b"Exif\x00\x00MM\x00*garbage", quality=100)
    _check_contract(decode(path, BIG))


def test_exif_that_raises_ignores_orientation(tmp_path, monkeypatch):
    src = _rand((H, W, 3), seed=14)
    path = _save(Image.fromarray(src), tmp_path / "e.png")

    def broken(self):
        raise SyntaxError("bad EXIF\nmore")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    np.testing.assert_array_equal(decode(path, BIG).rgb, src)


def test_unknown_orientation_value_ignored(tmp_path):
    im = Image.fromarray(_rand((H, W, 3), seed=15))
    exif = im.getexif()
    exif[0x0112] = 42
    d = decode(_save(im, tmp_path / "o.png", exif=exif), BIG)
    _check_contract(d)


# ---------------------------------------------------------------- frames


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    d = decode(path, BIG)
    _check_contract(d)
    assert (d.rgb == np.array([255, 0, 0], dtype=np.uint8)).all()


def test_multipage_tiff_gives_first_page(tmp_path):
    pages = [Image.new("RGB", (W, H), c) for c in ((10, 20, 30), (40, 50, 60))]
    path = tmp_path / "multi.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    d = decode(path, BIG)
    assert (d.rgb == np.array([10, 20, 30], dtype=np.uint8)).all()


def test_apng_gives_first_frame(tmp_path):
    frames = [Image.new("RGBA", (W, H), c) for c in ((1, 2, 3, 255), (4, 5, 6, 128))]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    d = decode(path, BIG)
    assert (d.rgb == np.array([1, 2, 3], dtype=np.uint8)).all()
    assert (d.alpha == 255).all()


# ---------------------------------------------------------------- failures


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _one_line_error(decode, path, BIG) == "empty file"
    assert _one_line_error(decode_bytes, b"", BIG) == "empty file"


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(_rng(16).bytes(4000))
    assert _one_line_error(decode, path, BIG) == "not a decodable image"


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rand((H, W, 3), seed=17)).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    _one_line_error(decode, path, BIG, match="truncated or corrupt image data: ")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rand((H, W, 3), seed=18)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    _one_line_error(decode_bytes, data[: len(data) // 2], BIG, match="truncated or corrupt image data: ")


def test_directory(tmp_path):
    _one_line_error(decode, tmp_path, BIG, match="cannot read file: ")


def test_missing_file(tmp_path):
    _one_line_error(decode, tmp_path / "nope.png", BIG, match="cannot read file: ")


def test_max_pixels_exceeded(tmp_path):
    path = _save(Image.new("RGB", (W, H)), tmp_path / "a.png")
    msg = _one_line_error(decode, path, W * H - 1)
    assert msg == f"decompression bomb: {W}x{H} = 0.0 MP exceeds max_pixels={W * H - 1}"
    _check_contract(decode(path, W * H))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_max_pixels_checked_before_pixels_are_decoded():
    # The stub IDAT would fail as corrupt data if the pixels were decoded.
    msg = _one_line_error(decode_bytes, _png_header_only(10000, 10000), BIG)
    assert msg == "decompression bomb: 10000x10000 = 100.0 MP exceeds max_pixels=89478485"


def test_pillow_own_bomb_error_is_a_decode_error():
    # Above 2 * Image.MAX_IMAGE_PIXELS, Pillow refuses in Image.open itself.
    _one_line_error(decode_bytes, _png_header_only(20000, 20000), 10**12, match="decompression bomb: ")


def test_formats_outside_the_list_are_not_tried(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")
    assert _one_line_error(decode_bytes, buf.getvalue(), BIG) == "not a decodable image"


def test_decode_error_collapses_to_one_line_and_pickles():
    e = DecodeError("first line\nTraceback (most recent call last):\n  more")
    assert str(e) == "first line"
    assert str(pickle.loads(pickle.dumps(e))) == "first line"


def test_decode_bytes_matches_decode(tmp_path):
    src = _rand((H, W, 4), seed=19)
    path = _save(Image.fromarray(src), tmp_path / "a.webp", lossless=True)
    a, b = decode(path, BIG), decode_bytes(path.read_bytes(), BIG, name="a.webp")
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    np.testing.assert_array_equal(a.rgb, src[:, :, :3])


def test_misnamed_file_still_decodes(tmp_path):
    src = _rand((H, W, 3), seed=20)
    path = _save(Image.fromarray(src), tmp_path / "really_png.jpg", format="PNG")
    np.testing.assert_array_equal(decode(path, BIG).rgb, src)


@pytest.mark.parametrize("ext", [".bmp", ".tga", ".ppm", ".tiff"])
def test_other_formats_round_trip(tmp_path, ext):
    src = _rand((H, W, 3), seed=21)
    np.testing.assert_array_equal(decode(_save(Image.fromarray(src), tmp_path / f"x{ext}"), BIG).rgb, src)


# ---------------------------------------------------------------- the Pillow encoder (encode.py) / write


def encode_png(rgb, alpha, level):
    """PNG bytes of the Pillow encoder at level, as a run with save.encoder: pillow writes them."""
    return encode.encode_png(rgb, alpha, encode.resolve("pillow", level))


def test_encode_png_round_trip_and_determinism():
    rgb, alpha = _rand((H, W, 3), seed=22), _rand((H, W), seed=23)
    for a in (None, alpha):
        first = encode_png(rgb, a, 6)
        assert first == encode_png(rgb.copy(), None if a is None else a.copy(), 6)
        d = decode_bytes(first, BIG)
        np.testing.assert_array_equal(d.rgb, rgb)
        if a is None:
            assert d.alpha is None
        else:
            np.testing.assert_array_equal(d.alpha, a)


def test_encode_png_has_no_metadata_chunks():
    data = encode_png(_rand((H, W, 3), seed=24), None, 1)
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}


def test_encode_png_compress_level_and_readonly_input():
    ramp = np.broadcast_to(np.arange(W, dtype=np.uint8)[None, :, None], (H, W, 3))
    d = decode_bytes(encode_png(np.ascontiguousarray(ramp), None, 9), BIG)
    assert not d.rgb.flags.writeable
    assert len(encode_png(d.rgb, None, 0)) > len(encode_png(d.rgb, None, 9))


@pytest.mark.parametrize("bad", [
    dict(rgb=np.zeros((4, 4, 3), np.float32), alpha=None, level=6),
    dict(rgb=np.zeros((4, 4), np.uint8), alpha=None, level=6),
    dict(rgb=np.zeros((4, 4, 3), np.uint8), alpha=np.zeros((4, 5), np.uint8), level=6),
    dict(rgb=np.zeros((4, 4, 3), np.uint8), alpha=None, level=10),
])
def test_encode_png_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        encode_png(bad["rgb"], bad["alpha"], bad["level"])


def test_write_atomic_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_write_atomic_replaces_existing_and_stale_temp(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old content that is longer")
    temp_name(target).write_bytes(b"leftover from a killed run")
    write_atomic(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert not temp_name(target).exists()


def test_write_atomic_starts_writeback_of_each_new_file(tmp_path, monkeypatch):
    calls = []

    def fake_sync_file_range(fd, offset, nbytes, flags):
        calls.append((os.fstat(fd).st_size, offset, nbytes, flags))
        return -1  # a failing hint must not fail the write

    monkeypatch.setattr(fsutil, "_sync_file_range", fake_sync_file_range)
    write_atomic(tmp_path / "a.png", b"12345")
    write_atomic(tmp_path / "a.png", b"12345")  # unchanged bytes: nothing written, nothing to flush
    write_atomic(tmp_path / "b.png", b"xy")
    assert calls == [(5, 0, 0, fsutil.SYNC_FILE_RANGE_WRITE), (2, 0, 0, fsutil.SYNC_FILE_RANGE_WRITE)]
    assert (tmp_path / "a.png").read_bytes() == b"12345" and (tmp_path / "b.png").read_bytes() == b"xy"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux-only")
def test_start_writeback_uses_the_c_library(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "_sync_file_range", None)
    with open(tmp_path / "f", "wb") as f:
        f.write(b"data")
        f.flush()
        fsutil.start_writeback(f.fileno())
    assert fsutil._sync_file_range and fsutil._sync_file_range.restype is ctypes.c_int


def test_temp_name_is_hidden_sibling(tmp_path):
    assert temp_name(tmp_path / "x" / "img.png") == tmp_path / "x" / ".img.png.tmp"
    assert temp_name("img.png") == temp_name("img.png")


def test_is_image_name():
    assert is_image_name("a.PNG") and is_image_name("dir/b.JpEg") and is_image_name("c.tif")
    assert not is_image_name("notes.txt") and not is_image_name("png") and not is_image_name("a.png.bak")
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"} <= IMAGE_EXTENSIONS
