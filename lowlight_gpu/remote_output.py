"""A run whose output is object storage: a local work folder for its small files, and the order of commits.

The run's machinery is the local one (manifest.py, merging.py, containers/): it works in a fresh local
**work folder** that mirrors the output's ``parts/`` (run.json, done-markers, the parts and journals this
job reads), while the pairs' images go straight to the bucket, one PUT per file, from the workers.  What
makes the bucket as safe to resume as a local folder, without a rename:

* **One PUT per object.**  An object is whole or absent; a killed multipart upload leaves nothing.
* **Journal pieces are the commit.**  A pair's row is journaled locally after its images were PUT, and the
  new journal lines go up as a piece, ``parts/{tag}.journal-K.jsonl.pNNNNNN``, every few seconds and when
  the run stops; a resumed job concatenates the pieces it finds.  A pair whose images went up but whose row
  did not is redone (its PUTs give the same bytes); a journal row's images are checked with their CRC-32
  on resume, so an object that is not the recorded bytes is redone too.
* **Done-marker last.**  A finished shard uploads its part, its errors part and its tars, deletes its journal
  pieces and staging tars, and only then its done-marker.  ``--merge`` reads parts only behind done-markers.
* **Locks.**  ``parts/{tag}.lock`` is created with a conditional PUT (``If-None-Match``) where the store has it,
  holds the holder's host, pid and a heartbeat refreshed every minute, and is deleted at the end.  A lock is
  stale when its holder's process is gone (same host) or its heartbeat is older than ``LEASE_SECONDS``.

Nothing of ``storage_options`` is written: run.json, done-markers and rows hold no option.
"""

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time

from . import manifest, paths, storage
from .errors import LockHeld

PIECE_SECONDS = 1.0  # at most this much of a job's finished work is redone after a SIGKILL (plus a pair)
PIECE_ROWS = 256
HEARTBEAT_SECONDS = 60.0
LEASE_SECONDS = 600.0  # a lock whose holder is on another host and silent this long is taken over
_PIECE_RE = re.compile(r"^(shard-\d+-of-\d+\.journal-\d+\.jsonl)\.p(\d+)$")
MERGED_FILES = ("manifest.jsonl", "errors.jsonl", "dataset.json")


def is_remote(config):
    """Whether config's output is on object storage."""
    return storage.is_url(config.output)


def work_folder():
    """A fresh local folder for one command's mirror of the output's small files."""
    base = os.environ.get("LOWLIGHT_GPU_WORK") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix="lowlight-gpu-work-", dir=base)


