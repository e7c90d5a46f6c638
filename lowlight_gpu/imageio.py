"""Image decoding: a source image file to the upright 8-bit RGB "high" image.

This module turns a source image file into the upright 8-bit RGB "high" image
(plus its alpha channel, when it has one). It knows nothing about synthesis
parameters and writes nothing (encoders: encode.py; atomic writes: fsutil.py).

Decoding rules, in short:

* Only the formats named by ``IMAGE_EXTENSIONS`` are tried (PNG, JPEG/MPO, BMP,
  TIFF, WebP, GIF, PNM, TGA, JPEG 2000), whatever the file is called; other
  Pillow plugins (EPS, PDF, PSD, ...) are never run on untrusted input.
* The header size is checked against ``max_pixels`` before pixels are decoded.
  Pillow's own bomb check in ``Image.open`` still applies, so an image above
  ``2 * Image.MAX_IMAGE_PIXELS`` is refused whatever ``max_pixels`` says (and one
  above ``Image.MAX_IMAGE_PIXELS`` would make Pillow emit a DecompressionBombWarning, which this module
  filters out: the errors row, or max_pixels, already says it).
  Pillow's global settings are never changed.
* EXIF orientation (or XMP ``tiff:Orientation``) is applied, with the same
  mapping as ``ImageOps.exif_transpose``; a broken EXIF block only loses the
  orientation.
* Multi-frame files (GIF, APNG, animated WebP, multi-page TIFF) give their
  first frame.
* Colour: an embedded ICC profile (Adobe RGB, Display P3, a CMYK or gray
  profile, ...) is converted to sRGB with Pillow's ImageCms (LittleCMS,
  perceptual intent: colorimetric for matrix profiles such as these) when ``color="convert"`` (the default; config
  ``decode.color``); a profile that maps every tested value to itself (sRGB)
  costs nothing and changes nothing. ``color="ignore"`` takes the pixels as
  sRGB. Without a profile, CMYK, YCbCr, LAB and HSV go through Pillow's
  ``convert("RGB")``. 16-bit gray and float images are not colour managed.
* HEIC/HEIF (and AVIF where Pillow lacks it) are read when ``pillow-heif`` is
  installed (``pip install 'lowlight-gpu[heif]'``); the opener is registered
  on first use. ``needs_extra(name)`` tells the scan which files it skips.
* Only regular files are opened: a FIFO or device is refused before a read
  could block.
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
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from .errors import DecodeError
from .errors import first_line as _first_line

# Pillow's PNG writer hands zlib 64 KiB at a time from a Python loop, taking the GIL back
# between blocks; with 16 encoder threads that loop, not zlib, limits throughput.  Larger
# blocks (and so larger IDAT chunks) make it a few calls per image.  Raising the limit only
# changes how IDAT data is chunked, never the pixels, and leaves larger settings alone.
ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 22)

# decode() checks every image's size against max_pixels itself and makes an oversized one an errors row, so
# Pillow's DecompressionBombWarning (above Image.MAX_IMAGE_PIXELS) would only repeat that row on stderr, or
# warn about an image that max_pixels allows.  A filter, not a setting: Pillow's own limit stays as it is.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.Image")

__all__ = [
    "IMAGE_EXTENSIONS",
    "Decoded",
    "DecodeError",
    "decode",
    "decode_bytes",
    "exif_orientation",
    "is_image_name",
    "needs_extra",
    "read_only",
    "upright",
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

# Read only when a decoder for them is installed (Pillow's own AVIF, or pillow-heif).
_OPTIONAL_FORMAT_BY_EXTENSION = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}

# Every Pillow format decode() may use (JPEG also covers MPO, which is what
# many camera JPEGs are). Formats with a magic number come first so that the
# magic-less TGA is tried last.
_FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "JPEG2000", "HEIF", "AVIF", "TGA",
)

# EXIF Orientation value -> how to make the array upright, as numpy views on
# the first two axes (shared by (H, W, 3) rgb and (H, W) alpha). Same result
# as ImageOps.exif_transpose (the tests compare the two), done here instead
# because exif_transpose copies the whole image even when it is already
# upright, and because views work alike for every mode we convert from.
ORIENTATIONS = {
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


@dataclass(frozen=True)
class Decoded:
    """An upright 8-bit image: rgb (H, W, 3) and alpha (H, W) or None, read-only."""

    rgb: np.ndarray
    alpha: np.ndarray | None


def is_image_name(name: str) -> bool:
    """True if the file name has one of IMAGE_EXTENSIONS, or an optional one this machine reads (case-insensitive)."""
    ext = os.path.splitext(name)[1].lower()
    return ext in IMAGE_EXTENSIONS or (ext in _OPTIONAL_FORMAT_BY_EXTENSION
                                       and _OPTIONAL_FORMAT_BY_EXTENSION[ext] in optional_formats())


def needs_extra(name: str) -> bool:
    """True for a HEIC/HEIF/AVIF name that no installed decoder reads (pip install 'lowlight-gpu[heif]')."""
    ext = os.path.splitext(name)[1].lower()
    return ext in _OPTIONAL_FORMAT_BY_EXTENSION and _OPTIONAL_FORMAT_BY_EXTENSION[ext] not in optional_formats()


def load_decoders() -> None:
    """Load Pillow's format plugins (and pillow-heif's, where installed) now rather than at the first decode."""
    Image.init()
    optional_formats()


@functools.lru_cache(maxsize=None)
def optional_formats() -> frozenset[str]:
    """The optional formats ('HEIF', 'AVIF') this machine decodes; registers pillow-heif's opener on first call."""
    Image.init()
    try:
        import pillow_heif
    except ImportError:
        pillow_heif = None
    if pillow_heif is not None:
        pillow_heif.register_heif_opener()
        if "AVIF" not in Image.OPEN and hasattr(pillow_heif, "register_avif_opener"):
            pillow_heif.register_avif_opener()  # older pillow-heif; Pillow >= 11.3 reads AVIF itself
    return frozenset(f for f in ("HEIF", "AVIF") if f in Image.OPEN)


