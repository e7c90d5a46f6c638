"""Image decoding, PNG encoding and atomic file writes.

This module turns a source image file into the upright 8-bit RGB "high" image
(plus its alpha channel, when it has one) and writes PNG outputs. It knows
nothing about synthesis parameters.

Decoding rules, in short:

* Only the formats named by ``IMAGE_EXTENSIONS`` are tried (PNG, JPEG/MPO, BMP,
  TIFF, WebP, GIF, PNM, TGA, JPEG 2000), whatever the file is called; other
  Pillow plugins (EPS, PDF, PSD, ...) are never run on untrusted input.
* The header size is checked against ``max_pixels`` before pixels are decoded.
  Pillow's own bomb check in ``Image.open`` still applies, so an image above
  ``2 * Image.MAX_IMAGE_PIXELS`` is refused whatever ``max_pixels`` says (and one
  above ``Image.MAX_IMAGE_PIXELS`` makes Pillow emit a DecompressionBombWarning).
  Pillow's global settings are never changed.
* EXIF orientation (or XMP ``tiff:Orientation``) is applied, with the same
  mapping as ``ImageOps.exif_transpose``; a broken EXIF block only loses the
  orientation.
* Multi-frame files (GIF, APNG, animated WebP, multi-page TIFF) give their
  first frame.
* Colour: CMYK, YCbCr, LAB and HSV go through Pillow's ``convert("RGB")``.
  There is no ICC colour management: embedded profiles are ignored, so e.g.
  Adobe RGB or Display P3 sources are taken as if they were sRGB.
* 16-bit grayscale (``I;16*``, and ``I`` taken as 0..65535) becomes 8-bit with
  ``round(v / 257)``. ``F`` is taken as [0, 1].
* 16-bit RGB/RGBA: Pillow 13 never hands these out as 16-bit data. A 16-bit
  RGB(A) PNG or TIFF opens directly as mode ``RGB``/``RGBA`` with each sample
  reduced to its high byte (``v >> 8``, i.e. truncation rather than
  ``round(v / 257)``; the two differ by at most one level), and a 16-bit
  gray+alpha PNG opens as ``RGBA``. We take those 8-bit values as they come.
* Colour-key transparency (PNG ``tRNS`` on RGB/L/P images, GIF transparent
  index) becomes an alpha channel, because alpha passes through whenever the
  source has one.

Decoded arrays are uint8, C-contiguous, own their memory (never a view into a
Pillow image or into each other) and are read-only: the common RGB case hands
back ``np.asarray(im)`` as is, which is backed by an immutable ``bytes``
buffer, and every other path is made read-only too so that no consumer comes
to depend on writing into them. Copy before mutating.
"""

from __future__ import annotations

import functools
import io
import os
import pathlib
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

# Pillow's PNG writer hands zlib 64 KiB at a time from a Python loop, taking the GIL back
# between blocks; with 16 encoder threads that loop, not zlib, limits throughput.  Larger
# blocks (and so larger IDAT chunks) make it a few calls per image.  Raising the limit only
# changes how IDAT data is chunked, never the pixels, and leaves larger settings alone.
ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 22)

__all__ = [
    "IMAGE_EXTENSIONS",
    "Decoded",
    "DecodeError",
    "decode",
    "decode_bytes",
    "encode_png",
    "is_image_name",
    "temp_name",
    "write_atomic",
]

# Extension -> Pillow format that normally reads it. Decoding tries the
# format named by the extension first (it matters for TGA, which has no magic
# number) and then the rest, because misnamed files are common.
_FORMAT_BY_EXTENSION = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".pbm": "PPM",
    ".pnm": "PPM",
    ".tga": "TGA",
    ".jp2": "JPEG2000",
    ".j2k": "JPEG2000",
}

IMAGE_EXTENSIONS: frozenset[str] = frozenset(_FORMAT_BY_EXTENSION)

# Every Pillow format decode() may use (JPEG also covers MPO, which is what
# many camera JPEGs are). Formats with a magic number come first so that the
# magic-less TGA is tried last.
_FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "JPEG2000", "TGA",
)

# EXIF Orientation value -> how to make the array upright, as numpy views on
# the first two axes (shared by (H, W, 3) rgb and (H, W) alpha). Same result
# as ImageOps.exif_transpose (the tests compare the two), done here instead
# because exif_transpose copies the whole image even when it is already
# upright, and because views work alike for every mode we convert from.
_ORIENT = {
    2: lambda a: a[:, ::-1],                       # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],                    # ROTATE_180
    4: lambda a: a[::-1],                          # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),                 # TRANSPOSE
    6: lambda a: np.rot90(a, -1),                  # ROTATE_270
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),     # TRANSVERSE
    8: lambda a: np.rot90(a, 1),                   # ROTATE_90
}

_EXIF_ORIENTATION = 0x0112
_GRAY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_CONVERT_TO_RGB_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})


class DecodeError(Exception):
    """An image could not be decoded; str() is a one-line human reason."""

    def __init__(self, message: object) -> None:
        # Keep the one-line promise whatever a plugin put in its message.
        super().__init__(_first_line(message))