class Job:
    """One command (a shard job, a whole run, a merge) on an object-storage output."""

    def __init__(self, url, options=None):
        self.url = url.rstrip("/")
        self.store = storage.Location(self.url, options)
        self.work = work_folder()
        self.parts = os.path.join(self.work, manifest.PARTS)
        os.makedirs(self.parts, exist_ok=True)
        self.lock_rel = None
        self.fetched = {}  # rel -> (size, mtime_ns) of the downloaded copy: unchanged files are not sent back
        self._beat = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ reading the bucket into the work folder

    def fetch_record(self):
        """Download run.json and every done-marker (what the checks before a run read)."""
        listed = self.store.list(manifest.PARTS)
        for rel in listed:
            name = rel.rsplit("/", 1)[-1]
            if name == manifest.RUN_FILE or name.endswith(".done"):
                self._get(rel)
        return listed

    def fetch_parts(self, shard=None, tars=False):
        """Download the parts, errors parts and journal pieces a run of shard reads (every part: shard None).

        tars: also the tar files the parts point at (a webdataset job checks and reassembles its own samples).
        """
        listed = self.store.list(manifest.PARTS)
        pieces = {}
        for rel in sorted(listed):
            name = rel.rsplit("/", 1)[-1]
            m = _PIECE_RE.match(name)
            if m:
                if manifest.may_hold(manifest.file_shard(name), shard):
                    pieces.setdefault(m.group(1), []).append(rel)
                continue
            if name.endswith(".jsonl") and ".journal-" not in name and \
                    manifest.may_hold(manifest.file_shard(name), shard):
                self._get(rel)
        data = self.store.read_many([rel for rels in pieces.values() for rel in rels])
        for journal, rels in pieces.items():
            with open(os.path.join(self.parts, journal), "wb") as out:
                for rel in sorted(rels, key=lambda r: int(_PIECE_RE.match(r.rsplit("/", 1)[-1]).group(2))):
                    out.write(data[rel])
        if tars:
            self._fetch_tars(shard, listed)

    def _fetch_tars(self, shard, listed):
        """Download the tars this shard's parts and journals point at (its own share of the dataset)."""
        wanted = set()
        for path in manifest.prior_parts(self.work, shard)[0]:
            for row in manifest.read_rows(path):
                at = (row.get(manifest.STATE) or {}).get("at")
                if isinstance(at, list) and at and isinstance(at[0], str):
                    wanted.add(at[0])
        have = set(listed) | set(self.store.list("shards")) if any(r.startswith("shards/") for r in wanted) \
            else set(listed)
        for rel in sorted(wanted):
            if rel in have:
                self._get(rel)

    def _get(self, rel):
        """Download one object to the same relative path in the work folder.

        rel comes from a listing or a part's row (data from whoever wrote the bucket): one that would leave the
        work folder is not fetched, and the checks the run makes next (manifest.check_parts) name it.
        """
        if paths.problem(rel, paths.SOURCE):
            return
        local = os.path.join(self.work, *rel.split("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        self.store.download(rel, local)
        st = os.stat(local)
        self.fetched[rel] = (st.st_size, st.st_mtime_ns)

    # ------------------------------------------------------------ locks

    def acquire(self, index, count):
        """Take parts/{tag}.lock on the bucket, or raise LockHeld naming its live holder."""
        rel = f"{manifest.PARTS}/{manifest.shard_tag(index, count)}.lock"
        body = self._lock_body()
        if not self.store.create_exclusive(rel, body):
            holder = self._holder(rel)
            if holder is not None and _alive(holder):
                raise LockHeld(f"output '{self.url}' is in use: shard {index}/{count} is being made by "
                               f"pid {holder.get('pid')} on host {holder.get('host')} (heartbeat "
                               f"{time.time() - float(holder.get('beat', 0)):.0f} s ago; a holder silent for "
                               f"{LEASE_SECONDS:.0f} s is taken over)")
            self.store.remove(rel)  # its holder is gone: take it over
            if not self.store.create_exclusive(rel, body):
                raise LockHeld(f"output '{self.url}' is in use: shard {index}/{count} was just taken by another job")
        self.lock_rel = rel
        self._beat = threading.Thread(target=self._heartbeat, name="lowlight-gpu-lock", daemon=True)
        self._beat.start()
        return self

    def _lock_body(self):
        return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()}) + "\n").encode()

    def _holder(self, rel):
        try:
            body = json.loads(self.store.read(rel))
            return body if isinstance(body, dict) else {}
        except (FileNotFoundError, ValueError):
            return None

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.store.write(self.lock_rel, self._lock_body())
            except OSError:  # a missed beat: the next one may pass; the lease is ten beats long
                pass

    def live_locks(self):
        """['shard 3/8: pid 1 on host h', ...] of the shard locks on the bucket whose holders are alive."""
        found = []
        for rel in sorted(self.store.list(manifest.PARTS)):
            name = rel.rsplit("/", 1)[-1]
            if name.endswith(".lock"):
                holder = self._holder(rel)
                tag = manifest.file_shard(name)
                if holder is not None and tag and _alive(holder):
                    found.append(f"shard {tag[0]}/{tag[1]}: pid {holder.get('pid')} on host {holder.get('host')}")
        return found

    # ------------------------------------------------------------ committing

    def push_record(self):
        """Create parts/run.json on the bucket from the work folder's, unless a job already did; True if ours won."""
        local = os.path.join(self.parts, manifest.RUN_FILE)
        with open(local, "rb") as f:
            body = f.read()
        rel = f"{manifest.PARTS}/{manifest.RUN_FILE}"
        if self.store.create_exclusive(rel, body):
            return True
        self._get(rel)  # another job's record wins, as on a local disk; the caller checks it again
        return False

    def journal_writer(self, index, count, staging=None):
        """A manifest.ShardWriter whose journal lines go up to the bucket in pieces; staging, a container's
        writer (tars.TarStaging), has its full staging tars sent before the rows that point at them."""
        return PieceWriter(self, index, count, staging)

    def commit_shard(self, index, count):
        """Upload a finished shard: its tars, part and errors part; drop its pieces, staging tars and tars it no
        longer has; its done-marker last."""
        tag = manifest.shard_tag(index, count)
        mine = _tar_pattern(index, count)
        tars = [rel for rel in self.local_tars() if mine.search(rel)]
        for rel in tars:
            self._put(rel)
        for rel in self.store.list("shards"):
            if mine.search(rel) and rel not in tars:
                self.store.remove(rel)
        for name in (f"{tag}.jsonl", f"{tag}.errors.jsonl"):
            self._put(f"{manifest.PARTS}/{name}")
        for rel in self.store.list(manifest.PARTS):
            name = rel.rsplit("/", 1)[-1]
            if name.startswith(f"{tag}.journal-") or name.startswith(f"{tag}.seg-"):
                self.store.remove(rel)
        self.store.upload(os.path.join(self.parts, f"{tag}.done"), f"{manifest.PARTS}/{tag}.done")

    def commit_merge(self):
        """Upload what a merge wrote outside parts/ and shards/ (meta_info files), then manifest.jsonl,
        errors.jsonl and dataset.json, last."""
        others = []
        for folder, dirs, files in os.walk(self.work):
            rel_folder = os.path.relpath(folder, self.work).replace(os.sep, "/")
            if rel_folder == ".":
                dirs[:] = [d for d in dirs if d not in (manifest.PARTS, "shards") and not d.startswith(".")]
            for name in files:
                rel = name if rel_folder == "." else f"{rel_folder}/{name}"
                if not name.startswith(".") and rel not in MERGED_FILES:
                    others.append(rel)
        for rel in sorted(others) + list(MERGED_FILES):
            if os.path.isfile(os.path.join(self.work, *rel.split("/"))):
                self._put(rel)

    def _put(self, rel):
        """Upload the work folder's file rel, unless it is the copy downloaded from the bucket, unchanged."""
        local = os.path.join(self.work, *rel.split("/"))
        st = os.stat(local)
        if self.fetched.get(rel) != (st.st_size, st.st_mtime_ns):
            self.store.upload(local, rel)

    @contextlib.contextmanager
    def speaking_of_url(self):
        """Messages of errors raised inside name the bucket's URL, not the local work folder."""
        try:
            yield
        except (ValueError, LockHeld, OSError) as exc:  # ConfigError, MergeError, UntrustedDataset are ValueErrors
            if exc.args and isinstance(exc.args[0], str) and self.work in exc.args[0]:
                exc.args = (exc.args[0].replace(self.work, self.url),) + exc.args[1:]
            if isinstance(exc, OSError) and isinstance(exc.strerror, str) and self.work in exc.strerror:
                exc.strerror = exc.strerror.replace(self.work, self.url)
            if isinstance(exc, OSError) and isinstance(exc.filename, str) and self.work in exc.filename:
                exc.filename = exc.filename.replace(self.work, self.url)
            raise

    def local_tars(self):
        """Relative paths of the final tars in the work folder's shards/."""
        folder = os.path.join(self.work, "shards")
        if not os.path.isdir(folder):
            return []
        return sorted(f"shards/{n}" for n in os.listdir(folder) if n.endswith(".tar") and not n.startswith("."))

    def close(self):
        """Release the lock (if held) and delete the work folder."""
        self._stop.set()
        if self._beat is not None:  # a beat in flight must not put the lock back after it is removed
            self._beat.join(timeout=30)
        if self.lock_rel is not None:
            try:
                self.store.remove(self.lock_rel)
            except OSError:  # it goes stale on its own
                pass
            self.lock_rel = None
        shutil.rmtree(self.work, ignore_errors=True)


