"""Lazy, sorted scan of the input folder; relative ids, shards, output names and skip counts.

The walk visits each folder's entries sorted so that the stream of relative
paths comes out in plain string order (a folder ``a`` sorts as ``a/``), which
is the order of the manifest: rows can then be written as they finish,
without a global sort and without holding the file list in memory.  The walk
is iterative (a stack of folder listings), so tree depth has no limit.

What the scan skips, and counts by reason (``ScanStats``):

* hidden entries (a name starting with '.') and files without an image extension;
* anything that is not a regular file (FIFOs, sockets, devices, broken links), before it is opened;
* folders that hold a dataset of this project (``parts/run.json``, or a ``dataset.json`` it wrote),
  and the current output folder: the project never reads its own outputs;
* symbolic links, by the ``follow_symlinks`` policy: followed (files and folders), but each real
  folder and each real file is read once.  A link whose target lies inside the input tree (outside
  hidden folders) is skipped, since the walk reaches the target itself; a target outside the tree is
  read through the first link that reaches it, in walk order; hard links to one file count once too.
  With ``follow_symlinks: false`` every link is skipped;
* HEIC/HEIF (and AVIF) files when no installed decoder reads them (``pip install 'lowlight-gpu[heif]'``).

An input on object storage (``s3://bucket/photos``) is scanned from one listing of every object below it
(``storage.listing``: paged LIST requests, no request per object), turned into folders and walked by the same
rules, so its ids, order, output names and skip counts are those of a local copy of the tree.  Links, special
files and undecodable names do not exist there.  Each Source carries the object's (size, mtime_ns) from the
listing, so nothing asks the store for it again.  Input lists (a file of paths) are input_lists.py's.
"""

import json
import os
import stat
from dataclasses import dataclass, field

from . import storage
from .errors import StorageError
from .hashing import name_tag, shard_of
from .imageio import is_image_name, needs_extra

# Skip reasons: the keys of ScanStats.counts (and of dataset.json's "skipped"), with their summary wording.
SKIP_REASONS = {
    "hidden": "hidden",
    "not_image": "not an image",
    "not_regular": "not a regular file",
    "seen_via_link": "already seen through a link",
    "link_not_followed": "links not followed",
    "output_folder": "output folders",
    "needs_heif": "HEIC/HEIF/AVIF without a decoder",
}
HEIF_EXTRA = "pip install 'lowlight-gpu[heif]'"
_NAMES_KEPT = 5  # HEIC names kept for the summary line


@dataclass(frozen=True)
class Source:
    """One input file: its path on disk, its id (relative path with '/'), and its output name."""

    path: str
    rel: str
    out_rel: str
    error: str = ""  # set when the entry could not even be listed
    stat: tuple = None  # (size, mtime_ns) when the scan already knows it (an object store's listing), else None


@dataclass
class ScanStats:
    """What a scan skipped, by reason (counted over the whole tree, whatever the shard)."""

    counts: dict = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    found: int = 0  # image files found, in every shard
    heif_names: list = field(default_factory=list)  # the first few files that need the [heif] extra
    # What the scan itself read, so a job's cost can be measured: a folder scan lists folders and sees their
    # entries (a URL scan: one listing, its objects); an input list's job reads bytes (text) or rows (Parquet).
    folders_listed: int = 0
    entries_seen: int = 0
    bytes_read: int = 0
    lines_read: int = 0
    bytes_fetched: int = 0  # a list at a URL: the bytes its ranged GETs fetched
    partial: bool = False  # found counts only this job's share (an input list's range), not the whole input

    def add(self, reason, rel=None):
        """Count one skipped entry."""
        self.counts[reason] += 1
        if reason == "needs_heif" and len(self.heif_names) < _NAMES_KEPT:
            self.heif_names.append(rel)

    def describe(self):
        """'3 hidden, 2 not an image' for the non-zero counts ('' when nothing was skipped)."""
        return ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in self.counts.items() if n)

    def heif_note(self):
        """One sentence naming the HEIC/HEIF/AVIF files that were skipped, or ''."""
        n = self.counts["needs_heif"]
        if not n:
            return ""
        more = f" and {n - len(self.heif_names)} more" if n > len(self.heif_names) else ""
        return (f"{n} HEIC/HEIF/AVIF file(s) skipped ({', '.join(self.heif_names)}{more}): "
                f"{HEIF_EXTRA} to read them")


