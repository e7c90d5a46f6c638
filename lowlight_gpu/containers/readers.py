"""Read one image of a generated dataset, whatever its container: the file, the tar member, or the LMDB value.

A manifest row says where its images are (containers/__init__.py): a path, a ``shard`` and member names, or
a ``key`` and database names.  Reader.read(ref, shard, key) returns the bytes, or raises FileNotFoundError
(an OSError) when the image is not there, or DamagedDatabase when an LMDB is damaged (a truncated data.mdb,
checked when it is opened, before it could kill the process with SIGBUS).  Open tars and LMDBs are cached per
process, so a Reader can be used by DataLoader workers after a fork.
"""

import collections
import os
import tarfile
import threading

from .. import manifest, paths, storage
from ..errors import DamagedDatabase, UntrustedDataset
from .naming import check_available, container_of

INDEXED_SHARDS = 16  # member indexes kept per process (one shard's index: a few hundred bytes per member)
_SHARED = {}
_ENVS = {}        # absolute path -> read-only lmdb.Environment of this process
_ENVS_PID = None
_SHARED_LOCK = threading.Lock()


def shared_reader(root):
    """One Reader per output folder (or object-storage URL) for this process (an LMDB must not be opened twice
    in one process)."""
    root = os.fspath(root)
    root = root if storage.is_url(root) else os.path.abspath(root)
    with _SHARED_LOCK:
        reader = _SHARED.get(root)
        if reader is None:
            reader = _SHARED[root] = Reader(root)
        return reader


def release(path):
    """Close this process's read handle on the LMDB at path, so that it may open it for writing."""
    with _SHARED_LOCK:
        env = _ENVS.pop(os.path.abspath(path), None)
    if env is not None:
        env.close()


class Reader:
    """Images of the dataset under root."""

    def __init__(self, root, storage_options=None):
        self.root = os.fspath(root)
        # On object storage the rule is lexical (paths.contained): a bucket has no links to escape through.
        self._store = storage.Location(self.root, storage_options) if storage.is_url(self.root) else None
        self._root = paths.Root(self.root) if self._store is None else None  # every ref is checked before use
        self._pid = None
        self._indexes = collections.OrderedDict()
        self._lock = threading.Lock()  # the caches are shared by a tool's threads

    def for_row(self, row, ref):
        """The bytes of image ref of a manifest row."""
        return self.read(ref, row.get("shard"), row.get("key") if container_of(row) == "lmdb" else None)

    def read(self, ref, shard=None, key=None, where=paths.SOMEWHERE):
        """The bytes of a file (ref), a member of a tar shard, or the value of key in database ref.

        where names the row for the message of a path that would leave the output folder (UntrustedDataset).
        """
        self._after_fork()
        if shard is not None:
            return self._member(shard, ref, where)
        if key is not None:
            return self._value(ref, key, where)
        if self._store is not None:
            return self._store.read(paths.contained(ref, where=where))
        with open(self._root.path(ref, where=where), "rb") as f:
            return f.read()

    def describe(self, ref, shard=None, key=None):
        """A name for messages: the file, 'SHARD:MEMBER' or 'DATABASE:KEY'."""
        if shard is not None:
            return f"{shard}:{ref}"
        return f"{ref}:{key}" if key is not None else ref

    def _after_fork(self):
        """Drop the member indexes of another process (after a fork)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._indexes.clear()

    def _member(self, shard, name, where=paths.SOMEWHERE):
        """One member's bytes, found through the shard's member index."""
        index = self._index(shard, where)
        if name not in index:
            raise FileNotFoundError(f"no member '{name}' in '{shard}'")
        offset, size = index[name]
        if self._store is not None:
            data = self._store.read_range(paths.contained(shard, paths.TAR, where, "shard"), offset, size)
        else:
            with open(self._root.path(shard, paths.TAR, where, "shard"), "rb") as f:
                data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise FileNotFoundError(f"'{shard}' ends inside member '{name}'")
        return data

    def _index(self, shard, where=paths.SOMEWHERE):
        """{member name: (data offset, size)} of a shard, read from its headers (kept for the last few shards)."""
        with self._lock:
            index = self._indexes.get(shard)
            if index is not None:
                self._indexes.move_to_end(shard)
                return index
        try:
            if self._store is not None:  # the headers are read through a buffered file: ranged GETs
                rel = paths.contained(shard, paths.TAR, where, "shard")
                with self._store.fs.open(self._store.key(rel), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                    index = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
            else:
                with tarfile.open(self._root.path(shard, paths.TAR, where, "shard"), "r:") as tar:
                    index = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
        except tarfile.TarError as exc:
            raise FileNotFoundError(f"'{shard}' is not a readable tar ({exc})") from None
        with self._lock:
            self._indexes[shard] = index
            while len(self._indexes) > INDEXED_SHARDS:
                self._indexes.popitem(last=False)
        return index

    def _value(self, db, key, where=paths.SOMEWHERE):
        """The value of key in database db."""
        if self._store is not None:
            raise FileNotFoundError(f"'{db}' is an LMDB database on object storage, which is read from a local "
                                    "folder only; copy it to a local folder first")
        env = environment(self._root.path(db, paths.DATABASE, where, "database"))
        with env.begin(write=False) as txn:
            value = txn.get(key.encode("ascii"))
        if value is None:
            raise FileNotFoundError(f"no key '{key}' in '{db}'")
        return value


def environment(path):
    """This process's one read handle on the LMDB at path (LMDB allows one per process), opened on first use."""
    global _ENVS_PID
    path = os.path.abspath(path)
    with _SHARED_LOCK:
        if _ENVS_PID != os.getpid():  # handles must not cross a fork (DataLoader workers)
            _ENVS.clear()
            _ENVS_PID = os.getpid()
        env = _ENVS.get(path)
        if env is None:
            check_available("lmdb")  # one line with the install hint, not a bare ImportError
            if not os.path.isfile(os.path.join(path, "data.mdb")):
                raise FileNotFoundError(f"no LMDB database '{path}'")
            env = _ENVS[path] = open_reader(path)
        return env


