"""Synthesis backends: apply a pair's params to arrays.  Nothing here touches files.

Each backend module offers ``render(rgb, params, t=None, noisy=True)`` and
``render_many(rgb, params, specs)`` with the same meaning; ``select`` picks one.
"""

import sys

from ..errors import BackendUnavailable  # noqa: F401 - callers import it from here

_NOTE_PRINTED = []


def cupy_status():
    """(usable, reason) for the CuPy backend, probed by running a tiny kernel."""
    # The CPU modules the CuPy backend imports are loaded first and outside the try: a failure there (the
    # model's library not built, say) is not CuPy's, and the note must not blame it.
    from . import numpy_backend  # noqa: F401
    try:
        from . import cupy_backend
    except Exception as exc:  # noqa: BLE001 - any import failure means "no GPU backend here"
        return False, f"cannot import the CuPy backend ({type(exc).__name__}: {exc})"
    return cupy_backend.available()


def get(name):
    """The backend module called name ('numpy' or 'cupy')."""
    if name == "cupy":
        from . import cupy_backend
        return cupy_backend
    from . import numpy_backend
    return numpy_backend


def select(requested, quiet=False):
    """Resolve backend auto/numpy/cupy to a backend module, or raise BackendUnavailable."""
    if requested == "numpy":
        return get("numpy")
    ok, reason = cupy_status()
    if ok:
        return get("cupy")
    if requested == "cupy":
        raise BackendUnavailable(f"backend 'cupy' needs a working GPU: {reason}; use backend: numpy or auto")
    if not quiet and not _NOTE_PRINTED:
        _NOTE_PRINTED.append(True)
        print(f"lowlight_gpu: backend auto -> numpy ({reason})", file=sys.stderr)
    return get("numpy")
