"""WebDataset tar shards: deterministic members, per-job staging segments, and the final assembly.

The contract: ``shards/{split}-{k:06d}.tar`` holds the pairs at positions ``k*S .. k*S+S-1`` of its split in
the merged manifest (S = save.shard_pairs), in manifest order, each as ``KEY.high.png``, ``KEY.low.png``, ...,
``KEY.json``.  A shard is therefore a pure function of the sorted list of finished pairs, whatever the
workers, the ``--shard I/N`` jobs or the engine.

How it is built:

* a job's one writer (TarStaging, in the main process) appends each new sample to a **staging segment**,
  ``parts/{tag}.seg-K.tar``, and the journal records the sample's file and offset after its bytes are
  written (a killed job's torn tail is never referenced; a new run starts a new segment, never appends);
* once every job is done (the end of a whole run, or ``--merge``), ``assemble`` walks the merged parts in
  manifest order and builds each final shard under a temporary name, then renames it into place; a
  segment that already holds exactly one final shard's bytes (the usual case in a whole run, whose
  segments are cut at multiples of S) is hard-linked instead of copied;
* the parts are then rewritten to point at the final shards, and the spent segments are deleted.

Every member header is the same on every machine: PAX format (plain ustar for short ASCII names), mtime 0,
uid/gid 0, empty user and group names, mode 0o644; the archive ends as ``tarfile`` ends one (two zero
blocks, padded to a 10240-byte record).
"""

import glob
import heapq
import os
import re
import tarfile
import threading
import uuid
import zlib

from .. import manifest, paths
from ..errors import MergeError, UntrustedDataset
from ..fsutil import replace_if_changed, same_bytes
from ..fsutil import remove_if_present as _remove
from .naming import PAYLOAD, SHARDS, public, split_prefix

MTIME = 0
MODE = 0o644
SEGMENT_GLOB = "{tag}.seg-*.tar"
# shards/{split}-{k:06d}.tar (global boundaries) and shards/{split}-{job:05d}-{k:06d}.tar (a job's own tars):
# split names are data, train, val and test, so the two forms never overlap.
GLOBAL_RE = re.compile(r"(?P<split>[A-Za-z0-9_]+)-(?P<k>\d{6})\.tar")
JOB_RE = re.compile(r"(?P<split>[A-Za-z0-9_]+)-(?P<job>\d{5})-(?P<k>\d{6})\.tar")


def global_name(split, k):
    """shards/ name of the k-th tar of split in one sequence over the whole dataset."""
    return f"{SHARDS}/{split}-{k:06d}.tar"


def job_namer(index):
    """The shards/ names of job index's own tars: (split, k) -> shards/{split}-{index:05d}-{k:06d}.tar."""
    return lambda split, k: f"{SHARDS}/{split}-{index:05d}-{k:06d}.tar"


def job_of(rel):
    """The job index in a per-job tar's name (shards/train-00003-000001.tar -> 3), or None for any other file."""
    folder, _, name = (rel or "").rpartition("/")
    m = JOB_RE.fullmatch(name)
    return int(m.group("job")) if m and folder == SHARDS else None


def member_header(name, size):
    """The deterministic tar header block(s) of a regular member."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size):
    """Zero bytes that round a member's data up to whole 512-byte blocks."""
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def trailer(length):
    """The end of an archive whose members take length bytes: two zero blocks, padded to a whole record."""
    end = length + 2 * tarfile.BLOCKSIZE
    return b"\0" * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE))


def sample_length(members):
    """Bytes a sample of members [[name, size, ...], ...] takes in a tar."""
    return sum(len(member_header(m[0], m[1])) + m[1] + (-m[1] % tarfile.BLOCKSIZE) for m in members)


def crc(data):
    """CRC-32 as 8 hex digits (the manifest's digest)."""
    return manifest.data_digest(data)


class Segment:
    """One append-only staging tar of a job: samples go in whole, flushed before their rows are journaled."""

    def __init__(self, root, rel):
        self.rel = rel
        self.file = open(os.path.join(root, rel), "xb")
        self.length = 0
        self.samples = 0

    def write_sample(self, members):
        """Append [(name, data), ...]; returns the sample's offset."""
        offset = self.length
        for name, data in members:
            header = member_header(name, len(data))
            self.file.write(header)
            self.file.write(data)
            self.file.write(padding(len(data)))
            self.length += len(header) + len(data) + (-len(data) % tarfile.BLOCKSIZE)
        self.file.flush()  # the row that follows in the journal must find these bytes after a SIGKILL
        self.samples += 1
        return offset

    def close(self, finished=True):
        """End the archive (when finished) and close the file."""
        if finished:
            self.file.write(trailer(self.length))
        self.file.close()


