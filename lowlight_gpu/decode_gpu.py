"""JPEG decoding on the GPU with NVIDIA nvImageCodec (``decode.device: gpu``).

Only baseline/progressive colour JPEGs that need nothing the CPU decoder adds
go to the GPU: the file's header is read with Pillow first (size check against
``max_pixels``, EXIF orientation, mode), and everything else -- other formats,
CMYK or grayscale JPEGs, JPEGs with an ICC profile while ``decode.color`` is
``convert``, and any file nvImageCodec cannot decode -- goes to
``imageio.decode`` on the CPU, with the same one-line errors.

A JPEG that was meant for the GPU but that nvImageCodec failed on (an exception, say from a changed
API, or an image of the wrong shape) is decoded on the CPU too, but never silently: the first such
file of a run prints one stderr line with the reason, and the run's summary counts them
(``reset_fallbacks``, ``describe_fallbacks``; the CLI calls both).  The count is this process's: a Dask
run's workers print their own line, and its summary counts none.

The GPU decoder's IDCT and chroma upsampling differ from libjpeg-turbo's, so
the high image differs from Pillow's by a few levels; each row records which
decoder made it (``decoder``), and ``--verify`` replays such rows from the
stored high image.  EXIF orientation is applied here on the host with the
same mapping as the CPU path (nvImageCodec's own rotation is switched off), so
both paths agree on which way is up.

Nothing imports this module unless ``decode.device`` is ``gpu``.
"""

from __future__ import annotations

import collections
import io
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import imageio
from .errors import first_line

NAME = "nvimgcodec"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LOCAL = threading.local()  # one nvImageCodec Decoder per thread: decoders keep per-call state
_MODULE = []
_FALLBACKS = collections.Counter()  # reason -> JPEGs nvImageCodec failed on since reset_fallbacks()
_FALLBACK_LOCK = threading.Lock()


@dataclass(frozen=True)
class GpuDecoded(imageio.Decoded):
    """A source decoded on the GPU: rows record decoder 'nvimgcodec' instead of 'pillow'."""

    decoder: str = NAME


class GpuDecoderUnavailable(Exception):
    """decode.device: gpu cannot work here; str() is one line with the fix."""


def load():
    """The nvidia.nvimgcodec module; GpuDecoderUnavailable (one line) when it cannot be imported."""
    if not _MODULE:
        try:
            from nvidia import nvimgcodec
        except Exception as exc:  # noqa: BLE001 - any import failure means "no GPU decoder here"
            raise GpuDecoderUnavailable(
                "decode.device: 'gpu' needs NVIDIA nvImageCodec, which cannot be imported here "
                f"({type(exc).__name__}: {exc}); pip install 'lowlight_gpu[cuda12]' (or [cuda13]), "
                "or use decode.device: cpu") from None
        _MODULE.append(nvimgcodec)
    return _MODULE[0]


def version():
    """nvImageCodec's version string."""
    return str(getattr(load(), "__version__", "unknown"))


def describe():
    """The decoder record of run.json, done-markers and dataset.json."""
    return {"name": NAME, "version": version(), "fallback": {"name": "pillow", "version": Image.__version__}}


