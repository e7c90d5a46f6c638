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

Damage.  A data.mdb shorter than its meta page's last page (a truncated copy) would kill a reader with
SIGBUS on its first access past the end, so every handle is checked before anything reads through it
(damage): a reader raises DamagedDatabase, one line naming the database; a whole run rebuilds the database
from scratch (its pairs fail the resume check and are redone); --merge rebuilds it only when every pair it
held is staged again (the shard jobs were re-run), and otherwise names the shard to run again.

Interrupts.  put() and the commit run with SIGINT/SIGTERM deferred (interrupts.deferred), so every open
transaction holds whole pairs: an interrupted run commits them (salvage) and journals their rows.
"""

import contextlib
import errno
import glob
import os

from .. import interrupts, manifest, paths
from ..errors import DamagedDatabase, MergeError, UntrustedDataset
from ..fsutil import remove_if_present as _remove
from ..fsutil import replace_if_changed
from . import readers, tars
from .naming import PAYLOAD
from .readers import committed, open_reader

MAP_SIZE = 1 << 40        # address space, not disk: data.mdb grows with what is written (sparse on Linux)
COMMIT_BYTES = 64 << 20   # bounds a write transaction's dirty pages in memory
COMMIT_PAIRS = 1000
LOW_SPACE = 2 * COMMIT_BYTES  # free bytes under which a failed LMDB write is taken for a full disk (see storage_errors)


def _lmdb():
    """The lmdb module (the CLI checks the extra before anything is written)."""
    import lmdb

    return lmdb


def open_writer(path):
    """An LMDB environment for writing at path (a folder): one fdatasync per commit, integrity kept on a crash."""
    os.makedirs(path, exist_ok=True)
    readers.release(path)  # a tool of this process may have it open for reading (LMDB allows one handle)
    return _lmdb().open(path, map_size=MAP_SIZE, subdir=True, meminit=False, metasync=False, sync=True)


@contextlib.contextmanager
def storage_errors(path):
    """Raise an LMDB failure as the OSError a full or failing disk gives (the CLI stops with one line, exit 4)."""
    lmdb = _lmdb()
    try:
        yield
    except (lmdb.MapFullError, lmdb.DiskError) as exc:
        raise OSError(errno.ENOSPC, f"LMDB: {exc}", path) from None
    except lmdb.Error as exc:
        # LMDB turns a short write -- what a full disk gives -- into EIO; the free space tells them apart.
        code = errno.ENOSPC if disk_nearly_full(path) else errno.EIO
        raise OSError(code, f"LMDB: {exc}", path) from None


def disk_nearly_full(path):
    """Whether the filesystem of path (or of its nearest existing parent) has under LOW_SPACE bytes free."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE


class LmdbStore:
    """A whole run's writer: every pair's images into the final databases, rows released once committed."""

    def __init__(self, root):
        self.root = root
        self.envs = {}
        self.txns = {}
        self.pending = []      # rows in manifest order, waiting for the commit of their (or earlier) bytes
        self.dirty_bytes = 0
        self.dirty_pairs = 0
        self.rebuilt = []      # databases found damaged and started again from empty

    def _env(self, db):
        """The open environment of database db (a path relative to the output); a damaged one starts empty."""
        env = self.envs.get(db)
        if env is None:
            env = self.envs[db] = open_checked(paths.join(self.root, db, paths.DATABASE, what="a database"), self.rebuilt,
                                               db)
        return env

    def check(self, row, from_journal):
        """Whether a prior row's images are committed (sizes; CRCs for journal rows) or still staged intact."""
        state = row.get(manifest.STATE) or {}
        if state.get("at"):  # staged by an earlier shard job: put() copies it in
            return tars.sample_intact(self.root, row, from_journal)
        return committed(self.root, row, from_journal, self._env)

    def put(self, row, reused=False):
        """Queue a pair (reused: an earlier one, whose bytes are committed or staged): its bytes into the write
        transactions; returns the rows whose bytes are committed."""
        state = row[manifest.STATE]
        if reused and state.get("at"):
            members = tars.read_members(self.root, row)
            payload = [(name, data, db) for (name, data), (_, _, _, db) in zip(members, state["members"])]
        elif reused:
            payload = None
        else:
            payload = row.pop(PAYLOAD)
        with interrupts.deferred():  # a pair goes into the transactions whole, with its row
            if payload is not None:
                self._put_pair(row, payload)
            self.pending.append(row)
            if not self.txns or self.dirty_bytes >= COMMIT_BYTES or self.dirty_pairs >= COMMIT_PAIRS:
                return self._commit()
        return []

    def _put_pair(self, row, payload):
        """Put one pair's images into the write transactions and record them in its state."""
        key = row["key"].encode("ascii")
        for name, data, db in payload:
            with storage_errors(os.path.join(self.root, db)):
                txn = self.txns.get(db)
                if txn is None:
                    txn = self.txns[db] = self._env(db).begin(write=True)
                txn.put(key, data)
            self.dirty_bytes += len(data)
        state = row[manifest.STATE]
        state["members"] = [[name, len(data), manifest.data_digest(data), db] for name, data, db in payload]
        state["at"] = None
        self.dirty_pairs += 1

    def _commit(self):
        """Commit every open write transaction; returns the rows now safe to journal."""
        with interrupts.deferred():  # all or none of the transactions, then the rows
            for db, txn in self.txns.items():
                with storage_errors(os.path.join(self.root, db)):
                    txn.commit()
            self.txns.clear()
            self.dirty_bytes = self.dirty_pairs = 0
            rows, self.pending = self.pending, []
        return rows

    def salvage(self):
        """After an interrupt: commit the whole pairs put so far; returns their rows (the run journals them)."""
        return self._commit()

    def finish(self):
        """Commit what is left and close the databases; returns the last rows."""
        rows = self._commit()
        for env in self.envs.values():
            env.close()
        self.envs.clear()
        return rows

    def publish(self, part_path):
        """The databases are final (a whole run merges its own part)."""

    def cleanup(self):
        """Nothing is staged by a whole run."""

    def databases(self):
        """Every database under the output (paths relative to it)."""
        found = glob.glob(os.path.join(glob.escape(self.root), "**", "*.lmdb", "data.mdb"), recursive=True)
        rels = [os.path.relpath(os.path.dirname(p), self.root).replace(os.sep, "/") for p in sorted(found)]
        return [db for db in rels if not db.startswith(manifest.PARTS + "/")]

    def abandon(self):
        """Drop uncommitted work (its rows were never journaled) and close the databases."""
        for txn in self.txns.values():
            txn.abort()
        self.txns.clear()
        for env in self.envs.values():
            env.close()
        self.envs.clear()


def is_damaged(path):
    """Whether the database at path is damaged (DamagedDatabase when read)."""
    try:
        readers.release(path)
        open_reader(path).close()
    except DamagedDatabase:
        return True
    except _lmdb().Error:
        return False
    return False


def open_checked(path, rebuilt, db):
    """open_writer(path), after checking its data.mdb: a damaged database is removed first (db noted in rebuilt)."""
    data = os.path.join(path, "data.mdb")
    if os.path.isfile(data) and os.path.getsize(data) > 0 and is_damaged(path):
        for name in ("data.mdb", "lock.mdb"):  # every pair in it fails the resume check and is redone
            _remove(os.path.join(path, name))
        rebuilt.append(db)
    return open_writer(path)


def assemble(root, part_paths):
    """--merge of LMDB shard jobs: put every staged sample into the databases, then point the parts at them."""
    store = LmdbStore(root)
    temps = [os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".tmp") for p in part_paths]
    outs = [open(t, "w", encoding="utf-8") for t in temps]
    databases = set()
    try:
        check_damaged(root, part_paths, store)
        for row, i in tars.merged_rows(part_paths):
            state = row.get(manifest.STATE) or {}
            if state.get("at"):
                try:
                    store.put(row, reused=True)
                except OSError as exc:
                    raise MergeError(f"cannot merge: the staged images of '{row.get('source')}' "
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
        replace_if_changed(tmp, path)
    for part in part_paths:  # every sample is in the databases now
        tag = os.path.basename(part)[: -len(".jsonl")]
        for path in tars.glob.glob(os.path.join(root, manifest.PARTS, tars.SEGMENT_GLOB.format(tag=tag))):
            _remove(path)
    return {"databases": sorted(databases)}


def check_damaged(root, part_paths, store):
    """Before a merge: rebuild the damaged databases whose pairs are all staged again; MergeError otherwise."""
    damaged = {db for db in store.databases() if is_damaged(os.path.join(root, db))}
    if not damaged:
        return
    for row, i in tars.merged_rows(part_paths):
        state = row.get(manifest.STATE) or {}
        lost = sorted({m[3] for m in state.get("members", [])} & damaged)
        if lost and not state.get("at"):  # its images were only in the damaged database
            shard = "/".join(map(str, manifest.file_shard(part_paths[i])))
            raise MergeError(
                f"cannot merge: LMDB database '{os.path.join(root, lost[0])}' is damaged (truncated?) and held "
                f"the images of '{row.get('source')}'; run --shard {shard}"
                " again (it redoes the pairs of a damaged database; so do the other shard jobs), then --merge")
    for db in sorted(damaged):
        store._env(db)  # starts it again from empty: every pair it held is staged