class TarStaging:
    """A job's writer for the webdataset container (and for LMDB shard jobs): samples into staging segments."""

    def __init__(self, root, shard, shard_pairs, with_json=True, job_tars=False, remote=None):
        self.root = root
        self.remote = remote  # build the final tars on the Dask cluster (assemble)
        self.tag = manifest.shard_tag(*shard)
        # job_tars: this job assembles its own final tars when it ends (publish), from its own samples.
        self.job = shard[0] if job_tars else None
        # A whole run (or a job that makes its own tars) sees every pair of its tars in order, so it cuts its
        # segments where those tars start and assembly can link them; a shard job of a global-boundaries run
        # cannot know the global positions and cuts every S samples.
        self.aligned = shard[1] == 1 or job_tars
        self.shard_pairs = shard_pairs
        self.with_json = with_json
        self.open = {}        # split -> Segment
        self.positions = {}   # split -> position of the next pair in that split (whole runs)
        self.used = set()     # files the rows of this run point at
        self.next_number = 1 + max([_segment_number(p) for p in self._segments()], default=0)

    def _segments(self):
        """This job's staging segments on disk."""
        return glob.glob(os.path.join(self.root, manifest.PARTS, SEGMENT_GLOB.format(tag=self.tag)))

    def check(self, row, from_journal):
        """Whether the sample a prior row records is still where it says (headers; data CRCs for journal rows)."""
        if (row.get(manifest.STATE) or {}).get("at") is None and not self.with_json:
            # An LMDB shard job rerun after --merge: its pairs are in the databases now.
            from . import readers

            return readers.committed(self.root, row, from_journal,
                                   lambda db: readers.environment(os.path.join(self.root, db)))
        at = (row.get(manifest.STATE) or {}).get("at")
        if self.job is not None and isinstance(at, list) and at and job_of(at[0]) not in (None, self.job):
            # Another job's tar (of an earlier run with another job count): that job may rewrite or delete it
            # at any time, so its pair is made again here (the same bytes) rather than read from there.
            return False
        return sample_intact(self.root, row, from_journal)

    def put(self, row, reused=False):
        """Store a new pair's bytes (a reused pair's stay where they are); returns the rows to journal."""
        split = row.get("split")
        position = self.positions.get(split, 0)
        self.positions[split] = position + 1
        if reused:
            at = row[manifest.STATE].get("at")
            if at:  # (an LMDB pair merged earlier has none: it is in the databases)
                self.used.add(at[0])
            return [row]
        if PAYLOAD not in row:  # staged by the Dask worker that made it (stage_on_worker): only its place came
            self.used.add(row[manifest.STATE]["at"][0])
            return [row]
        members, dbs = sample_members(row, self.with_json)
        segment = self._segment(split, position)
        record_place(row, members, dbs, segment.rel, segment.write_sample(members))
        self.used.add(segment.rel)
        return [row]

    def _segment(self, split, position):
        """The open segment for split, cut at multiples of S (whole runs) or after S samples (shard jobs)."""
        segment = self.open.get(split)
        full = position % self.shard_pairs == 0 if self.aligned else segment is not None and \
            segment.samples >= self.shard_pairs
        if segment is None or full:
            if segment is not None:
                segment.close()
            rel = f"{manifest.PARTS}/{self.tag}.seg-{self.next_number:06d}.tar"
            self.next_number += 1
            segment = self.open[split] = Segment(self.root, rel)
        return segment

    def finish(self):
        """End every open segment; no row is pending."""
        for segment in self.open.values():
            segment.close()
        self.open.clear()
        return []

    def salvage(self):
        """After an interrupt: every sample's row was journaled as it was written; none is pending."""
        return []

    def publish(self, journal_path):
        """A job with its own tars, once its journal is complete: build them from its samples, point the rows at them.

        Called before the journal is flushed to disk and promoted to the job's part (manifest.ShardWriter): a job
        killed before then is run again, reusing its samples wherever they are (segments or these tars).
        """
        if self.job is None:
            return
        for path in glob.glob(os.path.join(self.root, manifest.PARTS, f".{self.tag}.journal-*.jsonl.tmp")):
            _remove(path)  # the rewrite of an earlier journal by a publish that was killed
        built = assemble(self.root, [journal_path], self.shard_pairs, name=job_namer(self.job), remote=self.remote)
        sweep_job(self.root, self.job, set(built))
        self.used = set(built)  # every staging segment is spent now: cleanup deletes them

    def cleanup(self):
        """After the job's part is final: delete this job's segments that no row points at."""
        for path in self._segments():
            if os.path.relpath(path, self.root).replace(os.sep, "/") not in self.used:
                _remove(path)

    def abandon(self):
        """Close segments after an interruption (their samples stay referenced by the journal)."""
        for segment in self.open.values():
            segment.close(finished=False)
        self.open.clear()


