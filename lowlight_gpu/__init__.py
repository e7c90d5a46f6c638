"""lowlight_gpu: reproducible synthetic low-light pair datasets.

The library API (``sample_params``, ``pair_seed``, ``synthesize``,
``load_config``, ``load_image``, ``PairDataset``) is imported lazily on first
use, so ``import lowlight_gpu`` stays light: no joblib, tqdm, CuPy or torch.
"""

__version__ = "0.1.0"

# name -> submodule that defines it; resolved by __getattr__ on first access (PEP 562).
_LAZY = {
    "load_config": "api",
    "load_image": "api",
    "pair_seed": "api",
    "sample_params": "api",
    "synthesize": "api",
    "PairDataset": "dataset",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    """Import the submodule that defines a public name on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    """Public names, including the lazy ones."""
    return sorted(set(globals()) | set(_LAZY))