def output_names(names):
    """Map image file names of one folder to distinct .png names, preferring the plain stem."""
    chosen = {n: os.path.splitext(n)[0] + ".png" for n in names}
    # Two sources must never write the same file ("x.jpg" and "x.png"); compare case-insensitively so
    # the dataset also survives a copy to a case-insensitive filesystem.
    for fallback in (lambda n: n + ".png",
                     lambda n: f"{os.path.splitext(n)[0]}.{name_tag(n)}.png"):
        seen = {}
        for n in names:
            seen.setdefault(chosen[n].casefold(), []).append(n)
        clashing = [n for group in seen.values() if len(group) > 1 for n in group]
        if not clashing:
            break
        for n in clashing:
            chosen[n] = fallback(n)
    return chosen


def _is_utf8(name):
    """False for a name holding undecodable bytes (os.scandir gives them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def holds_dataset(folder, names):
    """Whether folder (whose entry names are given) holds a dataset this project wrote."""
    if "parts" in names and os.path.isfile(os.path.join(folder, "parts", "run.json")):
        return True
    if "dataset.json" not in names:
        return False
    try:  # another tool's dataset.json is an ordinary file: only ours marks an output
        with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as f:
            return json.load(f).get("name") == "lowlight_gpu dataset"
    except (OSError, ValueError, AttributeError):
        return False


class _Walk:
    """State of one scan: the policy, the folders and files already read, the counts."""

    def __init__(self, root, skip, follow_symlinks, stats):
        self.real_root = os.path.realpath(root)
        self.skip = set()  # (dev, ino) of the folders never to read (the current output); no realpath per folder
        for p in skip:
            try:
                st = os.stat(p)
                self.skip.add((st.st_dev, st.st_ino))
            except OSError:  # not created yet
                pass
        self.follow = follow_symlinks
        self.stats = stats
        st = os.stat(root)
        self.seen_dirs = {(st.st_dev, st.st_ino)}
        self.seen_files = set()  # only files that could be reached twice: links, hard links, below linked folders

    def reached_directly(self, real):
        """Whether the walk reaches real (a resolved path) without links: inside the root, no hidden part."""
        try:
            rel = os.path.relpath(real, self.real_root)
        except ValueError:  # another drive (Windows)
            return False
        parts = rel.split(os.sep)
        return rel != os.curdir and parts[0] != os.pardir and not any(p.startswith(".") for p in parts)

    def first_time(self, keys, st):
        """Add st's (dev, ino) to keys; False if it was there already."""
        key = (st.st_dev, st.st_ino)
        if key in keys:
            return False
        keys.add(key)
        return True

    def classify(self, entry, linked):
        """('dir' | 'file', below_link, (dev, ino)) for an entry to keep, or None after counting why it is skipped."""
        try:
            if entry.is_symlink():
                return self._classify_link(entry)
            if entry.is_dir(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                if self.first_time(self.seen_dirs, st):
                    return "dir", linked, (st.st_dev, st.st_ino)
                self.stats.add("seen_via_link")  # a folder mounted twice (bind mounts)
                return None
            if not entry.is_file(follow_symlinks=False):
                self.stats.add("not_regular")
                return None
            if not linked and entry.stat(follow_symlinks=False).st_nlink < 2:
                return "file", linked, None  # the common case: one name, reached once; nothing to remember
            if self.first_time(self.seen_files, entry.stat(follow_symlinks=False)):
                return "file", linked, None
            self.stats.add("seen_via_link")
        except OSError:
            self.stats.add("not_regular")
        return None

    def _classify_link(self, entry):
        """The follow_symlinks policy for one link."""
        if not self.follow:
            self.stats.add("link_not_followed")
            return None
        try:
            st = os.stat(entry.path)
        except OSError:  # a broken link, or a loop of links
            self.stats.add("not_regular")
            return None
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else None
        if kind is None:
            self.stats.add("not_regular")
            return None
        real = os.path.realpath(entry.path)
        if self.reached_directly(real) and (kind == "dir" or is_image_name(os.path.basename(real))):
            self.stats.add("seen_via_link")  # the walk reads the target under its own name
            return None
        if self.first_time(self.seen_dirs if kind == "dir" else self.seen_files, st):
            return kind, True, (st.st_dev, st.st_ino)
        self.stats.add("seen_via_link")
        return None


def _listing(walk, folder, rel_prefix, linked, key=None, is_root=False):
    """Yield, in id order, the Sources of one folder and (path, rel_prefix, linked, key) for each sub-folder."""
    if key in walk.skip:
        walk.stats.add("output_folder")  # the current output
        return
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as exc:
        yield Source(folder, rel_prefix, "", f"cannot list folder: {exc.strerror or exc}")
        return
    walk.stats.folders_listed += 1
    walk.stats.entries_seen += len(entries)
    if not is_root and holds_dataset(folder, {e.name for e in entries}):
        walk.stats.add("output_folder")
        return
    kept = []
    for e in sorted(entries, key=lambda e: e.name):  # in name order, so the first of two links to a file wins

        if e.name.startswith("."):
            walk.stats.add("hidden")
            continue
        if not e.is_dir() and not is_image_name(e.name):  # cheap name test before any stat
            walk.stats.add("needs_heif" if needs_extra(e.name) else "not_image", rel_prefix + e.name)
            continue
        kind = walk.classify(e, linked)
        if kind is not None:
            kept.append((e.name + "/" if kind[0] == "dir" else e.name, e, kind))
    kept.sort(key=lambda k: k[0])
    files = [e.name for _, e, (kind, _, _) in kept if kind == "file"]
    names = output_names([n for n in files if _is_utf8(rel_prefix + n)])
    for _, e, (kind, below_link, key) in kept:
        if kind == "dir":
            yield e.path, rel_prefix + e.name + "/", below_link, key
        elif e.name in names:
            yield Source(e.path, rel_prefix + e.name, rel_prefix + names[e.name])
        else:  # not UTF-8: cannot be an id in JSON, so report it with its bytes escaped
            shown = os.fsencode(rel_prefix + e.name).decode("utf-8", "backslashreplace")
            yield Source(e.path, shown, "", "file name is not valid UTF-8; rename it")


def _walk(root, skip, follow_symlinks, stats):
    """Yield every Source below root in sorted id order, depth-first without recursion."""
    walk = _Walk(root, skip, follow_symlinks, stats)
    # The root: never skipped, even if it holds a dataset.
    return _depth_first(_listing(walk, root, "", False, is_root=True), lambda item: _listing(walk, *item))


def _depth_first(first, expand):
    """Yield the Sources of a folder listing (first) and, in place, of each sub-folder item it yields
    (expand(item) lists it): depth-first with a stack of listings, not recursion, so depth has no limit."""
    stack = [first]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Source):
            yield item
        else:
            stack.append(expand(item))