def sample_members(row, with_json=True):
    """([(member name, bytes)], [database or None]) of a new row's sample; takes the payload off the row."""
    payload = row.pop(PAYLOAD)
    members = [(name, data) for name, data, _ in payload]
    if with_json:
        members.append((f"{row['key']}.json", (manifest.dumps(public(row)) + "\n").encode("utf-8")))
    return members, [db for _, _, db in payload] + [None] * (len(members) - len(payload))


def record_place(row, members, dbs, rel, offset):
    """Note in a row's private state its sample's members and where they were written."""
    state = row[manifest.STATE]
    state["members"] = [[name, len(data), crc(data), db] for (name, data), db in zip(members, dbs)]
    state["at"] = [rel, offset]


_WORKER_SEGMENTS = {}  # (root, tag) -> (run id, Segment) of this process, shared by its threads
_WORKER_LOCK = threading.Lock()


def stage_on_worker(root, tag, run_id, row, with_json=True):
    """On a Dask worker: append a new row's sample to this process's own staging segment of job tag, and
    return the row with its place instead of its bytes (so no image travels to the run's process).

    A segment is ``parts/{tag}.seg-000000-w{hex}.tar``, one per worker process and run (run_id): samples are
    appended whole and flushed before the row is returned, so the journal never names a torn one, and a
    retried task only leaves an unnamed copy (deleted when the job ends).
    """
    members, dbs = sample_members(row, with_json)
    with _WORKER_LOCK:
        held = _WORKER_SEGMENTS.get((root, tag))
        if held is None or held[0] != run_id:
            if held is not None:
                held[1].close(finished=False)
            rel = f"{manifest.PARTS}/{tag}.seg-000000-w{uuid.uuid4().hex[:16]}.tar"
            held = _WORKER_SEGMENTS[(root, tag)] = (run_id, Segment(root, rel))
        segment = held[1]
        try:
            offset = segment.write_sample(members)
        except BaseException:  # the file may hold part of this sample: never append after it
            del _WORKER_SEGMENTS[(root, tag)]
            segment.close(finished=False)
            raise
    record_place(row, members, dbs, segment.rel, offset)
    return row


