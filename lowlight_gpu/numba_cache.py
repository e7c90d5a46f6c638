"""Where numba caches compiled kernels, so that a read-only install or home still runs.

numba caches beside the source (``__pycache__``) or in the user's cache folder.  In a shared install or a
container running as another user neither is writable, and ``njit(cache=True)`` then raises "cannot cache
function ...: no locator available" when the module is imported.  ``njit`` here catches that once, points
numba at a private folder under the system's temp folder, and, if even that cannot be written, compiles
without a cache (the same machine code, compiled again by every process).
"""

import os
import tempfile

STATE = {"cache": True, "note": ""}  # whether to cache, and what was done about it (for messages and tests)


def njit(**options):
    """numba.njit(cache=True, **options), falling back as the module docstring says."""
    def decorate(func):
        return _jit(func, options)
    return decorate


def _jit(func, options):
    """Decorate func, moving the cache (or dropping it) when numba finds nowhere to write one."""
    import numba

    try:
        return numba.njit(cache=STATE["cache"], **options)(func)
    except RuntimeError as exc:
        if not STATE["cache"] or "cannot cache" not in str(exc):
            raise
        fall_back(numba, str(exc))
        return numba.njit(cache=STATE["cache"], **options)(func)


def compiled(*dispatchers):
    """Whether any of these numba functions was compiled here rather than loaded from numba's cache."""
    misses = [getattr(getattr(d, "stats", None), "cache_misses", None) for d in dispatchers]
    return any(bool(m) for m in misses) or not STATE["cache"]


def fall_back(numba, cause):
    """Point numba's cache at a private temp folder, or turn caching off; records why in STATE['note']."""
    folder = private_temp_folder()
    if folder is not None:
        numba.config.CACHE_DIR = folder  # read by numba's user-provided locator at each decoration
        STATE["note"] = f"numba's cache folder is not writable ({cause}); caching in {folder}"
    else:
        STATE["cache"] = False
        STATE["note"] = f"numba's cache folder is not writable ({cause}); compiling without a cache"


def private_temp_folder():
    """A writable folder for this user under the temp folder, or None."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = os.path.join(tempfile.gettempdir(), f"lowlight_gpu-numba-{uid}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
        if hasattr(os, "getuid") and st.st_uid != uid:  # someone else's folder: do not load code from it
            return None
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return None
    return folder


def note():
    """What was done about an unwritable cache ('' when numba cached as usual)."""
    return STATE["note"]
