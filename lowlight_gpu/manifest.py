"""Manifest rows, per-shard parts, journals, done-markers, merge and errors.

Layout under OUTPUT/parts/ for shard i of n (tag = shard-0000i-of-0000n):
  {tag}.journal-K.jsonl   rows of a run in progress, one flushed line per pair
  {tag}.jsonl             the shard's rows once it finished (the last journal, renamed)
  {tag}.errors.jsonl      the shard's failed inputs
  {tag}.done              written last: its presence means the shard is complete
Every file holds rows sorted by ``source``, so parts merge by streaming.
Rows in parts carry a private ``_state`` (output sizes and hashes, source
size and mtime) used to verify outputs before a resume skips them; the public
manifest.jsonl leaves it out, so it holds nothing that depends on the machine.
"""

import glob
import hashlib
import heapq
import json
import os
import re

from .imageio import write_atomic

PARTS = "parts"
STATE = "_state"
_TAG_RE = re.compile(r"shard-(\d+)-of-(\d+)\.done$")


class MergeError(Exception):
    """Parts cannot be merged (a shard is missing or from another config)."""


def shard_tag(index, count):
    """The file-name tag of shard index of count."""
    return f"shard-{index:05d}-of-{count:05d}"


def dumps(obj):
    """One compact, deterministic JSON line."""
    return json.dumps(obj, separators=(", ", ": "), ensure_ascii=False)


def file_digest(path):
    """blake2b-128 hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(path):
    """Yield the JSON rows of a .jsonl file, stopping at a torn last line left by a killed run."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    return
                try:
                    yield json.loads(line)
                except ValueError:
                    return
    except FileNotFoundError:
        return


def merged(paths):
    """Stream the rows of several source-sorted files as one source-sorted stream."""
    return heapq.merge(*(read_rows(p) for p in paths), key=lambda r: r["source"])


class PriorRows:
    """Rows of earlier runs into this output, looked up in increasing source order."""

    def __init__(self, out_root):
        parts = os.path.join(out_root, PARTS)
        finals = [p for p in glob.glob(os.path.join(parts, "shard-*.jsonl"))
                  if ".errors." not in p and ".journal-" not in p]
        journals = glob.glob(os.path.join(parts, "shard-*.journal-*.jsonl"))
        # Journals come from runs that may have crashed, so their outputs get their hashes checked.
        tagged = [self._tag(read_rows(p), False) for p in finals] + [self._tag(read_rows(p), True) for p in journals]
        self._stream = heapq.merge(*tagged, key=lambda item: item[0]["source"])
        self._head = next(self._stream, None)

    @staticmethod
    def _tag(rows, from_journal):
        for row in rows:
            yield row, from_journal

    def pop(self, source):
        """The (row, from_journal) recorded for source, or None; sources must be asked in increasing order."""
        found = None
        while self._head is not None and self._head[0]["source"] <= source:
            if self._head[0]["source"] == source and (found is None or not self._head[1]):
                found = self._head  # prefer a finished part's row over a journal's
            self._head = next(self._stream, None)
        return found


def row_is_intact(out_root, row, source_path, check_hashes):
    """Whether every output of a recorded row is on disk as recorded and the source is unchanged."""
    state = row.get(STATE)
    if not state:
        return False
    try:
        st = os.stat(source_path)
        if [st.st_size, st.st_mtime_ns] != state["source"]:
            return False
        for rel, (size, digest) in state["files"].items():
            path = os.path.join(out_root, rel)
            if os.path.getsize(path) != size:
                return False
            if check_hashes and file_digest(path) != digest:
                return False
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