# ---------------------------------------------------------------- LMDB: opening for reading, damage, committed rows

def _lmdb():
    """The lmdb module (check_available gives the install hint first where it matters)."""
    import lmdb

    return lmdb


def open_reader(path):
    """An LMDB environment for reading, opened the way BasicSR's FileClient opens one; DamagedDatabase if damaged."""
    lmdb = _lmdb()
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError) as exc:
        raise DamagedDatabase(damaged_message(path, f"{exc}".split(": ")[-1])) from None
    except lmdb.Error:
        if os.path.isfile(os.path.join(path, "data.mdb")) and os.path.getsize(os.path.join(path, "data.mdb")) == 0:
            raise DamagedDatabase(damaged_message(path, "data.mdb is empty")) from None
        raise
    reason = damage(path, env)
    if reason is not None:
        env.close()
        raise DamagedDatabase(damaged_message(path, reason))
    return env


def damage(path, env):
    """None when path's data.mdb holds every page env's meta page counts, else why not (in a few words)."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]  # both come from the meta pages, at the start
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    return None if size >= needed else f"data.mdb is {size} bytes, its pages need {needed}; truncated?"


def damaged_message(path, reason):
    """The one line that names a damaged database and the way back."""
    return (f"LMDB database '{path}' is damaged ({reason}); re-run the command that made the dataset: "
            "it rebuilds the database and redoes its pairs")


def committed(root, row, from_journal, env_of):
    """Whether a row's images are in its databases (sizes; CRCs for journal rows); env_of(db) gives a handle."""
    members = (row.get(manifest.STATE) or {}).get("members")
    if not members:
        return False
    try:
        key = row["key"].encode("ascii")
        for _, size, digest, db in members:
            folder = paths.join(root, db, paths.DATABASE, what="_state.members")
            if not os.path.isfile(os.path.join(folder, "data.mdb")):
                return False
            with env_of(db).begin(buffers=True) as txn:  # a read transaction sees only committed data
                value = txn.get(key)
                if value is None or len(value) != size:
                    return False
                if from_journal and manifest.data_digest(value) != digest:
                    return False
    except UntrustedDataset:
        raise
    except (OSError, KeyError, TypeError, ValueError, DamagedDatabase, _lmdb().Error):
        return False
    return True