def decode(path: str | os.PathLike[str], max_pixels: int, color: str = "convert") -> Decoded:
    """Decode an image file into upright 8-bit RGB (+ alpha); raise DecodeError."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below by fstat.
        f = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)), "rb")
    except IsADirectoryError:
        raise DecodeError("cannot read file: is a directory") from None
    except OSError as e:
        # Windows reports a directory as PermissionError.
        if os.path.isdir(path):
            raise DecodeError("cannot read file: is a directory") from None
        raise DecodeError(f"cannot read file: {e.strerror or e}") from e
    with f:
        try:
            st = os.fstat(f.fileno())
        except OSError as e:
            raise DecodeError(f"cannot read file: {e.strerror or e}") from e
        if stat.S_ISDIR(st.st_mode):
            raise DecodeError("cannot read file: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not a regular file (a FIFO, socket or device)")
        if st.st_size == 0:
            raise DecodeError("empty file")
        return _decode_stream(f, max_pixels, os.fspath(path), color)


def decode_bytes(data: bytes, max_pixels: int, name: str = "", color: str = "convert") -> Decoded:
    """Decode an in-memory image by the rules of decode(); name only hints the format."""
    if len(data) == 0:
        raise DecodeError("empty file")
    return _decode_stream(io.BytesIO(data), max_pixels, name, color)


def upright(a: np.ndarray, orientation: int) -> np.ndarray:
    """a (H, W, ...) turned upright for an EXIF orientation 1..8 (a view; a itself for 1 or an unknown value)."""
    orient = ORIENTATIONS.get(orientation)
    return a if orient is None else orient(a)


# --------------------------------------------------------------------------
# internals


def _decode_stream(fp: io.IOBase, max_pixels: int, name: str, color: str = "convert") -> Decoded:
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
        orientation = exif_orientation(im)
        try:
            rgb, alpha = _to_rgb8(_to_srgb(im) if color == "convert" else im)
        except (MemoryError, DecodeError):
            raise
        except Exception as e:
            raise DecodeError(f"cannot convert mode {im.mode!r} to RGB: {_first_line(e)}") from e

    rgb = upright(rgb, orientation)
    alpha = None if alpha is None else upright(alpha, orientation)
    return Decoded(rgb=read_only(rgb), alpha=None if alpha is None else read_only(alpha))


@functools.lru_cache(maxsize=None)
def _formats_for(ext: str) -> tuple[str, ...]:
    """Pillow formats to try for a file extension: its own format first."""
    # Image.open raises KeyError for a format name no plugin registered, so
    # keep only the ones this Pillow has (init() is what open() does anyway).
    Image.init()
    optional_formats()  # registers pillow-heif's opener (when installed) before the list is taken
    available = [f for f in _FORMATS if f in Image.OPEN]
    first = _FORMAT_BY_EXTENSION.get(ext) or _OPTIONAL_FORMAT_BY_EXTENSION.get(ext)
    if first in available:
        available.remove(first)
        available.insert(0, first)
    return tuple(available)


# ICC colour management (decode.color: convert).  Modes LittleCMS converts here; others keep their pixels.
_ICC_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})


def _to_srgb(im: Image.Image) -> Image.Image:
    """im with an embedded ICC profile converted to sRGB (alpha kept); im itself when there is nothing to do."""
    icc = im.info.get("icc_profile")
    if icc and im.mode == "P":  # a palette with a profile: its colours are in the profile's space too
        im = im.convert("RGBA" if _palette_has_alpha(im) else "RGB")
        icc = im.info.get("icc_profile", icc)
    if not icc or im.mode not in _ICC_MODES or "transparency" in im.info:
        return im  # no profile, a mode LittleCMS is not given here, or a colour key that must match exactly
    base_mode = im.mode.rstrip("A") if im.mode in ("RGBA", "LA") else im.mode
    transform = _srgb_transform(bytes(icc), base_mode)
    if transform is None:
        return im
    base = im.convert(base_mode) if base_mode != im.mode else im
    out = transform.apply(base)
    if base_mode != im.mode:  # alpha is not colour: it passes through unchanged
        out.putalpha(im.getchannel("A"))
    return out


@functools.lru_cache(maxsize=64)
def _srgb_transform(icc: bytes, mode: str):
    """A LittleCMS transform from profile icc (pixels of mode) to sRGB RGB; None for sRGB itself or a bad profile."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                            flags=ImageCms.Flags.NOCACHE)  # no shared 1-pixel cache across threads
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a damaged or unsupported profile is ignored, as browsers do: the pixels are taken as sRGB
    return None if _is_identity(transform, mode) else transform