def scan(root, shard=(0, 1), skip=(), follow_symlinks=True, stats=None, options=None):
    """Yield the image Sources under root (a folder or a folder URL), sorted by id, that fall in shard (index, count).

    stats, a ScanStats, receives the counts of skipped entries over the whole tree; options are the
    storage_options of a URL root.
    """
    index, count = shard
    stats = stats if stats is not None else ScanStats()
    walked = (_walk_url(root, skip, stats, options) if storage.is_url(root)
              else _walk(root, skip, follow_symlinks, stats))
    for src in walked:
        stats.found += 1
        if count == 1 or shard_of(src.rel, count) == index:
            yield src


class _Folder:
    """One folder of an object listing: its files {name: (size, mtime_ns)} and sub-folders {name: _Folder}."""

    __slots__ = ("files", "dirs")

    def __init__(self):
        self.files = {}
        self.dirs = {}


def folder_tree(listing):
    """The _Folder tree of a storage.listing [(rel, size, mtime_ns)] (keys ending in '/' are folder markers)."""
    root = _Folder()
    for rel, size, mtime in listing:
        parts = rel.split("/")
        node = root
        for part in parts[:-1]:
            if not part:  # 'a//b': no folder of a local tree has an empty name
                break
            node = node.dirs.setdefault(part, _Folder())
        else:
            if parts[-1]:
                node.files[parts[-1]] = (size, mtime)
    return root


