"""Manifest rows, per-shard parts, journals, done-markers, merge and errors.

Layout under OUTPUT/parts/ for shard i of n (tag = shard-0000i-of-0000n):
  {tag}.journal-K.jsonl   rows of a run in progress, one flushed line per pair
  {tag}.jsonl             the shard's rows once it finished (the last journal, renamed)
  {tag}.errors.jsonl      the shard's failed inputs
  {tag}.done              written last: its presence means the shard is complete
  run.json                the config fingerprint (and input) every job into this output must share
  {tag}.lock              held (flock) by the job running shard tag; {tag}.lock.holder names it meanwhile
  count-N.lock            held shared by every job of an N-shard run: runs of two shard counts never mix
  merge.lock              held while the dataset files are merged
Every file holds rows sorted by ``source``, so parts merge by streaming.
Rows in parts carry a private ``_state`` (output sizes and hashes, source
size and mtime) used to verify outputs before a resume skips them; the public
manifest.jsonl leaves it out, so it holds nothing that depends on the machine.
"""

import errno
import glob
import heapq
import json
import os
import re
import socket
import uuid
import zlib

from . import paths
from .errors import LockHeld, MergeError, UntrustedDataset
from .fsutil import flush_to_disk, replace_if_changed, same_bytes, write_atomic  # noqa: F401 - old home
from .fsutil import remove_if_present as _remove

PARTS = "parts"
STATE = "_state"
RUN_FILE = "run.json"
_TAG_RE = re.compile(r"shard-(\d+)-of-(\d+)\.done$")
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
        mine = [p for p in glob.glob(os.path.join(parts, "shard-*.jsonl")) if _may_hold(file_shard(p), shard)]
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
    mine = [p for p in found if _may_hold(file_shard(p), shard)]
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
        streams = [read_rows(p) for p in parts if _may_hold(file_shard(p), shard)]
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


def _may_hold(tag, shard):
    """Whether a part tagged tag can hold rows of shard (None: any shard)."""
    if tag is None:
        return False
    return shard is None or tag[1] != shard[1] or tag == tuple(shard)


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

    def finish(self, marker):
        """Promote the journal to the shard's part, drop older journals, and write the done-marker last."""
        self.rows.close()
        self.errors.close()
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


def done_markers(out_root):
    """{count: {index: marker}} of the done-markers under OUTPUT/parts."""
    found = {}
    for path in glob.glob(os.path.join(out_root, PARTS, "shard-*.done")):
        m = _TAG_RE.search(path)
        with open(path, encoding="utf-8") as f:
            try:
                marker = json.loads(f.read())
            except ValueError:
                marker = None
        if not isinstance(marker, dict):
            raise MergeError(f"cannot merge: done-marker '{path}' is damaged (not a JSON object); "
                             "run that shard again")
        found.setdefault(int(m.group(2)), {})[int(m.group(1))] = marker
    return found


def _done_files(out_root, count, indexes=None):
    """'parts/shard-00000-of-00002.done, ...' of count's done-markers (the first three, then how many more)."""
    names = [f"{PARTS}/{shard_tag(i, count)}.done" for i in sorted(indexes if indexes is not None
                                                                    else done_markers(out_root).get(count, {}))]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def runs_of(count):
    """'a whole run' for one shard, else 'a 3-shard run'."""
    return "a whole run" if count == 1 else f"a {count}-shard run"


