"""OutputLock: the flock locks that keep two runs (or a run and a merge) out of one output.

Under OUTPUT/parts/: {tag}.lock is held exclusively by the job of shard tag ({tag}.lock.holder names it
meanwhile), count-N.lock shared by every job of an N-shard run, merge.lock while the dataset files are merged.
"""

import errno
import glob
import os
import re
import socket

from .errors import LockHeld
from .fsutil import remove_if_present as _remove
from .manifest import PARTS, shard_tag


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
            if other != count and is_locked(path):
                holders = [_holder(p) for p in glob.glob(os.path.join(self.parts, f"shard-*-of-{other:05d}.lock"))
                           if is_locked(p)]
                raise LockHeld(f"output '{os.path.dirname(self.parts)}' is in use by a run of {other} shard(s)"
                               f" ({', '.join(holders) or 'holder unknown'})")
        return self

    def runs_in_progress(self):
        """[(count, 'pid 1 on host h, ...')] of the runs writing into this output now (their count lock is held)."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.parts, "count-*.lock"))):
            count = int(re.search(r"count-(\d+)\.lock$", path).group(1))
            if is_locked(path):
                locks = sorted(glob.glob(os.path.join(self.parts, f"shard-*-of-{count:05d}.lock")))
                holders = [_holder(p) for p in locks if is_locked(p)]
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


def is_locked(path):
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