def _url_prefixes(root, skip):
    """The ids ('out/') of the folders in skip (URLs) that lie below the URL root."""
    base = storage.strip(root) + "/"
    return {storage.strip(p)[len(base):] + "/" for p in skip
            if storage.is_url(p) and storage.scheme(p) == storage.scheme(root) and storage.strip(p).startswith(base)}


def _holds_dataset_url(root, folder, rel_prefix, options):
    """holds_dataset for a folder of an object listing (one read, of a dataset.json, only where there is one)."""
    parts = folder.dirs.get("parts")
    if parts is not None and "run.json" in parts.files:
        return True
    if "dataset.json" not in folder.files:
        return False
    try:
        body = json.loads(storage.read_url(storage.join(root, rel_prefix + "dataset.json"), options))
        return body.get("name") == "lowlight_gpu dataset"
    except (OSError, ValueError, AttributeError):
        return False


def _url_folder(root, folder, rel_prefix, skip, stats, options, is_root=False):
    """_listing's rules for one folder of an object listing: yields Sources and (folder, rel_prefix) in id order."""
    if rel_prefix in skip:
        stats.add("output_folder")
        return
    stats.entries_seen += len(folder.files) + len(folder.dirs)
    if not is_root and _holds_dataset_url(root, folder, rel_prefix, options):
        stats.add("output_folder")
        return
    kept = []
    for name in sorted({*folder.files, *folder.dirs}):  # a key that is also a prefix: the folder
        if name.startswith("."):
            stats.add("hidden")
        elif name in folder.dirs:
            kept.append((name + "/", name, True))
        elif not is_image_name(name):
            stats.add("needs_heif" if needs_extra(name) else "not_image", rel_prefix + name)
        else:
            kept.append((name, name, False))
    kept.sort()
    names = output_names([name for _, name, is_dir in kept if not is_dir])
    for _, name, is_dir in kept:
        if is_dir:
            yield folder.dirs[name], rel_prefix + name + "/"
        else:
            rel = rel_prefix + name
            yield Source(storage.join(root, rel), rel, rel_prefix + names[name], stat=folder.files[name])


def _walk_url(root, skip, stats, options):
    """Yield every Source below the folder URL root in sorted id order, from one listing of its objects."""
    listing = storage.listing(root, options)
    stats.folders_listed += 1  # one listing (paged by the store: a request per 1000 objects)
    tree = folder_tree(listing)
    skip_ids = _url_prefixes(root, skip)
    yield from _depth_first(_url_folder(root, tree, "", skip_ids, stats, options, is_root=True),
                            lambda item: _url_folder(root, *item, skip_ids, stats, options))


def source_stat(src, options=None):
    """[size, mtime_ns] of a source (the manifest's _state.source): from its scan when known, else from the store
    (a URL) or the filesystem; OSError when it cannot be read."""
    if src.stat is not None:
        return [src.stat[0], src.stat[1]]
    if storage.is_url(src.path):
        try:
            return list(storage.stat_url(src.path, options))
        except (FileNotFoundError, PermissionError, StorageError):
            raise
        except OSError as exc:  # the store, not this object: the run stops (exit 4) as for a failed read
            raise StorageError(exc.errno, f"cannot read: {exc.strerror or exc}", src.path) from None
    st = os.stat(src.path)
    return [st.st_size, st.st_mtime_ns]