def _is_identity(transform, mode: str) -> bool:
    """Whether transform leaves every probe value as it is (an sRGB profile): then converting is skipped."""
    if mode == "L":
        probe = np.arange(256, dtype=np.uint8)[None, :]
        return np.array_equal(np.asarray(transform.apply(Image.fromarray(probe, "L"))), _gray_to_rgb(probe))
    if mode != "RGB":
        return False
    ramp = np.arange(256, dtype=np.uint8)
    zeros = np.zeros(256, np.uint8)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 255, 18).round().astype(np.uint8)] * 3), -1).reshape(-1, 3)
    ramps = [np.stack(c, -1) for c in ((ramp, ramp, ramp), (ramp, zeros, zeros), (zeros, ramp, zeros),
                                       (zeros, zeros, ramp))]
    probe = np.concatenate(ramps + [grid])[None]
    return np.array_equal(np.asarray(transform.apply(Image.fromarray(probe, "RGB"))), probe)


def exif_orientation(im: Image.Image) -> int:
    """EXIF/XMP orientation 1..8, or 1 if absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return value if isinstance(value, int) and value in ORIENTATIONS else 1
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


def read_only(a: np.ndarray) -> np.ndarray:
    """Make a uint8 C-contiguous array that owns its memory, and mark it read-only."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if a.base is not None and (a.flags.writeable or isinstance(a.base, np.ndarray)):
        # Slicing can leave a view that is already contiguous (e.g. rgb of a
        # 1x1 RGBA image); it would alias its neighbour, so copy. What stays
        # is the fast path: a read-only array over the bytes Pillow gave us.
        a = a.copy()
    a.flags.writeable = False
    return a
