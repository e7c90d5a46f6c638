"""Manifest rows, per-shard parts, journals, done-markers and the checks a resume makes.

Layout under OUTPUT/parts/ for shard i of n (tag = shard-0000i-of-0000n):
  {tag}.journal-K.jsonl   rows of a run in progress, one flushed line per pair
  {tag}.jsonl             the shard's rows once it finished (the last journal, renamed)
  {tag}.errors.jsonl      the shard's failed inputs
  {tag}.done              written last: its presence means the shard is complete
  run.json                the config fingerprint (and input) every job into this output must share
  {tag}.lock              held (flock) by the job running shard tag (locks.py)
  count-N.lock, merge.lock  the run and merge locks (locks.py)
Every file holds rows sorted by ``source``, so parts merge by streaming (merging.py).
Rows in parts carry a private ``_state`` (output sizes and hashes, source
size and mtime) used to verify outputs before a resume skips them; the public
manifest.jsonl leaves it out.
"""

import glob
import heapq
import json
import os
import re
import socket
import uuid
import zlib

from . import paths
from .errors import UntrustedDataset
from .fsutil import flush_to_disk, replace_if_changed, write_atomic
from .fsutil import remove_if_present as _remove

PARTS = "parts"
STATE = "_state"
RUN_FILE = "run.json"
_FILE_TAG_RE = re.compile(r"shard-(\d+)-of-(\d+)\.")


def shard_tag(index, count):
    """The file-name tag of shard index of count."""
    return f"shard-{index:05d}-of-{count:05d}"


def dumps(obj):
    """One compact, deterministic JSON line."""
    return json.dumps(obj, separators=(", ", ": "), ensure_ascii=False)


def data_digest(data):
    """CRC-32 of bytes, as 8 hex digits: with the size it catches truncated or corrupt leftovers at ~3 GB/s."""
    return f"{zlib.crc32(data):08x}"


