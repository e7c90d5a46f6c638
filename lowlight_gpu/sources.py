"""Lazy, sorted scan of the input folder; relative ids, shards and output names.

The walk visits each folder's entries sorted so that the stream of relative
paths comes out in plain string order (a folder ``a`` sorts as ``a/``), which
is the order of the manifest: rows can then be written as they finish,
without a global sort and without holding the file list in memory.
"""

import hashlib
import os
from dataclasses import dataclass

from .imageio import is_image_name


@dataclass(frozen=True)
class Source:
    """One input file: its path on disk, its id (relative path with '/'), and its output name."""

    path: str
    rel: str
    out_rel: str
    error: str = ""  # set when the entry could not even be listed


def stable_hash(text, salt=""):
    """A 64-bit hash of text that is the same on every machine and Python run."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def shard_of(rel, count):
    """Which of ``count`` shards the source with this id belongs to."""
    return stable_hash(rel, "shard") % count


def output_names(names):
    """Map image file names of one folder to distinct .png names, preferring the plain stem."""
    chosen = {n: os.path.splitext(n)[0] + ".png" for n in names}
    # Two sources must never write the same file ("x.jpg" and "x.png"); compare case-insensitively so
    # the dataset also survives a copy to a case-insensitive filesystem.
    for fallback in (lambda n: n + ".png",
                     lambda n: f"{os.path.splitext(n)[0]}.{stable_hash(n, 'name'):016x}.png"):
        seen = {}
        for n in names:
            seen.setdefault(chosen[n].casefold(), []).append(n)
        clashing = [n for group in seen.values() if len(group) > 1 for n in group]
        if not clashing:
            break
        for n in clashing:
            chosen[n] = fallback(n)
    return chosen


def _sort_key(entry):
    """Sort folders as 'name/' so the depth-first walk yields ids in string order."""
    return entry.name + "/" if entry.is_dir() else entry.name


def _is_utf8(name):
    """False for a name holding undecodable bytes (os.scandir gives them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _walk(folder, rel_prefix, skip, seen):
    """Yield Sources below folder in sorted id order."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=_sort_key)
    except OSError as exc:
        yield Source(folder, rel_prefix, "", f"cannot list folder: {exc.strerror or exc}")
        return
    images = [e.name for e in entries if not e.is_dir() and is_image_name(e.name)]
    names = output_names([n for n in images if _is_utf8(rel_prefix + n)])
    for e in entries:
        if e.is_dir():
            real = os.path.realpath(e.path)
            try:
                st = os.stat(real)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if real in skip or key in seen:  # the output folder, or a symlink loop
                continue
            yield from _walk(e.path, rel_prefix + e.name + "/", skip, seen | {key})
        elif e.name in names:
            yield Source(e.path, rel_prefix + e.name, rel_prefix + names[e.name])
        elif is_image_name(e.name):  # not UTF-8: cannot be an id in JSON, so report it with its bytes escaped
            shown = os.fsencode(rel_prefix + e.name).decode("utf-8", "backslashreplace")
            yield Source(e.path, shown, "", "file name is not valid UTF-8; rename it")


def scan(root, shard=(0, 1), skip=()):
    """Yield the image Sources under root, sorted by id, that fall in shard (index, count)."""
    index, count = shard
    skip = {os.path.realpath(p) for p in skip}
    st = os.stat(root)
    for src in _walk(root, "", skip, frozenset({(st.st_dev, st.st_ino)})):
        if count == 1 or shard_of(src.rel, count) == index:
            yield src
