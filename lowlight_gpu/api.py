"""Library API for on-the-fly augmentation: the CLI's own sampling and synthesis, on in-memory images.

    import lowlight_gpu as ll
    config = ll.load_config("config.yaml", check_paths=False)   # once, outside the loop
    params = ll.sample_params(ll.pair_seed(epoch, name), config)
    low = ll.synthesize(high, params)     # numpy -> numpy, cupy -> cupy, torch -> torch

``synthesize`` calls the same backend ``render`` that the pipeline calls, so
``synthesize(high, sample_params(row["seed"], config))`` equals the low image
the CLI wrote for that manifest row, bit for bit (same backend), when ``high``
is the decoded source (``load_image``) or the dataset's high image.

Array types:

* numpy (or anything ``np.asarray`` takes, e.g. a PIL image) -> numpy, numpy backend;
* CuPy -> CuPy, on the CuPy backend;
* PyTorch: a CPU tensor goes to the numpy backend and a CUDA tensor to the
  CuPy backend through DLPack, without a copy either way in or out; the result
  is a tensor on the same device.

The image is uint8 (H, W, 3), or (H, W, 4) whose alpha channel is passed
through unchanged, as the CLI passes a source's alpha to every output.  A float
image with values in [0, 1] is quantised to 8-bit codes first (the model works
on codes) and the result comes back as the same float dtype, code / 255.
"""

import os

import numpy as np

from . import params as _params
from . import synth
from .config import load_config
from .hashing import pair_seed
from .synth.signal import quantize_lut

__all__ = ["load_config", "load_image", "pair_seed", "sample_params", "synthesize"]

DEFAULT_MAX_PIXELS = 89478485


def sample_params(seed, config=None):
    """Every parameter of the pair with this pair seed; config is a Config, a dict, a YAML path, or None (defaults)."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, check_paths=False)
    return _params.sample_params(seed, config)


def load_image(path, max_pixels=DEFAULT_MAX_PIXELS, color="convert"):
    """A source decoded as the CLI decodes it (color: decode.color): uint8 (H, W, 3), or (H, W, 4) with alpha; read-only."""
    from .imageio import decode

    decoded = decode(path, max_pixels, color)
    if decoded.alpha is None:
        return decoded.rgb
    rgba = np.concatenate((decoded.rgb, decoded.alpha[:, :, None]), axis=2)
    rgba.flags.writeable = False
    return rgba


def synthesize(image, params, t=None, noisy=True):
    """The low image of a pair (step t of a progressive chain; noisy=False for the clean one), as image's array type."""
    check_step(params, t)
    kind = array_kind(image)
    if kind == "torch":
        return _synthesize_torch(image, params, t, noisy)
    if kind == "cupy":
        import cupy

        return render(cupy_backend(), image, params, t, noisy, cupy)
    return render(synth.get("numpy"), np.asarray(image), params, t, noisy, np)


def array_kind(image):
    """'torch', 'cupy' or 'numpy', from the type's module, so neither library is imported to ask."""
    top = type(image).__module__.split(".")[0]
    return top if top in ("torch", "cupy") else "numpy"


def check_step(params, t):
    """ValueError unless t is None or a step 1..T of a progressive pair."""
    if t is None:
        return
    steps = (params.get("progressive") or {}).get("steps")
    if steps is None:
        raise ValueError("synthesize: t is only for progressive params (progressive.enabled: true); use t=None")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t <= steps:
        raise ValueError(f"synthesize: t must be a step in 1..{steps}, got {t!r}")


def render(backend, image, params, t, noisy, xp):
    """Render through a backend module; an alpha channel (4th) is passed through unchanged."""
    is_float = image.dtype.kind == "f"
    if not (image.dtype == xp.uint8 or is_float) or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"synthesize: expected a uint8 (H, W, 3) or (H, W, 4) image (or float in [0, 1]), "
                         f"got {image.dtype} {tuple(image.shape)}")
    too_small = _params.size_problem(image.shape[1], image.shape[0], params["noise"]["model"]) if noisy else None
    if too_small:
        raise ValueError(f"synthesize: {too_small}")
    rgb = image[:, :, :3]
    if is_float:
        # The model is defined on 8-bit codes (lookup tables, Poisson tables per code), so float input in
        # [0, 1] is quantised the way the pipeline quantises, and the result is scaled back to its dtype.
        rgb = quantize_lut(rgb, xp)
    low = xp.asarray(backend.render(xp.ascontiguousarray(rgb), params, t, noisy))
    if is_float:
        low = (low / 255.0).astype(image.dtype)
    if image.shape[2] == 3:
        return low
    return xp.concatenate((low, image[:, :, 3:]), axis=2)


def cupy_backend():
    """The CuPy backend module, or BackendUnavailable with the reason in one line."""
    ok, reason = synth.cupy_status()
    if not ok:
        raise synth.BackendUnavailable(f"synthesize: CuPy input needs the CuPy backend: {reason}")
    return synth.get("cupy")


def _synthesize_torch(tensor, params, t, noisy):
    """A torch tensor in and out through DLPack (zero-copy): CPU on numpy, CUDA on CuPy."""
    import torch

    tensor = tensor.detach()
    if tensor.device.type == "cuda":
        import cupy

        with cupy.cuda.Device(tensor.device.index):
            low = render(cupy_backend(), cupy.from_dlpack(tensor), params, t, noisy, cupy)
    elif tensor.device.type == "cpu":
        low = render(synth.get("numpy"), np.from_dlpack(tensor), params, t, noisy, np)
    else:
        raise ValueError(f"synthesize: tensors on '{tensor.device.type}' are not supported; use CPU or CUDA")
    return torch.from_dlpack(low)