def other_count_refusal(out_root, index, count):
    """Why a job of shard index/count must not write into out_root (one line), or None when it may.

    An output holding finished shards of another count (a whole run's done-marker counts as a count of 1)
    belongs to that run: mixing the two would give a dataset no merge can build.  A killed run leaves no
    done-marker, so changing the count after one stays allowed (its journals are reused).
    """
    # A run of that count still in progress is refused by its lock instead (exit 5: wait for it).
    others = {n: m for n, m in done_markers(out_root).items() if n != count and not _count_in_progress(out_root, n)}
    if not others:
        return None
    this = f"this job is --shard {index}/{count}" if count > 1 else "this run is a whole run (no --shard)"
    held = "; ".join(f"{runs_of(n)} ({_done_files(out_root, n, m)})" for n, m in sorted(others.items()))
    first = min(others)
    same = f"with --shard I/{first} as they were (then --merge)" if first > 1 else "without --shard, as it was"
    goal = f"{count} shards" if count > 1 else "a whole run"
    return (f"output '{out_root}' holds finished shards of {held}, and {this}; run {same}, or delete "
            f"{PARTS}/shard-*-of-{first:05d}.done to go on with {goal} (the pairs already made are reused)")


def _count_in_progress(out_root, count):
    """Whether a run of count shards holds its lock on out_root now (probed without creating a lock file)."""
    path = os.path.join(out_root, PARTS, f"count-{count}.lock")
    return os.path.exists(path) and _is_locked(path)


def merge(out_root, dataset_info, count=None, fingerprint=None, prepare=None):
    """Combine the shard parts into manifest.jsonl, errors.jsonl and dataset.json; returns the counts.

    prepare(part paths), when given, runs once every shard is known done and before the manifest is written
    (containers.assemble: it may rewrite the parts); what it returns is dataset.json's "container".
    """
    markers = done_markers(out_root)
    if count is None:
        if not markers:
            raise MergeError(f"no finished shards under '{os.path.join(out_root, PARTS)}'; run the shards first")
        if len(markers) > 1:  # refused since when a job starts: an output from before that check
            held = "; ".join(f"{runs_of(n)} ({_done_files(out_root, n)})" for n in sorted(markers))
            raise MergeError(f"cannot merge: '{os.path.join(out_root, PARTS)}' holds finished shards of {held}; "
                             f"delete the files of the count you gave up ({PARTS}/shard-*-of-NNNNN.*)")
        count = next(iter(markers))
    have = markers.get(count, {})
    missing = [i for i in range(count) if i not in have]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MergeError(f"cannot merge: shard {names} not done (no parts/{shard_tag(missing[0], count)}.done); "
                         f"run it with --shard {missing[0]}/{count} first")
    other = sorted(i for i, m in have.items() if m.get("fingerprint") != fingerprint)
    if fingerprint is not None and other:  # run.json names the keys (pipeline.merge); this is the last guard
        raise MergeError(f"cannot merge: {_done_files(out_root, count, other)} record(s) another config than "
                         f"this one (fingerprint {have[other[0]].get('fingerprint')}, this config {fingerprint}); "
                         "merge with the --config and --set of the shard jobs, or run those shards again")
    codecs = _shared_codecs(have, count)
    parts = os.path.join(out_root, PARTS)
    shards = [(f"shard {i}/{count}", os.path.join(parts, shard_tag(i, count)), have[i]) for i in range(count)]
    root = check_folders(out_root)
    for _, base, _ in shards:  # before anything is assembled, written or deleted
        check_part(f"{base}.jsonl", root, images_on_disk=False)  # a merge opens tars and databases only
        check_part(f"{base}.errors.jsonl", root, errors=True)
    container = prepare([f"{base}.jsonl" for _, base, _ in shards]) if prepare is not None else None
    n_pairs = _write_merged(os.path.join(out_root, "manifest.jsonl"),
                            [(name, f"{base}.jsonl", m.get("pairs")) for name, base, m in shards])
    n_errors = _write_merged(os.path.join(out_root, "errors.jsonl"),
                             [(name, f"{base}.errors.jsonl", m.get("errors")) for name, base, m in shards])
    # No shard count here: N shards plus --merge must give the very bytes of one whole run.
    counts = {"pairs": n_pairs, "errors": n_errors}
    skipped = have[0].get("skipped")  # every shard scans the whole tree, so shard 0's counts are everyone's
    if skipped is not None:
        counts["skipped"] = skipped
    info = dict(dataset_info, **codecs, counts=counts)
    if container is not None:
        info["container"] = container
    write_atomic(os.path.join(out_root, "dataset.json"), (json.dumps(info, indent=2) + "\n").encode())
    return dict(info["counts"], shards=count)