@dataclass(frozen=True)
class Decoded:
    """An upright 8-bit image: rgb (H, W, 3) and alpha (H, W) or None, read-only."""

    rgb: np.ndarray
    alpha: np.ndarray | None


def is_image_name(name: str) -> bool:
    """True if the file name has one of IMAGE_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def decode(path: str | os.PathLike[str], max_pixels: int) -> Decoded:
    """Decode an image file into upright 8-bit RGB (+ alpha); raise DecodeError."""
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise DecodeError("cannot read file: is a directory") from None
    except OSError as e:
        # Windows reports a directory as PermissionError.
        if os.path.isdir(path):
            raise DecodeError("cannot read file: is a directory") from None
        raise DecodeError(f"cannot read file: {e.strerror or e}") from e
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise DecodeError(f"cannot read file: {e.strerror or e}") from e
        if size == 0:
            raise DecodeError("empty file")
        return _decode_stream(f, max_pixels, os.fspath(path))


def decode_bytes(data: bytes, max_pixels: int, name: str = "") -> Decoded:
    """Decode an in-memory image by the rules of decode(); name only hints the format."""
    if len(data) == 0:
        raise DecodeError("empty file")
    return _decode_stream(io.BytesIO(data), max_pixels, name)


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None, compress_level: int) -> bytes:
    """Encode uint8 rgb (H, W, 3) and optional alpha (H, W) as a metadata-free Pillow PNG (fpng: see encode.py)."""
    from . import encode  # the encoders live there; this is the Pillow one, kept for callers of imageio

    encode.check_level(compress_level)
    return encode.encode_pillow(encode.interleave(rgb, alpha), compress_level)


def temp_name(path: str | os.PathLike[str]) -> pathlib.Path:
    """The temporary file write_atomic() uses for path: '.{basename}.tmp' beside it."""
    p = pathlib.Path(path)
    if not p.name:
        raise ValueError(f"path has no file name: {path!r}")
    return p.with_name(f".{p.name}.tmp")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write data to path via a temporary file and os.replace, creating parents."""
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if _holds(final, data):
        # A rerun that produces the same bytes leaves the file (and its mtime) untouched.
        _unlink_quietly(temp_name(final))
        return
    # The temporary name is deterministic on purpose: a run killed mid-write
    # leaves at most one '.name.tmp', and the next run that regenerates the
    # same output overwrites it instead of accumulating random leftovers. The
    # cost is that two writers of the same output path must not run at once,
    # which the pipeline never does (each output has exactly one producer).
    tmp = temp_name(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            # No fsync per file: the pipeline makes a shard durable with one
            # syncfs before it finalises the shard's manifest part.  Starting
            # the write-back now (without waiting) lets the disk work while we
            # compute, so that final sync finds almost nothing left to write.
            start_writeback(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        _unlink_quietly(tmp)
        raise


SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-back of the range's dirty pages, do not wait
_sync_file_range = None      # libc's sync_file_range, looked up on first use; False where there is none


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing fd's dirty pages to disk, without waiting (Linux; a no-op elsewhere)."""
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = _find_sync_file_range()
    if _sync_file_range:
        _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # only a hint: a failure (e.g. EINVAL) changes nothing


def _find_sync_file_range():
    """sync_file_range(2) from the C library with its argument types, or False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, ImportError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _holds(path: pathlib.Path, data: bytes) -> bool:
    """Whether path already holds exactly data (a size check first, so a new file costs one stat)."""
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def _unlink_quietly(path: pathlib.Path) -> None:
    """Remove path if it exists."""
    try:
        path.unlink()
    except OSError:
        pass


# --------------------------------------------------------------------------
# internals


def _first_line(message: object) -> str:
    """The first non-empty line of str(message), stripped."""
    for line in str(message).splitlines():
        line = line.strip()
        if line:
            return line
    return type(message).__name__ if isinstance(message, BaseException) else "unknown error"


def _decode_stream(fp: io.IOBase, max_pixels: int, name: str) -> Decoded:
    """Open, size-check, load, convert and orient an image from a seekable stream."""
    formats = _formats_for(os.path.splitext(name)[1].lower())
    # Pillow plugins raise all sorts of types (OSError, SyntaxError, ValueError,
    # struct.error, zlib.error, ...), so each stage catches Exception; MemoryError
    # is re-raised because it is about this process, not about the file.
    try:
        im = Image.open(fp, formats=formats)
    except MemoryError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(f"decompression bomb: {_first_line(e)}") from e
    except Image.UnidentifiedImageError as e:
        raise DecodeError("not a decodable image") from e
    except Exception as e:
        raise DecodeError(f"not a decodable image: {_first_line(e)}") from e

    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(
                f"decompression bomb: {width}x{height} = {width * height / 1e6:.1f} MP "
                f"exceeds max_pixels={max_pixels}"
            )
        if width <= 0 or height <= 0:
            raise DecodeError(f"image has zero size ({width}x{height})")
        try:
            # Loads the current frame only, which right after open is the first.
            im.load()
        except MemoryError:
            raise
        except Image.DecompressionBombError as e:
            raise DecodeError(f"decompression bomb: {_first_line(e)}") from e
        except Exception as e:
            raise DecodeError(f"truncated or corrupt image data: {_first_line(e)}") from e
        orientation = _orientation(im)
        try:
            rgb, alpha = _to_rgb8(im)
        except (MemoryError, DecodeError):
            raise
        except Exception as e:
            raise DecodeError(f"cannot convert mode {im.mode!r} to RGB: {_first_line(e)}") from e

    orient = _ORIENT.get(orientation)
    if orient is not None:
        rgb = orient(rgb)
        alpha = None if alpha is None else orient(alpha)
    return Decoded(rgb=_finish(rgb), alpha=None if alpha is None else _finish(alpha))


@functools.lru_cache(maxsize=None)
def _formats_for(ext: str) -> tuple[str, ...]:
    """Pillow formats to try for a file extension: its own format first."""
    # Image.open raises KeyError for a format name no plugin registered, so
    # keep only the ones this Pillow has (init() is what open() does anyway).
    Image.init()
    available = [f for f in _FORMATS if f in Image.OPEN]
    first = _FORMAT_BY_EXTENSION.get(ext)
    if first in available:
        available.remove(first)
        available.insert(0, first)
    return tuple(available)


def _orientation(im: Image.Image) -> int:
    """EXIF/XMP orientation 1..8, or 1 if absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return value if isinstance(value, int) and value in _ORIENT else 1
    except MemoryError:
        raise
    except Exception:
        # A broken EXIF block costs the orientation, not the image.
        return 1


def _to_rgb8(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels of a loaded image as uint8 rgb (H, W, 3) and alpha (H, W) or None."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode == "RGB" and not has_key:
        # The hot path: np.asarray already copies out of Pillow; add nothing.
        return np.asarray(im), None
    if mode == "RGBA":
        return _split_alpha(np.asarray(im))
    if mode == "L" and not has_key:
        return _gray_to_rgb(np.asarray(im)), None
    if mode == "LA":
        la = np.asarray(im)
        return _gray_to_rgb(la[:, :, 0]), la[:, :, 1]
    if mode == "La":
        # Premultiplied gray: Pillow un-premultiplies on the way to LA.
        la = np.asarray(im.convert("LA"))
        return _gray_to_rgb(la[:, :, 0]), la[:, :, 1]
    if mode in ("RGB", "L", "RGBa", "PA") or (mode == "P" and _palette_has_alpha(im)):
        # Colour keys, premultiplied RGBa and palette alpha all resolve in
        # Pillow's RGBA conversion.
        return _split_alpha(np.asarray(im.convert("RGBA")))
    if mode == "P":
        return np.asarray(im.convert("RGB")), None
    if mode == "1":
        return _gray_to_rgb(np.asarray(im.convert("L"))), None
    if mode in _GRAY16_MODES:
        return _gray_to_rgb(_gray16_to_8(np.asarray(im))), None
    if mode == "F":
        return _gray_to_rgb(_float_to_8(np.asarray(im))), None
    if mode in _CONVERT_TO_RGB_MODES:
        return np.asarray(im.convert("RGB")), None
    try:
        return np.asarray(im.convert("RGB")), None
    except MemoryError:
        raise
    except Exception:
        raise DecodeError(f"unsupported image mode {mode!r}") from None


def _palette_has_alpha(im: Image.Image) -> bool:
    """True if a P image has transparency (tRNS/GIF index or an RGBA palette)."""
    if "transparency" in im.info:
        return True
    palette = getattr(im, "palette", None)
    return palette is not None and palette.mode == "RGBA"


def _split_alpha(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 4) -> rgb (H, W, 3) view and alpha (H, W) view."""
    return rgba[:, :, :3], rgba[:, :, 3]


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) by replication, as a new C-contiguous array."""
    return np.repeat(gray[:, :, None], 3, axis=2)


def _gray16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit gray (any byte order, or int32 taken as 0..65535) -> round(v / 257)."""
    v = np.clip(values, 0, 65535).astype(np.uint32)
    # (v + 128) // 257 == round(v / 257) for integers: v / 257 is never x.5.
    return ((v + 128) // 257).astype(np.uint8)


def _float_to_8(values: np.ndarray) -> np.ndarray:
    """Float gray taken as [0, 1] -> uint8, clipped and rounded; NaN -> 0."""
    v = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(v, 0.0, 1.0) * 255.0).astype(np.uint8)


def _finish(a: np.ndarray) -> np.ndarray:
    """Make a uint8 C-contiguous array that owns its memory, and mark it read-only."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if a.base is not None and (a.flags.writeable or isinstance(a.base, np.ndarray)):
        # Slicing can leave a view that is already contiguous (e.g. rgb of a
        # 1x1 RGBA image); it would alias its neighbour, so copy. What stays
        # is the fast path: a read-only array over the bytes Pillow gave us.
        a = a.copy()
    a.flags.writeable = False
    return a
