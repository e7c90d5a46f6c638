"""Encoders: PNG by fpng (fast) or Pillow, chosen once per run by ``save.encoder``; .npy for raw mosaics.

Both write standard, metadata-free PNGs that every decoder reads to the same
pixels; the pixels are the contract, the bytes belong to one encoder (and its
version).  ``auto`` takes fpng where the ``fpng`` package is installed and the
image is 8-bit RGB or RGBA, else Pillow at ``save.compress_level``.  fpng has
no compression level: it always writes its one fast, deterministic stream.

fpng (wrapped by the ``fpng`` package) holds the GIL while it encodes, about
1.2 ms for 768x512 RGB, so many threads of one process do not encode in
parallel; the pipeline runs the CPU backend in worker processes for that reason.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

# Pillow's PNG writer hands zlib 64 KiB at a time from a Python loop, taking the GIL back
# between blocks; larger blocks make it a few calls per image.  Only IDAT chunking changes,
# never the pixels (imageio sets the same value; whichever module loads first sets it).
ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 22)

SETTINGS = ("auto", "fpng", "pillow")

_FALLBACK_NOTED = []  # one stderr line per process when auto cannot use fpng


class EncoderUnavailable(Exception):
    """save.encoder names an encoder that is not installed; str() is one line with the fix."""


@dataclass(frozen=True)
class Encoder:
    """A resolved PNG encoder: name ('fpng' or 'pillow'), library version, Pillow's compress_level."""

    name: str
    version: str
    compress_level: int

    @property
    def label(self) -> str:
        """'fpng 0.1.0' or 'pillow 11.0.0 level 1': what run.json, done-markers and dataset.json record."""
        if self.name == "pillow":
            return f"pillow {self.version} level {self.compress_level}"
        return f"{self.name} {self.version}"

    def encode(self, rgb: np.ndarray, alpha: np.ndarray | None) -> bytes:
        """PNG bytes of uint8 rgb (H, W, 3) and optional alpha (H, W)."""
        return encode_png(rgb, alpha, self)


def fpng_version() -> str | None:
    """The installed fpng package's version, or None when it cannot be imported."""
    module = _fpng()
    return None if module is None else str(getattr(module, "__version__", "unknown"))


def resolve(setting: str, compress_level: int, quiet: bool = False) -> Encoder:
    """The encoder save.encoder means on this machine; EncoderUnavailable for 'fpng' without fpng."""
    if setting not in SETTINGS:
        raise ValueError(f"save.encoder must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if setting != "pillow":
        version = fpng_version()
        if version is not None:
            return Encoder("fpng", version, int(compress_level))
        if setting == "fpng":
            raise EncoderUnavailable("save.encoder: 'fpng' but the fpng package is not installed; "
                                     "pip install fpng, or use save.encoder: auto or pillow")
        if not quiet and not _FALLBACK_NOTED:
            _FALLBACK_NOTED.append(True)
            print("lowlight_gpu: save.encoder auto -> pillow (fpng is not installed; pip install fpng "
                  "writes the same pixels about 20x faster)", file=sys.stderr)
    return Encoder("pillow", Image.__version__, int(compress_level))


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None, encoder: Encoder) -> bytes:
    """Encode uint8 rgb (H, W, 3) and optional alpha (H, W) as a metadata-free PNG with encoder."""
    pixels = interleave(rgb, alpha)
    if encoder.name == "fpng" and _fits_fpng(pixels):
        return _encode_fpng(pixels, encoder.version)
    return encode_pillow(pixels, encoder.compress_level)


def encode_pillow(pixels: np.ndarray, compress_level: int) -> bytes:
    """Pillow's PNG of uint8 (H, W, 3|4) pixels at compress_level (0..9)."""
    check_level(compress_level)
    buf = io.BytesIO()
    # A fresh fromarray image has empty info, so no text/time/pHYs chunks are
    # written and the bytes depend only on the pixels and compress_level.
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=int(compress_level))
    return buf.getvalue()


def check_level(compress_level: int) -> None:
    """TypeError/ValueError unless compress_level is an int in 0..9."""
    if isinstance(compress_level, bool) or not isinstance(compress_level, (int, np.integer)):
        raise TypeError(f"compress_level must be an int, got {compress_level!r}")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level}")


def _encode_fpng(pixels: np.ndarray, version: str) -> bytes:
    """fpng's PNG of C-contiguous uint8 (H, W, 3|4) pixels; EncoderUnavailable unless this process has fpng version."""
    module = _fpng()
    if module is None or str(getattr(module, "__version__", "unknown")) != version:
        # A Dask worker or another machine of the same run: its bytes would not be the recorded encoder's.
        found = "none" if module is None else getattr(module, "__version__", "unknown")
        raise EncoderUnavailable(f"save.encoder: this run writes with fpng {version}, but this process has "
                                 f"fpng {found}; pip install fpng=={version} here")
    data = module.fpng_ext.encode_ndarray(np.ascontiguousarray(pixels))
    if not data:  # fpng signals failure (e.g. a size it refuses) with empty bytes, not an exception
        raise ValueError(f"fpng could not encode an image of shape {pixels.shape}")
    return data


def _fits_fpng(pixels: np.ndarray) -> bool:
    """fpng writes 8-bit RGB and RGBA of at least one pixel."""
    return pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] in (3, 4) and pixels.size > 0


def interleave(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Validated (H, W, 3) or (H, W, 4) uint8 pixels from rgb and an optional alpha plane."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if alpha is None:
        return rgb
    alpha = np.asarray(alpha)
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha must be uint8 {rgb.shape[:2]}, got {alpha.dtype} {alpha.shape}")
    return np.concatenate((rgb, alpha[:, :, None]), axis=2)


_FPNG_MODULE = []  # [module or None], filled on first use


def _fpng():
    """The fpng module, imported once; None when it is not installed or does not load."""
    if not _FPNG_MODULE:
        try:
            import fpng
        except Exception:  # noqa: BLE001 - a broken install is the same as none: use Pillow
            fpng = None
        _FPNG_MODULE.append(fpng)
    return _FPNG_MODULE[0]


def npy_bytes(arr):
    """The .npy file of an array as bytes (format 1.0: the same bytes for the same array everywhere)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False, version=(1, 0))
    return buf.getvalue()
