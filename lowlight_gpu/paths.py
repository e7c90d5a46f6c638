"""Containment: a path read back from a file inside an output folder stays inside that folder, or is refused.

Manifest rows, part journals (their private ``_state``), errors files and container places name files by paths
relative to the output root.  Datasets travel (copied, downloaded, shared), so those paths are data from
whoever wrote the folder last, and a crafted one must never make a run read, write or delete a file outside
it.  The rule, in two halves:

* lexical (``problem``, ``check_row``): a path is a string, relative, with no ``..`` (also between
  backslashes), no empty or ``.`` component and no NUL byte, and names a file of the layout for its role:
  an image or raw mosaic (``.png`` / ``.npy``, not under ``parts/`` or ``shards/``, no hidden component), a tar
  (``parts/<tag>.seg-K.tar``, a Dask worker's ``parts/<tag>.seg-K-wHEX.tar``, or ``shards/NAME-NNNNNN.tar``)
  or an LMDB folder (``NAME.lmdb``);
* on disk (``Root.path``): every folder on the way resolves inside the resolved root (no escape through a
  symbolic link), and what the path names, when it exists, is a regular file (a folder for an LMDB), not a
  link.

An offending path raises UntrustedDataset (a ValueError; exit 2 at the command line) naming the file and row.
"""

import os
import re
import stat

from .errors import UntrustedDataset

IMAGE, TAR, DATABASE, SOURCE, MEMBER = "image", "tar", "database", "source", "member"
IMAGE_EXTENSIONS = (".png", ".npy")
PRIVATE_FOLDERS = ("parts", "shards")  # the tool's own files: never an image, never removed as one
_TAR_RE = re.compile(r"parts/shard-\d+-of-\d+\.seg-\d+(?:-w[0-9a-f]+)?\.tar|shards/[A-Za-z0-9_-]+-\d{6}\.tar")
SOMEWHERE = "a file of the output folder"  # where a refused path came from, when the caller cannot say
_SPLIT_RE = re.compile(r"[A-Za-z0-9_-]+")
# The usual honest path in one match (components that do not start with a dot; no backslash, no NUL):
# a million rows are checked in seconds.  Anything else takes the slower rule below, which decides.
_PLAIN = r"[^./\\\0][^/\\\0]*(?:/[^./\\\0][^/\\\0]*)*"
_FAST = {IMAGE: re.compile(rf"(?!(?:parts|shards)/){_PLAIN}\.(?:png|npy)"), DATABASE: re.compile(
    rf"(?!(?:parts|shards)/){_PLAIN}\.lmdb"), SOURCE: re.compile(_PLAIN), MEMBER: re.compile(_PLAIN)}