def _shared_codecs(markers, count=None):
    """{"encoder": ..., "decoder": ...} the done-markers recorded (the same in all), or MergeError naming both."""
    found = {}
    for role, key in (("encoder", "save.encoder"), ("decoder", "decode.device")):
        seen = {json.dumps(m.get(role), sort_keys=True): i for i, m in sorted(markers.items(), reverse=True)}
        if len(seen) > 1:
            (_, i), (_, j) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
            a, b = _codec_label(markers[i].get(role)), _codec_label(markers[j].get(role))
            where = f" ({PARTS}/{shard_tag(i, count)}.done, {PARTS}/{shard_tag(j, count)}.done)" if count else ""
            raise MergeError(f"cannot merge: {key}: shard {i} was written with {role} {a}, shard {j} with {b}{where}; "
                             f"run shard {j} again with {a} installed")
        value = markers[min(markers)].get(role) if markers else None
        if value is not None:  # parts from before codecs were recorded have none
            found[role] = value
    return found


def _codec_label(record):
    """'fpng 0.1.0' for a codec record ('none' for parts from before codecs were recorded)."""
    if not isinstance(record, dict):
        return "none recorded"
    return " ".join(str(record[k]) for k in ("name", "version") if k in record)


def _numbered(rows, i):
    """(row, i) for each row."""
    for row in rows:
        yield row, i


def _write_merged(dest, parts):
    """Stream-merge sorted parts [(name, path, expected rows)] into dest without private state; returns the row count.

    dest is replaced atomically, and only when every part holds the rows its done-marker counted:
    a lost or damaged part is a MergeError naming its shard, never a silently short manifest.
    """
    tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".tmp")
    seen = [0] * len(parts)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            streams = [_numbered(read_rows(path), i) for i, (_, path, _) in enumerate(parts)]
            for row, i in heapq.merge(*streams, key=lambda item: item[0]["source"]):
                row.pop(STATE, None)
                f.write(dumps(row) + "\n")
                seen[i] += 1
        for (name, path, expected), n in zip(parts, seen):
            if not os.path.exists(path) or (expected is not None and n != expected):
                raise MergeError(f"cannot merge: {name} is damaged ({os.path.basename(path)} holds {n} readable "
                                 f"rows, its done-marker says {expected}); run that shard again")
    except BaseException:
        _remove(tmp)
        raise
    replace_if_changed(tmp, dest)
    return sum(seen)


def remove_orphans(out_root, orphans, part):
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
    root = paths.Root(out_root)
    # Every path is checked (check_parts did so before the run; again here) before the first one is removed.
    checked = {rel: root.path(rel, paths.IMAGE, where[rel], "_state.files") for rel in sorted(doomed)}
    for row in read_rows(part):
        files = (row.get(STATE) or {}).get("files")
        for rel in files if isinstance(files, dict) else ():
            doomed.pop(rel, None)
    removed = 0
    for rel, (size, digest) in sorted(doomed.items()):
        path = checked[rel]
        try:
            if os.path.getsize(path) != size or file_digest(path) != digest:
                continue
        except OSError:  # gone already
            continue
        if paths.remove_regular(path):  # a regular file only: never a link, never a folder
            removed += 1
            _remove_empty_parents(out_root, os.path.dirname(path))
    return removed


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