def _segment_number(path):
    """K of a 'shard-...seg-K.tar' path."""
    try:
        return int(path.rsplit(".seg-", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return 0


def sample_intact(root, row, from_journal):
    """Whether a row's sample is at its recorded place: exact member headers, data in the file, CRCs if asked."""
    state = row.get(manifest.STATE) or {}
    at, members = state.get("at"), state.get("members")
    if not at or not members:
        return False
    try:
        with open(paths.join(root, at[0], paths.TAR, what="_state.at"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = at[1]
            for name, n, digest, _ in members:
                header = member_header(name, n)
                if os.pread(f.fileno(), len(header), offset) != header or offset + len(header) + n > size:
                    return False
                offset += len(header)
                if from_journal and _range_crc(f.fileno(), offset, n) != digest:
                    return False
                offset += n + (-n % tarfile.BLOCKSIZE)
    except UntrustedDataset:
        raise
    except (OSError, TypeError, ValueError):
        return False
    return True


def _range_crc(fd, offset, size):
    """CRC-32 (8 hex digits) of size bytes of fd at offset."""
    value = 0
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 20), offset)
        if not chunk:
            break
        value = zlib.crc32(chunk, value)
        offset += len(chunk)
        size -= len(chunk)
    return f"{value:08x}"


def read_members(root, row):
    """[(name, bytes)] of a row's sample, read from its recorded place (for copying it into an LMDB)."""
    state = row[manifest.STATE]
    (rel, offset), out = state["at"], []
    with open(paths.join(root, rel, paths.TAR, what="_state.at"), "rb") as f:
        for name, n, _, _ in state["members"]:
            offset += len(member_header(name, n))
            data = os.pread(f.fileno(), n, offset)
            if len(data) != n:
                raise OSError(f"'{rel}' ends inside member '{name}'")
            out.append((name, data))
            offset += n + (-n % tarfile.BLOCKSIZE)
    return out


# ---------------------------------------------------------------- assembly


class _ShardBuild:
    """One final shard being assembled from its samples' byte ranges, in order, in constant memory.

    While the samples so far are one contiguous run of one file from its start (a whole run's staging
    segment, or the shard itself on a rerun) nothing is copied: the file may turn out to be the whole shard.
    From the first other sample on, the bytes are copied into a temporary file as they come.
    """

    def __init__(self, root, rel):
        self.root, self.rel = root, rel
        self.tmp = os.path.join(root, SHARDS, "." + os.path.basename(rel) + ".tmp")
        self.pending = None  # [file rel, start, length] not copied yet
        self.fd = None
        self.length = 0

    def add(self, rel, start, length):
        """Append a sample's bytes; returns its offset in the final shard."""
        offset, p = self.length, self.pending
        if self.fd is None and (start == 0 if p is None else (p[0] == rel and p[1] + p[2] == start)):
            if p is None:
                self.pending = [rel, start, length]
            else:
                p[2] += length
        else:
            self._spill()
            self._copy(rel, start, length)
        self.length += length
        return offset

    def _spill(self):
        """Open the temporary file and copy what is pending into it."""
        if self.fd is None:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if self.pending is not None:
                self._copy(*self.pending)
                self.pending = None

    def _copy(self, rel, start, length):
        """Append length bytes of file rel at start to the temporary file."""
        try:
            with open(paths.join(self.root, rel, paths.TAR, what="_state.at"), "rb") as src:
                _copy_range(src.fileno(), self.fd, start, length)
        except FileNotFoundError:
            raise MergeError(f"cannot merge: '{rel}', which holds samples of {self.rel}, is gone; "
                                      "run the shard that wrote it again") from None

    def finish(self):
        """End the shard; returns the move that puts it in place (_move), or None when it is in place already."""
        final = os.path.join(self.root, self.rel)
        if self.fd is None:
            source = paths.join(self.root, self.pending[0], paths.TAR, what="_state.at")
            try:
                whole = os.path.getsize(source) == self.length + len(trailer(self.length))
            except OSError:
                whole = False
            if whole and os.path.abspath(source) == os.path.abspath(final):
                return None  # a rerun changes nothing
            if whole:  # a whole run's segment that is exactly this shard: link it, no copy
                return ("link", source, final)
            self._spill()
        end = trailer(self.length)
        while end:
            end = end[os.write(self.fd, end):]
        os.close(self.fd)
        self.fd = None
        return ("replace", self.tmp, final)

    def abandon(self):
        """Drop the temporary file after a failure."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _remove(self.tmp)


def merged_rows(part_paths):
    """(row, part index) of every part, in manifest order."""
    streams = [_numbered(manifest.read_rows(path), i) for i, path in enumerate(part_paths)]
    return heapq.merge(*streams, key=lambda item: item[0]["source"])


def _numbered(rows, i):
    """(row, i) for each row."""
    for row in rows:
        yield row, i


def merge_assemble(root, part_paths, shard_pairs, remote=None):
    """--merge (or the end of a whole run): one tar sequence over the dataset; returns dataset.json's view."""
    built = assemble(root, part_paths, shard_pairs, remote=remote)
    _sweep(root, part_paths, set(built))
    return describe(built, shard_pairs)


def assemble(root, part_paths, shard_pairs, name=global_name, remote=None):
    """Build tars name(split, k) from the samples the parts point at (staged or in earlier tars), then rewrite
    the parts to point at them; returns the built tars' names, in order.

    The k-th tar of a split holds the parts' samples k*S .. k*S+S-1 of that split, in manifest order.
    remote(calls), when given, runs (fn, args, kwargs) calls elsewhere and yields their results in order (the
    Dask engine's run): each tar is then built by one such call (build_tar) on the cluster, from the shared
    output, and this process only plans them, renames them into place and rewrites the parts.
    """
    os.makedirs(os.path.join(root, SHARDS), exist_ok=True)
    temps = [os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".tmp") for p in part_paths]
    outs = [open(t, "w", encoding="utf-8") for t in temps]
    builds, moves, current, positions = [], [], {}, {}
    Build = _ShardBuild if remote is None else _Plan
    try:
        for row, i in merged_rows(part_paths):
            split = split_prefix(row.get("split"))
            position = positions.get(split, 0)
            positions[split] = position + 1
            rel = name(split, position // shard_pairs)
            build = current.get(split)
            if build is None or build.rel != rel:
                if build is not None:
                    moves.append(build.finish())
                build = current[split] = Build(root, rel)
                builds.append(build)
            state = row.get(manifest.STATE) or {}
            if not state.get("at") or not state.get("members"):
                raise MergeError(f"cannot merge: '{part_paths[i]}' has a row without its sample's place "
                                          f"({row.get('source')}); run that shard again")
            offset = build.add(state["at"][0], state["at"][1], sample_length(state["members"]))
            state["at"] = [rel, offset]
            row = {"source": row["source"], "shard": rel, **{k: v for k, v in row.items() if k != "shard"}}
            outs[i].write(manifest.dumps(row) + "\n")
        for f in outs:
            f.close()
        moves += [build.finish() for build in current.values()]
        if remote is not None:
            moves = list(remote((build_tar, (root, b.rel, b.ranges), {}) for b in builds))
    except BaseException:
        for f, t in zip(outs, temps):
            f.close()
            _remove(t)
        for build in builds:
            build.abandon()
        raise
    # Only now is anything replaced: every copy above read its sources (staged or earlier shards) first.
    for move in moves:
        _move(move)
    for tmp, path in zip(temps, part_paths):
        replace_if_changed(tmp, path)
    return [build.rel for build in builds]


class _Plan:
    """A tar to be built elsewhere (build_tar on a Dask worker): its samples' byte ranges, in order."""

    def __init__(self, root, rel):
        self.root, self.rel = root, rel
        self.ranges = []
        self.length = 0

    def add(self, rel, start, length):
        """Append a sample's bytes; returns its offset in the final tar."""
        offset = self.length
        self.ranges.append((rel, start, length))
        self.length += length
        return offset

    def finish(self):
        """Nothing to move yet: build_tar says what."""
        return None

    def abandon(self):
        """Nothing was written here."""


def build_tar(root, rel, ranges):
    """Build tar rel of root from [(file, start, length)] under its temporary name (on a Dask worker, next to
    the shared output); returns the move that puts it in place, as a tuple of paths (no bytes travel back)."""
    build = _ShardBuild(root, rel)
    try:
        for file_rel, start, length in ranges:
            build.add(file_rel, start, length)
        move = build.finish()
    except BaseException:
        build.abandon()
        raise
    if move is not None and move[0] == "replace":
        if same_bytes(move[1], move[2]):  # compared here, where the bytes are, not where the moves are made
            _remove(move[1])
            return None
        return ("rename",) + move[1:]
    return move


def _move(move):
    """Put a built tar in place: None (in place already), link, replace (unless unchanged) or rename."""
    if move is None:
        return
    kind, source, final = move
    if kind == "link":
        _link_into_place(source, final)
    elif kind == "replace":
        replace_if_changed(source, final)
    else:
        os.replace(source, final)


def _copy_range(src, dst, start, length):
    """Append length bytes of src at start to dst (in the kernel where it can: copy_file_range)."""
    copy = getattr(os, "copy_file_range", None)
    while length > 0:
        if copy is not None:
            try:
                n = copy(src, dst, min(length, 1 << 30), start)
            except OSError:
                copy = None
                continue
        else:
            chunk = os.pread(src, min(length, 1 << 20), start)
            n = os.write(dst, chunk) if chunk else 0
        if n <= 0:
            raise MergeError("cannot merge: a staged sample ends early; run its shard again")
        start += n
        length -= n


def _link_into_place(source, final):
    """Make final hold source's bytes: a hard link (the source is deleted later), or a rename where links fail."""
    tmp = os.path.join(os.path.dirname(final), "." + os.path.basename(final) + ".link.tmp")
    _remove(tmp)
    try:
        if os.path.samefile(source, final):  # linked by a run killed before its parts named it: in place
            return
    except OSError:
        pass
    try:
        os.link(source, tmp)
    except OSError:
        os.replace(source, final)
        return
    os.replace(tmp, final)


def _sweep(root, part_paths, kept):
    """Delete spent staging segments of the merged jobs and global-boundary tars this assembly did not produce.

    Per-job tars (shards/{split}-JJJJJ-KKKKKK.tar) are never swept here: only their own job replaces them.
    """
    for part in part_paths:
        tag = os.path.basename(part)[: -len(".jsonl")]
        for path in glob.glob(os.path.join(root, manifest.PARTS, SEGMENT_GLOB.format(tag=tag))):
            _remove(path)
    for path in glob.glob(os.path.join(root, SHARDS, "*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")):
        if GLOBAL_RE.fullmatch(os.path.basename(path)) and f"{SHARDS}/{os.path.basename(path)}" not in kept:
            _remove(path)


def sweep_job(root, index, kept):
    """Delete job index's own tars that its latest assembly did not produce (it had more samples before)."""
    for path in glob.glob(os.path.join(root, SHARDS, f"*-{index:05d}-[0-9][0-9][0-9][0-9][0-9][0-9].tar")):
        if JOB_RE.fullmatch(os.path.basename(path)) and f"{SHARDS}/{os.path.basename(path)}" not in kept:
            _remove(path)


def describe(shard_rels, shard_pairs):
    """dataset.json's view of the shards: per split, how many and a brace pattern for webdataset."""
    counts = {}
    for rel in shard_rels:
        split = os.path.basename(rel).rsplit("-", 1)[0]
        counts[split] = counts.get(split, 0) + 1
    shards = {}
    for split, n in counts.items():
        pattern = f"{SHARDS}/{split}-000000.tar" if n == 1 else f"{SHARDS}/{split}-{{000000..{n - 1:06d}}}.tar"
        shards[split] = {"count": n, "urls": pattern}
    return {"shard_pairs": shard_pairs, "shards": shards}


def describe_jobs(root, part_paths, shard_pairs, stored=None):
    """dataset.json's view of the tars each job of a job-boundaries run built, from the parts alone (no tar is read).

    Every row must point at its own job's tars (row ``shard`` and ``_state.at``), and every tar named must
    exist (on disk, or in stored: the names on object storage): otherwise a MergeError names the job to run again.
    """
    jobs = len(part_paths)
    names = {}  # split -> {job: [tar names in order]}
    for job, part in enumerate(part_paths):
        rerun = f"run --shard {job}/{jobs} again"
        for row in manifest.read_rows(part):
            rel, at = row.get("shard"), (row.get(manifest.STATE) or {}).get("at")
            if job_of(rel) != job or not isinstance(at, list) or not at or at[0] != rel:
                raise MergeError(f"cannot merge: '{part}' has a row outside job {job}'s own tars "
                                 f"({row.get('source')} in {rel or (at or [None])[0]}); {rerun} (a job of "
                                 "a release before save.tar_boundaries staged its tars for a global merge)")
            made = names.setdefault(split_prefix(row.get("split")), {}).setdefault(job, [])
            if not made or made[-1] != rel:
                made.append(rel)
    shards = {}
    for split in sorted(names):
        rels = [rel for job in sorted(names[split]) for rel in names[split][job]]
        for rel in rels:
            if not (rel in stored if stored is not None else os.path.isfile(os.path.join(root, rel))):
                raise MergeError(f"cannot merge: '{rel}' is gone; run --shard {job_of(rel)}/{jobs} again")
        shards[split] = {"count": len(rels), "urls": job_pattern(split, names[split], jobs) or rels}
    return {"shard_pairs": shard_pairs, "tar_boundaries": "job", "jobs": jobs, "shards": shards}


def job_pattern(split, per_job, jobs):
    """One brace pattern for the per-job tars {job: [names]} of split when it names exactly them, else None."""
    counts = {len(per_job.get(job, [])) for job in range(jobs)}
    if len(counts) != 1 or 0 in counts:
        return None
    (n,) = counts
    expected = [job_namer(job)(split, k) for job in range(jobs) for k in range(n)]
    if [rel for job in range(jobs) for rel in per_job[job]] != expected:
        return None
    job_part = f"{{{0:05d}..{jobs - 1:05d}}}"
    k_part = f"{0:06d}" if n == 1 else f"{{{0:06d}..{n - 1:06d}}}"
    return f"{SHARDS}/{split}-{job_part}-{k_part}.tar"