def show(value, limit=80):
    """A value for a one-line message: repr (escapes NUL and newlines), cut to limit characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def problem(rel, kind=IMAGE):
    """Why rel cannot be a path of this kind relative to an output root, or None: the lexical half of the rule."""
    fast = _FAST.get(kind)
    if fast is not None and isinstance(rel, str) and fast.fullmatch(rel):
        return None
    if not isinstance(rel, str):
        return f"is a {type(rel).__name__}, not a path"
    if not rel:
        return "is an empty path"
    if "\0" in rel:
        return "holds a NUL byte"
    if rel.startswith(("/", "\\")) or os.path.isabs(rel):
        return "is absolute"
    # A backslash is an ordinary character here, but a separator elsewhere: '..\\x' is refused everywhere.
    if ".." in rel.replace("\\", "/").split("/"):
        return "climbs out of the output folder with '..'"
    if kind == MEMBER:  # a tar member name or LMDB key: looked up, never opened as a path
        return None
    parts = rel.split("/")
    if any(p in ("", ".") for p in parts):
        return "is not a plain relative path (an empty or '.' component)"
    if kind == SOURCE:
        return None
    if kind == TAR:
        return None if _TAR_RE.fullmatch(rel) else "is not a tar of the layout"
    endings = (".lmdb",) if kind == DATABASE else IMAGE_EXTENSIONS
    if parts[0] in PRIVATE_FOLDERS or any(p.startswith(".") for p in parts) or not rel.endswith(endings):
        return f"is not {'an LMDB' if kind == DATABASE else 'an image'} of the layout"
    return None


def refusal(where, what, value, reason):
    """The one-line message of a refused path: where (file and row), what (the field), its value, why."""
    return (f"untrusted dataset: {where}: {what} {show(value)} {reason}; refused, nothing is read, written or "
            "deleted through it (fix or delete that row, or generate into a new output folder)")


def contained(rel, kind=IMAGE, where=SOMEWHERE, what="a path"):
    """rel itself when it passes the lexical rule, else UntrustedDataset."""
    reason = problem(rel, kind)
    if reason:
        raise UntrustedDataset(refusal(where, what, rel, reason))
    return rel


def join(root, rel, kind=IMAGE, where=SOMEWHERE, what="a path"):
    """root/rel once rel passes the lexical rule (no file-system access), else UntrustedDataset."""
    return os.path.join(root, contained(rel, kind, where, what))


def under(path, folder):
    """Whether path is folder or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Root:
    """An output folder, for turning rows' relative paths into file-system paths that stay inside it.

    The folders found to resolve inside the root are remembered, so a million rows cost one realpath per
    folder, plus one lstat per file.  Make one per run or reader: a folder swapped for a link later is not seen.
    """

    def __init__(self, root):
        self.root = os.fspath(root)
        self.real = os.path.realpath(self.root)
        self._inside = set()  # folders (relative) that resolve inside the root
        self._seen = set()  # (rel, kind) of tars and databases that passed

    def __getstate__(self):
        """Pickled (DataLoader workers, worker processes) without what it remembers."""
        return dict(self.__dict__, _inside=set(), _seen=set())

    def path(self, rel, kind=IMAGE, where=SOMEWHERE, what="a path"):
        """root/rel after both halves of the rule; UntrustedDataset (naming where and what) otherwise.

        A path that does not exist passes (the caller finds it missing); one that exists must be a regular
        file (a folder for an LMDB, whose data.mdb and lock.mdb must be regular files), never a link.
        """
        reason = problem(rel, kind) or self._escape(rel, kind)
        if reason:
            raise UntrustedDataset(refusal(where, what, rel, reason))
        return os.path.join(self.root, rel)

    def check_folder(self, rel):
        """UntrustedDataset unless folder rel (when it exists) resolves inside the root: parts/ and shards/, whose
        files a run lists and deletes by pattern."""
        real = os.path.realpath(os.path.join(self.root, rel))
        if not under(real, self.real):
            raise UntrustedDataset(refusal(f"'{self.root}'", "the folder", rel,
                                           f"leaves the output folder through a symbolic link (to {show(real)})"))

    def _escape(self, rel, kind):
        """Why rel, lexically fine, leaves the root on disk or names something other than a file; or None."""
        if (rel, kind) in self._seen:  # a tar or database named by thousands of rows is looked at once
            return None
        reason = self._look(rel, kind)
        if reason is None and kind != IMAGE:
            self._seen.add((rel, kind))
        return reason

    def _look(self, rel, kind):
        """_escape without the memory of tars and databases already seen."""
        folder = os.path.dirname(rel)
        if folder not in self._inside:
            real = os.path.realpath(os.path.join(self.root, folder))
            if not under(real, self.real):
                return f"leaves the output folder through a symbolic link (to {show(real)})"
            self._inside.add(folder)
        full = os.path.join(self.root, rel)
        want = stat.S_ISDIR if kind == DATABASE else stat.S_ISREG
        names = [full] + ([os.path.join(full, n) for n in ("data.mdb", "lock.mdb")] if kind == DATABASE else [])
        for i, name in enumerate(names):
            try:
                mode = os.lstat(name).st_mode
            except OSError:  # not there (or not reachable): the caller's usual 'missing'
                continue
            if stat.S_ISLNK(mode):
                return "is a symbolic link, not a file of the layout"
            if not (want(mode) if i == 0 else stat.S_ISREG(mode)):
                return f"is not a {'folder' if want is stat.S_ISDIR and i == 0 else 'regular file'}"
        return None