class OutputLock:
    """Advisory locks (flock) that keep two runs out of one output; a killed run's lock dies with it.

    A job of shard I/N holds ``{tag}.lock`` exclusively and ``count-N.lock`` shared: shard jobs of one N run
    side by side, a second job of the same shard or a job of another N is refused at once.  merge() work
    holds ``merge.lock`` (waiting for it: merging is short).  Where the filesystem has no locks, none is taken.
    """

    def __init__(self, out_root):
        self.parts = os.path.join(out_root, PARTS)
        self.files = []
        self.holders = []  # holder notes to delete on release

    def acquire_shard(self, index, count):
        """Take this shard's locks or raise LockHeld naming the holder."""
        os.makedirs(self.parts, exist_ok=True)
        tag = shard_tag(index, count)
        if not self._take(f"{tag}.lock", fcntl_flags("ex_nb"), record=True):
            raise LockHeld(f"output '{os.path.dirname(self.parts)}' is in use: shard {index}/{count} is being "
                           f"made by {_holder(os.path.join(self.parts, f'{tag}.lock'))}")
        if not self._take(f"count-{count}.lock", fcntl_flags("sh_nb")):
            raise LockHeld(f"output '{os.path.dirname(self.parts)}' is in use by a run of {count} shard(s)")
        for path in glob.glob(os.path.join(self.parts, "count-*.lock")):
            other = int(re.search(r"count-(\d+)\.lock$", path).group(1))
            if other != count and _is_locked(path):
                holders = [_holder(p) for p in glob.glob(os.path.join(self.parts, f"shard-*-of-{other:05d}.lock"))
                           if _is_locked(p)]
                raise LockHeld(f"output '{os.path.dirname(self.parts)}' is in use by a run of {other} shard(s)"
                               f" ({', '.join(holders) or 'holder unknown'})")
        return self

    def runs_in_progress(self):
        """[(count, 'pid 1 on host h, ...')] of the runs writing into this output now (their count lock is held)."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.parts, "count-*.lock"))):
            count = int(re.search(r"count-(\d+)\.lock$", path).group(1))
            if _is_locked(path):
                locks = sorted(glob.glob(os.path.join(self.parts, f"shard-*-of-{count:05d}.lock")))
                holders = [_holder(p) for p in locks if _is_locked(p)]
                found.append((count, ", ".join(holders) or "holder unknown"))
        return found

    def acquire_merge(self):
        """Wait for the merge lock."""
        os.makedirs(self.parts, exist_ok=True)
        self._take("merge.lock", fcntl_flags("ex"))
        return self

    def _take(self, name, flags, record=False):
        """Lock parts/name with flags; False when another process holds it (True where locks are unsupported)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: run unguarded, as before locks existed
            return True
        path = os.path.join(self.parts, name)
        f = open(path, "a", encoding="utf-8")  # never written: a no-op rerun changes no file of the output
        try:
            fcntl.flock(f.fileno(), flags)
        except BlockingIOError:
            f.close()
            return False
        except OSError as exc:
            f.close()
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return True  # no locks on this filesystem: run unguarded, as before locks existed
            raise
        self.files.append(f)
        if record:  # who holds it, for the message a refused run prints; removed again on release
            with open(path + ".holder", "w", encoding="utf-8") as note:
                note.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
            self.holders.append(path + ".holder")
        return True

    def release(self):
        """Drop every lock this object holds (closing the file releases it) and its holder notes."""
        for path in self.holders:
            _remove(path)
        for f in reversed(self.files):
            f.close()
        self.files, self.holders = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def fcntl_flags(kind):
    """flock flags by name: ex, ex_nb, sh_nb (None where there is no fcntl)."""
    try:
        import fcntl
    except ImportError:
        return None
    return {"ex": fcntl.LOCK_EX, "ex_nb": fcntl.LOCK_EX | fcntl.LOCK_NB, "sh_nb": fcntl.LOCK_SH | fcntl.LOCK_NB}[kind]


def _is_locked(path):
    """Whether some process holds a lock on path (probed without waiting)."""
    try:
        import fcntl
    except ImportError:
        return False

    try:
        with open(path, "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False  # closing the file drops the probe's lock
    except OSError:
        return False


def _holder(path):
    """'pid 123 on host h' as the holder of a lock file noted it."""
    try:
        with open(path + ".holder", encoding="utf-8") as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"