def decode(path, max_pixels, color="convert"):
    """A file decoded by imageio.decode's rules: JPEGs on the GPU (GpuDecoded), the rest and failures on the CPU."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return imageio.decode(path, max_pixels, color)  # the CPU path words the error
    return decode_data(data, max_pixels, color, os.fspath(path))


def decode_data(data, max_pixels, color="convert", name=""):
    """decode() of bytes already read (an object's): JPEGs on the GPU, the rest and failures on the CPU."""
    rgb = decode_jpeg(data, max_pixels, color, name or "a JPEG")
    if rgb is None:
        return imageio.decode_bytes(data, max_pixels, name, color)
    return GpuDecoded(rgb=rgb, alpha=None)


def decode_jpeg(data, max_pixels, color="convert", name="a JPEG"):
    """The upright, read-only uint8 (H, W, 3) of a JPEG decoded on the GPU, or None when the CPU should decode it.

    A JPEG the GPU should have decoded but could not is noted (note_fallback) before the CPU gets it.
    """
    if not data.startswith(_JPEG_MAGIC):
        return None
    header = _header(data, max_pixels, color)
    if header is None:
        return None
    size, orientation = header
    try:
        rgb = _gpu_decode(data)
    except Exception as exc:  # noqa: BLE001 - nvImageCodec raises its own types; the CPU decoder is the fallback
        return note_fallback(name, f"{type(exc).__name__}: {first_line(exc)}")
    if rgb.shape != (size[1], size[0], 3):
        return note_fallback(name, f"nvImageCodec gave an image of shape {rgb.shape}, the header says "
                                   f"{size[0]}x{size[1]} RGB")
    return imageio.read_only(imageio.upright(rgb, orientation))


def note_fallback(name, reason):
    """Count a JPEG nvImageCodec failed on; the first of a run prints one stderr line with the reason.  None."""
    with _FALLBACK_LOCK:
        first = not _FALLBACKS
        _FALLBACKS[reason] += 1
    if first:
        print(f"lowlight_gpu: decode.device gpu: nvImageCodec failed on '{name}' ({reason}); it and any other JPEG "
              "it fails on go to the CPU decoder (the summary counts them)", file=sys.stderr)
    return None


def reset_fallbacks():
    """Forget the failed GPU decodes noted so far: a run calls it first, so it logs and counts its own."""
    with _FALLBACK_LOCK:
        _FALLBACKS.clear()


def fallbacks():
    """(count, {reason: count}) of the JPEGs nvImageCodec failed on since reset_fallbacks()."""
    with _FALLBACK_LOCK:
        return sum(_FALLBACKS.values()), dict(_FALLBACKS)


def describe_fallbacks():
    """'N JPEG(s) fell back to the CPU decoder: reason (n); ...' for the run's summary, or '' when none did."""
    count, reasons = fallbacks()
    if not count:
        return ""
    listed = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = "; ".join(f"{reason} ({n})" for reason, n in listed[:3])
    more = f"; {len(listed) - 3} other reason(s)" if len(listed) > 3 else ""
    return f"{count} JPEG(s) fell back to the CPU decoder: {text}{more}"


def _header(data, max_pixels, color):
    """((w, h), EXIF orientation) of a JPEG the GPU may decode, or None to leave it to the CPU."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            w, h = im.size
            if w * h > max_pixels or w <= 0 or h <= 0:
                return None  # the CPU path refuses it with its own words
            if im.mode != "RGB" or (color == "convert" and im.info.get("icc_profile")):
                return None  # CMYK, gray, or a colour profile to convert: the CPU path's rules apply
            return (w, h), imageio.exif_orientation(im)
    except Exception:  # noqa: BLE001 - not a JPEG Pillow can read: the CPU path says why
        return None


def _gpu_decode(data):
    """nvImageCodec's interleaved uint8 RGB of data as a host array; an exception says why it cannot give one."""
    nvimgcodec = load()
    decoder = getattr(_LOCAL, "decoder", None)
    if decoder is None:
        # One CPU thread per decoder: the pipeline already runs one decoder per worker thread.  Fancy (smooth)
        # chroma upsampling is what libjpeg-turbo, and so Pillow, does by default: the closest pixels to the CPU's.
        spec = nvimgcodec.ColorSpec.SRGB if hasattr(nvimgcodec.ColorSpec, "SRGB") else nvimgcodec.ColorSpec.RGB
        params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=spec, allow_any_depth=False)
        decoder = nvimgcodec.Decoder(max_num_cpu_threads=1, options=":fancy_upsampling=1")
        _LOCAL.decoder, _LOCAL.params = decoder, params
    try:
        image = decoder.decode(data, params=_LOCAL.params)
    except TypeError:  # versions whose decode() takes only a DecodeSource
        image = decoder.decode(nvimgcodec.DecodeSource(nvimgcodec.CodeStream(data)), params=_LOCAL.params)
    if image is None:
        raise ValueError("nvImageCodec decoded no image")
    rgb = np.asarray(image.cpu())
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"nvImageCodec gave {rgb.dtype} of shape {rgb.shape}, not uint8 RGB")
    return rgb