def remove_regular(path):
    """Delete path if, looked at without following links, it is a regular file; returns whether it did."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.remove(path)
    except OSError:  # gone already
        return False
    return True


# ---------------------------------------------------------------- rows


def _location(file, n, row):
    """'FILE' row N (source S) for messages."""
    source = row.get("source") if isinstance(row, dict) else None
    return f"'{file}' row {n}" + (f" (source {show(source)})" if isinstance(source, str) else "")


def container_of(row, public):
    """Which container a row lives in: webdataset, lmdb or files (containers.container_of, for part rows too).

    A part row of a job that staged tars has a key and no shard yet, like an LMDB row: its members say.
    """
    if "shard" in row:
        return "webdataset"
    if "key" not in row:
        return "files"
    members = (row.get("_state") or {}).get("members") if isinstance(row.get("_state"), dict) else None
    staged = isinstance(members, list) and not any(isinstance(m, list) and len(m) == 4 and m[3] for m in members)
    return "webdataset" if staged and not public else "lmdb"


def row_paths(row, public=False):
    """[(field, value, kind)] of every place a manifest or part row names.

    A value of the wrong shape (a number, a dict where a list belongs) comes back with kind None: refused.
    """
    container = container_of(row, public)
    ref = {"files": IMAGE, "webdataset": MEMBER, "lmdb": DATABASE}[container]
    out = [("source", row.get("source"), SOURCE)]
    for name in ("high", "low"):
        out.append((name, row.get(name), ref))
    for name in ("clean_low", "raw_clean", "raw_low"):
        if name in row:
            out.append((name, row[name], ref))
    for name in ("steps", "clean_steps", "raw_steps"):
        if name in row:
            out += _list_paths(name, row[name], ref)
    if "shard" in row:
        out.append(("shard", row["shard"], TAR))
    if container != "files":
        out.append(("key", row["key"], MEMBER))
    if "split" in row and row["split"] is not None:
        value = row["split"]
        out.append(("split", value, SOURCE if isinstance(value, str) and _SPLIT_RE.fullmatch(value) else None))
    state = row.get("_state")
    if state is not None:
        out += _state_paths(state)
    return out


def _list_paths(name, value, kind):
    """The paths of a steps-like list [{"path": ...}, ...]."""
    if not isinstance(value, list):
        return [(name, value, None)]
    return [(f"{name}[{i}].path", s.get("path") if isinstance(s, dict) else s, kind) for i, s in enumerate(value)]


def _state_paths(state):
    """The paths of a part row's private _state: files, the tar place 'at', and the members' databases."""
    if not isinstance(state, dict):
        return [("_state", state, None)]
    out = []
    files = state.get("files", {})
    if not isinstance(files, dict):
        out.append(("_state.files", files, None))
    else:
        for rel, record in files.items():
            out.append(("_state.files", rel, IMAGE))
            if not (isinstance(record, list) and len(record) == 2 and _is_count(record[0])):
                out.append((f"_state.files[{show(rel)}]", record, None))
    at = state.get("at")
    if at is not None:
        if not (isinstance(at, list) and len(at) == 2 and _is_count(at[1])):
            out.append(("_state.at", at, None))
        else:
            out.append(("_state.at", at[0], TAR))
    members = state.get("members")
    if members is not None:
        if not isinstance(members, list):
            out.append(("_state.members", members, None))
        for i, m in enumerate(members if isinstance(members, list) else ()):
            if not (isinstance(m, list) and len(m) == 4 and _is_count(m[1])):
                out.append((f"_state.members[{i}]", m, None))
                continue
            out.append((f"_state.members[{i}]", m[0], MEMBER))
            if m[3] is not None:
                out.append((f"_state.members[{i}]", m[3], DATABASE))
    return out


def _is_count(value):
    """Whether value is a size or an offset: an int >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_row(row, file, n, root=None, public=False, images_on_disk=True):
    """UntrustedDataset naming file and row n unless every place the row names passes the rule.

    With root (a Root) the places are also checked on disk (the images too unless images_on_disk is false:
    a merge opens only the tars and databases); public: a manifest.jsonl row (a key without a shard: LMDB).
    """
    if not isinstance(row, dict):
        raise UntrustedDataset(refusal(f"'{file}' row {n}", "the row", row, "is not a JSON object"))
    on_disk = ((IMAGE, TAR, DATABASE) if images_on_disk else (TAR, DATABASE)) if root is not None else ()
    looked = set()  # a part row names its images twice (high and _state.files): one look each
    for field, value, kind in row_paths(row, public):
        if kind is None:
            reason = "is not what this field holds"
        else:
            reason = problem(value, kind)
            if reason is None and kind in on_disk and (value, kind) not in looked:
                looked.add((value, kind))
                reason = root._escape(value, kind)
        if reason:
            raise UntrustedDataset(refusal(_location(file, n, row), field, value, reason))


def check_error_row(row, file, n):
    """UntrustedDataset unless an errors row names its source by a plain relative path."""
    if not isinstance(row, dict):
        raise UntrustedDataset(refusal(f"'{file}' row {n}", "the row", row, "is not a JSON object"))
    reason = problem(row.get("source"), SOURCE)
    if reason:
        raise UntrustedDataset(refusal(_location(file, n, row), "source", row.get("source"), reason))
