"""BasicSR LMDBs: one database per image folder of the files layout, key = the pair's key, value = PNG bytes.

``OUTPUT/high.lmdb/`` holds ``data.mdb``, ``lock.mdb`` and ``meta_info.txt`` (lines ``KEY.png (h,w,c) level``,
written by metainfo.py after the merge), exactly as BasicSR's ``create_lmdb_for_*`` scripts make them, so
``io_backend: {type: lmdb}`` reads them as they are.

A whole run writes the databases directly from its one writer (LmdbStore): puts go into one write
transaction per database, committed every COMMIT_BYTES of images, and a pair's row reaches the journal
only after its transaction committed, so a SIGKILL loses at most uncommitted pairs, which the rerun
redoes.  A ``--shard I/N`` job cannot share the databases (one writer per LMDB, and none on a network
filesystem), so it stages its samples in tar segments (tars.TarStaging) and ``--merge`` puts them in.
A key/value set does not depend on insertion order, so the databases of a whole run and of shards plus
merge hold the same keys and values.
"""

import contextlib
import errno
import os

from .. import manifest, paths
from ..errors import UntrustedDataset
from ..fsutil import remove_if_present as _remove
from . import PAYLOAD, readers, tars

MAP_SIZE = 1 << 40        # address space, not disk: data.mdb grows with what is written (sparse on Linux)
COMMIT_BYTES = 64 << 20   # bounds a write transaction's dirty pages in memory
COMMIT_PAIRS = 1000


def _lmdb():
    """The lmdb module (the CLI checks the extra before anything is written)."""
    import lmdb

    return lmdb


def open_writer(path):
    """An LMDB environment for writing at path (a folder): one fdatasync per commit, integrity kept on a crash."""
    os.makedirs(path, exist_ok=True)
    readers.release(path)  # a tool of this process may have it open for reading (LMDB allows one handle)
    return _lmdb().open(path, map_size=MAP_SIZE, subdir=True, meminit=False, metasync=False, sync=True)


def open_reader(path):
    """An LMDB environment for reading, opened the way BasicSR's FileClient opens one."""
    return _lmdb().open(path, readonly=True, lock=False, readahead=False, meminit=False)


@contextlib.contextmanager
def storage_errors(path):
    """Raise an LMDB failure as the OSError a full or failing disk gives (the CLI stops with one line, exit 4)."""
    lmdb = _lmdb()
    try:
        yield
    except (lmdb.MapFullError, lmdb.DiskError) as exc:
        raise OSError(errno.ENOSPC, f"LMDB: {exc}", path) from None
    except lmdb.Error as exc:
        raise OSError(errno.EIO, f"LMDB: {exc}", path) from None


class LmdbStore:
    """A whole run's writer: every pair's images into the final databases, rows released once committed."""

    def __init__(self, root):
        self.root = root
        self.envs = {}
        self.txns = {}
        self.pending = []      # rows in manifest order, waiting for the commit of their (or earlier) bytes
        self.dirty_bytes = 0
        self.dirty_pairs = 0

    def _env(self, db):
        """The open environment of database db (a path relative to the output)."""
        env = self.envs.get(db)
        if env is None:
            env = self.envs[db] = open_writer(paths.join(self.root, db, paths.DATABASE, what="a database"))
        return env

    def check(self, row, from_journal):
        """Whether a prior row's images are committed (sizes; CRCs for journal rows) or still staged intact."""
        state = row.get(manifest.STATE) or {}
        if state.get("at"):  # staged by an earlier shard job: put() copies it in
            return tars.sample_intact(self.root, row, from_journal)
        return committed(self.root, row, from_journal, self._env)

    def put(self, kind, row):
        """Queue a pair: its bytes into the write transactions; returns the rows whose bytes are committed."""
        state = row[manifest.STATE]
        if kind == "skip" and state.get("at"):
            members = tars.read_members(self.root, row)
            payload = [(name, data, db) for (name, data), (_, _, _, db) in zip(members, state["members"])]
        elif kind == "skip":
            payload = None
        else:
            payload = row.pop(PAYLOAD)
        if payload is not None:
            key = row["key"].encode("ascii")
            for name, data, db in payload:
                with storage_errors(os.path.join(self.root, db)):
                    txn = self.txns.get(db)
                    if txn is None:
                        txn = self.txns[db] = self._env(db).begin(write=True)
                    txn.put(key, data)
                self.dirty_bytes += len(data)
            state["members"] = [[name, len(data), manifest.data_digest(data), db] for name, data, db in payload]
            state["at"] = None
            self.dirty_pairs += 1
        self.pending.append(row)
        if not self.txns or self.dirty_bytes >= COMMIT_BYTES or self.dirty_pairs >= COMMIT_PAIRS:
            return self._commit()
        return []

    def _commit(self):
        """Commit every open write transaction; returns the rows now safe to journal."""
        for db, txn in self.txns.items():
            with storage_errors(os.path.join(self.root, db)):
                txn.commit()
        self.txns.clear()
        self.dirty_bytes = self.dirty_pairs = 0
        rows, self.pending = self.pending, []
        return rows

    def finish(self):
        """Commit what is left and close the databases; returns the last rows."""
        rows = self._commit()
        for env in self.envs.values():
            env.close()
        self.envs.clear()
        return rows

    def cleanup(self):
        """Nothing is staged by a whole run."""

    def abandon(self):
        """Drop uncommitted work (its rows were never journaled) and close the databases."""
        for txn in self.txns.values():
            txn.abort()
        self.txns.clear()
        for env in self.envs.values():
            env.close()
        self.envs.clear()


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
    except (OSError, KeyError, TypeError, ValueError, _lmdb().Error):
        return False
    return True


def assemble(root, part_paths):
    """--merge of LMDB shard jobs: put every staged sample into the databases, then point the parts at them."""
    store = LmdbStore(root)
    temps = [os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".tmp") for p in part_paths]
    outs = [open(t, "w", encoding="utf-8") for t in temps]
    databases = set()
    try:
        for row, i in tars.merged_rows(part_paths):
            state = row.get(manifest.STATE) or {}
            if state.get("at"):
                try:
                    store.put("skip", row)
                except OSError as exc:
                    raise manifest.MergeError(f"cannot merge: the staged images of '{row.get('source')}' "
                                              f"({part_paths[i]}) cannot be read ({exc}); run that shard again"
                                              ) from None
            databases.update(m[3] for m in state.get("members", []))
            outs[i].write(manifest.dumps(row) + "\n")
        for f in outs:
            f.close()
        store.finish()  # committed before any part says so
    except BaseException:
        store.abandon()
        for f, t in zip(outs, temps):
            f.close()
            _remove(t)
        raise
    for tmp, path in zip(temps, part_paths):
        manifest.replace_if_changed(tmp, path)
    for part in part_paths:  # every sample is in the databases now
        tag = os.path.basename(part)[: -len(".jsonl")]
        for path in tars.glob.glob(os.path.join(root, manifest.PARTS, tars.SEGMENT_GLOB.format(tag=tag))):
            _remove(path)
    return {"databases": sorted(databases)}