def file_digest(path):
    """data_digest of a file's bytes, read in chunks."""
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def read_rows(path):
    """Yield the JSON rows of a .jsonl file, stopping at a torn last line left by a killed run."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    return
                try:
                    row = json.loads(line)
                except ValueError:
                    return
                # A crash on a network filesystem can leave blocks of other bytes; whatever follows them is unsafe.
                if not isinstance(row, dict) or not isinstance(row.get("source"), str):
                    return
                yield row
    except (FileNotFoundError, UnicodeDecodeError):
        return


def file_shard(path):
    """(index, count) of the shard a file under parts/ belongs to, or None."""
    m = _FILE_TAG_RE.search(os.path.basename(path))
    return (int(m.group(1)), int(m.group(2))) if m else None


class PriorRows:
    """Rows of earlier runs into this output, looked up in increasing source order."""

    def __init__(self, out_root, shard=None, check_all=False):
        """check_all: treat every row as a journal's, so its outputs' checksums are checked (--repair)."""
        parts = os.path.join(out_root, PARTS)
        # Parts of a sibling shard (same count, other index) cannot hold this shard's sources: with 64 array
        # jobs, each reads only its own parts instead of all 64.  Parts of another count may, so they stay.
        mine = [p for p in glob.glob(os.path.join(parts, "shard-*.jsonl")) if may_hold(file_shard(p), shard)]
        finals = [p for p in mine if ".errors." not in p and ".journal-" not in p]
        journals = [p for p in mine if ".journal-" in p]
        # Journals come from runs that may have crashed, so their outputs get their hashes checked.
        tagged = [self._tag(read_rows(p), False) for p in finals] + [self._tag(read_rows(p), True) for p in journals]
        self._stream = heapq.merge(*tagged, key=lambda item: item[0]["source"])
        self._head = next(self._stream, None)
        self.check_all = check_all
        self.passed = []  # (source, output files) of rows no scanned source asked for: candidates for removal

    @staticmethod
    def _tag(rows, from_journal):
        for row in rows:
            yield row, from_journal

    def pop(self, source):
        """The (row, from_journal) recorded for source, or None; sources must be asked in increasing order."""
        found = None
        while self._head is not None and self._head[0]["source"] <= source:
            if self._head[0]["source"] == source:
                if found is None or not self._head[1]:
                    found = self._head  # prefer a finished part's row over a journal's
            else:
                self._pass(self._head[0])
            self._head = next(self._stream, None)
        return (found[0], True) if found is not None and self.check_all else found

    def drain(self):
        """Pass every row not asked for yet: call once the scan has ended."""
        while self._head is not None:
            self._pass(self._head[0])
            self._head = next(self._stream, None)

    def _pass(self, row):
        """Remember a row whose source the scan did not yield."""
        files = (row.get(STATE) or {}).get("files")
        if isinstance(files, dict):
            self.passed.append((row["source"], files))


def prior_parts(out_root, shard=None):
    """(row parts and journals, errors parts) under OUTPUT/parts that a run of shard reads (PriorRows, PriorErrors)."""
    found = sorted(glob.glob(os.path.join(out_root, PARTS, "shard-*.jsonl")))
    mine = [p for p in found if may_hold(file_shard(p), shard)]
    return [p for p in mine if ".errors." not in p], [p for p in mine if ".errors." in p]


def check_parts(out_root, shard=None):
    """UntrustedDataset (naming the file and row) unless every path the earlier parts of shard record is contained.

    Runs before a run writes or deletes anything: a row is trusted later (its files checked, kept, or removed
    as an orphan's), so every one is checked here, on disk too (no folder on the way may lead outside).
    """
    root = check_folders(out_root)
    rows, errors = prior_parts(out_root, shard)
    for path in rows:
        check_part(path, root)
    for path in errors:
        check_part(path, root, errors=True)


def check_folders(out_root):
    """UntrustedDataset unless parts/ and shards/ stay inside out_root (their files are listed, locked, swept by
    pattern); returns the paths.Root of out_root."""
    root = paths.Root(out_root)
    for folder in (PARTS, "shards"):
        root.check_folder(folder)
    return root


def check_part(path, root, errors=False, images_on_disk=True):
    """check_parts for one part, journal (or, with errors, errors part) at path."""
    for n, row in enumerate(read_rows(path), 1):  # read_rows stops at a torn line: line n is row n
        if errors:
            paths.check_error_row(row, path, n)
        else:
            paths.check_row(row, path, n, root, images_on_disk=images_on_disk)


class PriorErrors:
    """Error rows of earlier finished runs into this output, looked up in increasing source order."""

    def __init__(self, out_root, shard=None):
        parts = glob.glob(os.path.join(out_root, PARTS, "shard-*.errors.jsonl"))
        streams = [read_rows(p) for p in parts if may_hold(file_shard(p), shard)]
        self._stream = heapq.merge(*streams, key=lambda row: row["source"])
        self._head = next(self._stream, None)

    def pop(self, source):
        """The error row recorded for source, or None; sources must be asked in increasing order."""
        found = None
        while self._head is not None and self._head["source"] <= source:
            if self._head["source"] == source:
                found = self._head
            self._head = next(self._stream, None)
        return found


def may_hold(tag, shard):
    """Whether a part tagged tag can hold rows of shard (None: any shard)."""
    if tag is None:
        return False
    return shard is None or tag[1] != shard[1] or tag == tuple(shard)


def row_is_intact(out_root, row, source_stat, check_hashes):
    """Whether every output of a recorded row is on disk as recorded and the source is unchanged.

    out_root: the output folder, or the storage.Location of an output on object storage.
    source_stat: the source's [size, mtime_ns] now (sources.source_stat), or None when it cannot be read.
    """
    state = row.get(STATE)
    if not state or source_stat is None:
        return False
    try:
        if list(source_stat) != state["source"]:
            return False
        if not isinstance(out_root, (str, os.PathLike)):
            return stored_files_intact(out_root, state["files"], check_hashes)
        for rel, (size, digest) in state["files"].items():
            path = paths.join(out_root, rel, what="_state.files")  # check_parts saw it; checked again here
            if os.path.getsize(path) != size:
                return False
            if check_hashes and file_digest(path) != digest:
                return False
    except UntrustedDataset:
        raise
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


def stored_files_intact(store, files, check_hashes):
    """Whether every file {rel: [size, crc]} is an object of store (a storage.Location) of that size (and CRC).

    An object is whole or absent (one PUT each), so its size says it was written; the CRC, checked for a
    journal's rows, says it holds the recorded bytes and not another run's.
    """
    for rel in files:
        paths.contained(rel, what="_state.files")
    if store.sizes(list(files)) != [size for size, _ in files.values()]:
        return False
    return not check_hashes or all(data_digest(store.read(rel)) == digest for rel, (_, digest) in files.items())


class ShardWriter:
    """Writes one shard's rows and errors as they arrive, then finalises the part and its done-marker."""

    def __init__(self, out_root, index, count):
        self.parts = os.path.join(out_root, PARTS)
        os.makedirs(self.parts, exist_ok=True)
        self.tag = shard_tag(index, count)
        self.old_journals = glob.glob(os.path.join(self.parts, f"{self.tag}.journal-*.jsonl"))
        self.errors_tmp = os.path.join(self.parts, f".{self.tag}.errors.jsonl.tmp")
        # A done-marker of an earlier finished run stays while this run works: its part is complete and
        # consistent, so a merge meanwhile gives that earlier dataset; finish() replaces both together.
        self.rows, self.journal_path = self._new_journal()
        self.errors = open(self.errors_tmp, "w", encoding="utf-8")
        self.n_rows = self.n_errors = 0

    def _new_journal(self):
        """Create the next journal-K exclusively, so no earlier journal is ever truncated."""
        n = 1 + max([int(re.search(r"journal-(\d+)", p).group(1)) for p in self.old_journals], default=0)
        while True:
            path = os.path.join(self.parts, f"{self.tag}.journal-{n}.jsonl")
            try:
                return open(path, "x", encoding="utf-8"), path
            except FileExistsError:  # appeared since the glob: never reuse it
                n += 1

    def add_row(self, row):
        """Append one pair's row; flushed so a killed run keeps it."""
        self.rows.write(dumps(row) + "\n")
        self.rows.flush()
        self.n_rows += 1

    def add_error(self, error):
        """Append one failed input."""
        self.errors.write(dumps(error) + "\n")
        self.errors.flush()
        self.n_errors += 1

    def finish(self, marker, publish=None):
        """Promote the journal to the shard's part, drop older journals, and write the done-marker last.

        publish(journal path), when given, runs once the journal is complete and before it is flushed and
        promoted: a job that builds its own container files there (and points its rows at them) gets them
        onto stable storage by the same flush, and a job killed meanwhile is not done and is run again.
        """
        self.rows.close()
        self.errors.close()
        if publish is not None:
            publish(self.journal_path)
        # A finished part is trusted on size alone by later runs, so the outputs it lists must be on disk
        # before it exists, not only in this node's page cache.
        flush_to_disk(self.parts)
        replace_if_changed(self.journal_path, os.path.join(self.parts, f"{self.tag}.jsonl"))
        replace_if_changed(self.errors_tmp, os.path.join(self.parts, f"{self.tag}.errors.jsonl"))
        for p in self.old_journals:
            _remove(p)
        marker = dict(marker, pairs=self.n_rows, errors=self.n_errors)
        write_atomic(os.path.join(self.parts, f"{self.tag}.done"), (dumps(marker) + "\n").encode())

    def abandon(self):
        """Close files after an interruption, keeping the journal for the next run."""
        self.rows.close()
        self.errors.close()


def claim_run(out_root, body):
    """Write body to parts/run.json unless a job already did; returns what run.json holds.

    Shard jobs often start together.  Each writes its own temporary file and hard-links it into place,
    which only the first can do, so run.json is never torn and the first job's config wins.
    """
    parts = os.path.join(out_root, PARTS)
    os.makedirs(parts, exist_ok=True)
    final = os.path.join(parts, RUN_FILE)
    if not os.path.exists(final):
        # A name no other job or thread uses: once linked, this file *is* run.json, so nobody may write to it again.
        tmp = os.path.join(parts, f".{RUN_FILE}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(json.dumps(body) + "\n")
        try:
            os.link(tmp, final)
        except (FileExistsError, FileNotFoundError):
            pass  # another job was first (and may already have swept our temporary file)
        except OSError:  # a filesystem without hard links: a rename is still atomic, the last writer wins
            try:
                os.replace(tmp, final)
            except FileNotFoundError:
                pass
    # run.json exists now, so every temporary file here is spent: ours, a killed job's, or a slower job's,
    # whose link then fails harmlessly.
    for leftover in glob.glob(os.path.join(parts, f".{RUN_FILE}.*.tmp")):
        _remove(leftover)
    return read_run(out_root)


def read_run(out_root):
    """The body of parts/run.json, or None when there is none; ValueError when it is unreadable."""
    try:
        with open(os.path.join(out_root, PARTS, RUN_FILE), encoding="utf-8") as f:
            body = json.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def remove_orphans(out_root, orphans, part, store=None):
    """Delete the output files of orphans [(source, {rel: [size, crc]})] that nothing else owns; returns how many.

    A source deleted since an earlier run leaves its row behind in that run's part; the new part has dropped
    it.  A new source may reuse the name, so a file is removed only if no row of the new part lists it and it
    still holds the bytes the orphan row recorded (another shard may have rewritten it).
    """
    where = {rel: f"the earlier row of source {paths.show(source)} under '{os.path.dirname(part)}'"
             for source, files in orphans for rel in files}
    doomed = {rel: rec for _, files in orphans for rel, rec in files.items()}
    if not doomed:
        return 0
    if store is None:  # every folder on the way inside the output, the file a regular one
        root = paths.Root(out_root)
        place = lambda rel: root.path(rel, paths.IMAGE, where[rel], "_state.files")  # noqa: E731
    else:  # object storage (the part is in the local work folder): the lexical rule, a bucket has no links
        place = lambda rel: paths.contained(rel, paths.IMAGE, where[rel], "_state.files")  # noqa: E731
    # Every path is checked (check_parts did so before the run; again here) before the first one is removed.
    checked = {rel: place(rel) for rel in sorted(doomed)}
    for row in read_rows(part):
        files = (row.get(STATE) or {}).get("files")
        for rel in files if isinstance(files, dict) else ():
            doomed.pop(rel, None)
    removed = 0
    for rel, (size, digest) in sorted(doomed.items()):
        path = checked[rel]
        if store is not None:
            if _stored_holds(store, path, size, digest):
                store.remove(path)
                removed += 1
        elif _file_holds(path, size, digest) and paths.remove_regular(path):  # never a link, never a folder
            removed += 1
            _remove_empty_parents(out_root, os.path.dirname(path))
    return removed


def _file_holds(path, size, digest):
    """Whether the file at path has this size and CRC-32 (False when it is gone)."""
    try:
        return os.path.getsize(path) == size and file_digest(path) == digest
    except OSError:
        return False


def _stored_holds(store, rel, size, digest):
    """Whether the object rel of store (a storage.Location) has this size and CRC-32 (False when it is gone)."""
    try:
        return store.size(rel) == size and data_digest(store.read(rel)) == digest
    except FileNotFoundError:
        return False


def _remove_empty_parents(out_root, folder):
    """Remove folder and its parents up to out_root while they are empty (rmdir removes nothing else)."""
    root = os.path.abspath(out_root)
    folder = os.path.abspath(folder)
    while folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (the common case), or gone
            return
        folder = os.path.dirname(folder)