class ShardWriter:
    """Writes one shard's rows and errors as they arrive, then finalises the part and its done-marker."""

    def __init__(self, out_root, index, count):
        self.parts = os.path.join(out_root, PARTS)
        os.makedirs(self.parts, exist_ok=True)
        self.tag = shard_tag(index, count)
        self.old_journals = glob.glob(os.path.join(self.parts, f"{self.tag}.journal-*.jsonl"))
        n = 1 + max([int(re.search(r"journal-(\d+)", p).group(1)) for p in self.old_journals], default=0)
        self.journal_path = os.path.join(self.parts, f"{self.tag}.journal-{n}.jsonl")
        self.errors_tmp = os.path.join(self.parts, f".{self.tag}.errors.jsonl.tmp")
        done = os.path.join(self.parts, f"{self.tag}.done")
        if os.path.exists(done):
            os.remove(done)  # the shard is being redone; merge must wait for this run
        self.rows = open(self.journal_path, "w", encoding="utf-8")
        self.errors = open(self.errors_tmp, "w", encoding="utf-8")
        self.n_rows = self.n_errors = 0

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

    def finish(self, marker):
        """Promote the journal to the shard's part, drop older journals, and write the done-marker last."""
        self.rows.close()
        self.errors.close()
        os.replace(self.journal_path, os.path.join(self.parts, f"{self.tag}.jsonl"))
        os.replace(self.errors_tmp, os.path.join(self.parts, f"{self.tag}.errors.jsonl"))
        for p in self.old_journals:
            os.remove(p)
        marker = dict(marker, pairs=self.n_rows, errors=self.n_errors)
        write_atomic(os.path.join(self.parts, f"{self.tag}.done"), (dumps(marker) + "\n").encode())

    def abandon(self):
        """Close files after an interruption, keeping the journal for the next run."""
        self.rows.close()
        self.errors.close()


def done_markers(out_root):
    """{count: {index: marker}} of the done-markers under OUTPUT/parts."""
    found = {}
    for path in glob.glob(os.path.join(out_root, PARTS, "shard-*.done")):
        m = _TAG_RE.search(path)
        with open(path, encoding="utf-8") as f:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = json.loads(f.read())
    return found


def merge(out_root, dataset_info, count=None, fingerprint=None):
    """Combine the shard parts into manifest.jsonl, errors.jsonl and dataset.json; returns the counts."""
    markers = done_markers(out_root)
    if count is None:
        if not markers:
            raise MergeError(f"no finished shards under '{os.path.join(out_root, PARTS)}'; run the shards first")
        if len(markers) > 1:
            raise MergeError(f"'{os.path.join(out_root, PARTS)}' holds shards of several splits "
                             f"({', '.join(map(str, sorted(markers)))} shards); remove the stale ones")
        count = next(iter(markers))
    have = markers.get(count, {})
    missing = [i for i in range(count) if i not in have]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MergeError(f"cannot merge: shard {names} not done (no parts/{shard_tag(missing[0], count)}.done); "
                         f"run it with --shard {missing[0]}/{count} first")
    prints = {m.get("fingerprint") for m in have.values()}
    if fingerprint is not None and prints != {fingerprint}:
        raise MergeError("cannot merge: the shards were made with a different config than this one "
                         f"(fingerprints {sorted(map(str, prints))}, config {fingerprint})")
    tags = [shard_tag(i, count) for i in range(count)]
    parts = os.path.join(out_root, PARTS)
    n_pairs = _write_merged(os.path.join(out_root, "manifest.jsonl"),
                            [os.path.join(parts, f"{t}.jsonl") for t in tags])
    n_errors = _write_merged(os.path.join(out_root, "errors.jsonl"),
                             [os.path.join(parts, f"{t}.errors.jsonl") for t in tags])
    info = dict(dataset_info, counts={"pairs": n_pairs, "errors": n_errors, "shards": count})
    write_atomic(os.path.join(out_root, "dataset.json"), (json.dumps(info, indent=2) + "\n").encode())
    return info["counts"]


def _write_merged(dest, paths):
    """Stream-merge sorted parts into dest (without private state), atomically; returns the row count."""
    tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in merged(paths):
            row.pop(STATE, None)
            f.write(dumps(row) + "\n")
            n += 1
    os.replace(tmp, dest)
    return n