class PieceWriter(manifest.ShardWriter):
    """ShardWriter that sends its new journal lines to the bucket as numbered pieces."""

    def __init__(self, job, index, count, staging=None):
        super().__init__(job.work, index, count)
        self.job = job
        self.staging = staging
        self.segments_sent = {rel for rel in job.fetched if ".seg-" in rel}  # downloaded: on the bucket already
        self.sent = 0           # bytes of the local journal already sent
        self.piece = 0
        self.last = time.monotonic()
        self.unsent = 0

    def add_row(self, row):
        super().add_row(row)
        self.unsent += 1
        if self.unsent >= PIECE_ROWS or time.monotonic() - self.last >= PIECE_SECONDS:
            self.send()

    def send(self):
        """Upload the journal lines written since the last piece (nothing when there are none)."""
        self.rows.flush()
        with open(self.journal_path, "rb") as f:
            f.seek(self.sent)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # whole lines only
        if cut:
            self._send_segments()
            self.piece += 1
            name = f"{os.path.basename(self.journal_path)}.p{self.piece:06d}"
            self.job.store.write(f"{manifest.PARTS}/{name}", data[:cut])
            self.sent += cut
        self.unsent = 0
        self.last = time.monotonic()

    def _send_segments(self):
        """Upload this job's closed staging tars not sent yet (an open one is still growing)."""
        if self.staging is None:
            return
        growing = {seg.rel for seg in getattr(self.staging, "open", {}).values()}
        for path in sorted(glob.glob(os.path.join(self.job.parts, f"{self.tag}.seg-*.tar"))):
            rel = f"{manifest.PARTS}/{os.path.basename(path)}"
            if rel not in growing and rel not in self.segments_sent:
                self.job.store.upload(path, rel)
                self.segments_sent.add(rel)

    def abandon(self):
        try:
            if not self.rows.closed:
                self.send()
        except OSError:  # the bucket is unreachable: the rows are redone on resume
            pass
        super().abandon()


def _tar_pattern(index, count):
    """What the final tars of shard index/count are named like: split-NNNNNN.tar (a whole run), else
    split-IIIII-NNNNNN.tar (the job's own tars)."""
    if count == 1:
        return re.compile(r"^shards/[^/]+\.tar$")
    return re.compile(rf"^shards/[A-Za-z0-9_-]+-{index:05d}-\d{{6}}\.tar$")


def _alive(holder):
    """Whether a lock's holder may still run: its process exists (same host), or its heartbeat is recent."""
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid")), 0)
        except (ProcessLookupError, ValueError, TypeError):
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - float(holder.get("beat", 0)) < LEASE_SECONDS
    except (TypeError, ValueError):
        return False
