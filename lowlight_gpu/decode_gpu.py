"""JPEG decoding on the GPU with NVIDIA nvImageCodec (``decode.device: gpu``).

Only baseline/progressive colour JPEGs that need nothing the CPU decoder adds
go to the GPU: the file's header is read with Pillow first (size check against
``max_pixels``, EXIF orientation, mode), and everything else -- other formats,
CMYK or grayscale JPEGs, JPEGs with an ICC profile while ``decode.color`` is
``convert``, and any file nvImageCodec cannot decode -- goes to
``imageio.decode`` on the CPU, with the same one-line errors.

The GPU decoder's IDCT and chroma upsampling differ from libjpeg-turbo's, so
the high image differs from Pillow's by a few levels; each row records which
decoder made it (``decoder``), and ``--verify`` replays such rows from the
stored high image.  EXIF orientation is applied here on the host with the
same mapping as the CPU path (nvImageCodec's own rotation is switched off), so
both paths agree on which way is up.

Nothing imports this module unless ``decode.device`` is ``gpu``.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import imageio

NAME = "nvimgcodec"
_JPEG_MAGIC = b"\xff\xd8\xff"
_LOCAL = threading.local()  # one nvImageCodec Decoder per thread: decoders keep per-call state
_MODULE = []


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
    rgb = decode_jpeg(data, max_pixels, color)
    if rgb is None:
        return imageio.decode_bytes(data, max_pixels, os.fspath(path), color)
    return GpuDecoded(rgb=rgb, alpha=None)


def decode_jpeg(data, max_pixels, color="convert"):
    """The upright, read-only uint8 (H, W, 3) of a JPEG decoded on the GPU, or None when the CPU should decode it."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    header = _header(data, max_pixels, color)
    if header is None:
        return None
    size, orientation = header
    rgb = _gpu_decode(data)
    if rgb is None or rgb.shape != (size[1], size[0], 3):
        return None
    return imageio.read_only(imageio.upright(rgb, orientation))


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
    """nvImageCodec's interleaved RGB of data as a host array, or None when it cannot decode it."""
    nvimgcodec = load()
    decoder = getattr(_LOCAL, "decoder", None)
    if decoder is None:
        # One CPU thread per decoder: the pipeline already runs one decoder per worker thread.  Fancy (smooth)
        # chroma upsampling is what libjpeg-turbo, and so Pillow, does by default: the closest pixels to the CPU's.
        decoder = _LOCAL.decoder = nvimgcodec.Decoder(max_num_cpu_threads=1, options=":fancy_upsampling=1")
        spec = nvimgcodec.ColorSpec.SRGB if hasattr(nvimgcodec.ColorSpec, "SRGB") else nvimgcodec.ColorSpec.RGB
        _LOCAL.params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=spec, allow_any_depth=False)
    try:
        try:
            image = decoder.decode(data, params=_LOCAL.params)
        except TypeError:  # versions whose decode() takes only a DecodeSource
            image = decoder.decode(nvimgcodec.DecodeSource(nvimgcodec.CodeStream(data)), params=_LOCAL.params)
        image = image.cpu() if image is not None else None
        if image is None:
            return None
        rgb = np.asarray(image)
    except Exception:  # noqa: BLE001 - nvImageCodec raises its own types; the CPU decoder is the fallback
        return None
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        return None
    return rgb
