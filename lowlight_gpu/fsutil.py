"""File helpers every stage shares: atomic write, same-bytes checks, quiet removal, write-back and syncfs."""
from __future__ import annotations

import os
import pathlib
import sys


def allow_open_files() -> int | None:
    """Raise this process's soft limit on open files to its hard limit; returns the limit now (None: unknown).

    Merging (and resuming) N shard jobs reads their N parts side by side, and a tar merge writes N parts
    too; with thousands of jobs that passes the usual soft limit of 1024 while the hard limit allows far more.
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (OSError, ValueError):  # refused (a container's seccomp, macOS's OPEN_MAX): keep the soft limit
            pass
    return soft


NAME_MAX = 255  # bytes in one file name on the usual filesystems (ext4, XFS, btrfs, ZFS, tmpfs)


def temp_name(path: str | os.PathLike[str]) -> pathlib.Path:
    """The temporary file write_atomic() uses for path: '.{basename}.tmp' beside it.

    A name within 5 bytes of NAME_MAX (a legal 251-255 byte name) would give a temporary name that cannot
    exist; it gets '.{24 hex digits of the name's SHA-256}.tmp' instead, as deterministic as the long form.
    """
    p = pathlib.Path(path)
    if not p.name:
        raise ValueError(f"path has no file name: {path!r}")
    if len(os.fsencode(p.name)) + len("..tmp") > NAME_MAX:
        import hashlib

        return p.with_name(f".{hashlib.sha256(os.fsencode(p.name)).hexdigest()[:24]}.tmp")
    return p.with_name(f".{p.name}.tmp")


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write data to path via a temporary file and os.replace, creating parents."""
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if holds(final, data):
        # A rerun that produces the same bytes leaves the file (and its mtime) untouched.
        unlink_quietly(temp_name(final))
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
        unlink_quietly(tmp)
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


def flush_to_disk(path=None):
    """Push this machine's writes (to path's filesystem, or all) to stable storage: one call, not one fsync per file."""
    try:
        fd = os.open(path, os.O_RDONLY) if path is not None else None
    except OSError:
        fd = None
    if fd is not None:
        try:
            syncfs = _syncfs()
            if syncfs is not None and syncfs(fd) == 0:  # that filesystem only, not every disk of the node
                return
        finally:
            os.close(fd)
    if hasattr(os, "sync"):
        os.sync()


def _syncfs():
    """Linux's syncfs(2) from the C library, or None."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, ImportError):
        return None


def holds(path: pathlib.Path, data: bytes) -> bool:
    """Whether path already holds exactly data (a size check first, so a new file costs one stat)."""
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def same_bytes(a, b):
    """Whether files a and b exist and hold the same bytes (no caching, unlike filecmp)."""
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                ca, cb = fa.read(1 << 20), fb.read(1 << 20)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except OSError:
        return False


def replace_if_changed(tmp, dest):
    """os.replace(tmp, dest), unless dest already holds the same bytes: then drop tmp and keep dest as it is."""
    if same_bytes(tmp, dest):
        os.remove(tmp)
    else:
        os.replace(tmp, dest)


def unlink_quietly(path) -> None:
    """Remove path if it exists; any failure to remove it is ignored (it is only a leftover)."""
    try:
        os.remove(path)
    except OSError:
        pass


def remove_if_present(path) -> None:
    """Delete path if it is still there (another error, such as a permission, still raises)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_empty_folder(path) -> None:
    """Remove a folder if it is empty; anything else (not empty, gone) leaves it as it is."""
    try:
        os.rmdir(path)
    except OSError:
        pass
