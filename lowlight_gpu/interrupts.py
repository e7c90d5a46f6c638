"""SIGINT and SIGTERM: both stop a run the same way, and never in the middle of storing one pair.

The command line installs ``handle`` for both signals (``installed``).  It raises KeyboardInterrupt for
SIGINT and Terminated (a KeyboardInterrupt) for SIGTERM, which SLURM sends on a time-out or a preemption,
so every ``except KeyboardInterrupt`` path (commit what is done, keep the journal) serves both.  Inside
``deferred()`` -- the run's loop over pairs, a pair going into an LMDB transaction, a commit and its journal
rows -- the signal only takes note; the exception is raised at the loop's next ``check()`` (after the pair
in hand is stored) or when the block ends.  So an interrupted run never holds half a pair in an open
transaction, and the exception never lands in the middle of a worker's render.  A second signal while one is pending raises at once: a user who presses Ctrl-C twice means it.
"""

import contextlib
import signal
import threading

SIGNALS = ("SIGINT", "SIGTERM")
_state = {"depth": 0, "pending": None}


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as for Ctrl-C (the CLI exits 143 instead of 130)."""


def handle(signum, frame):
    """The signal handler: raise now, or at the end of the current deferred() block."""
    exc = Terminated() if signum == getattr(signal, "SIGTERM", None) else KeyboardInterrupt()
    if _state["depth"] and _state["pending"] is None:
        _state["pending"] = exc
        return
    _state["pending"] = None
    raise exc


def check():
    """Raise the interrupt a deferred() block has noted, if any (call where stopping is safe)."""
    exc, _state["pending"] = _state["pending"], None
    if exc is not None:
        raise exc


@contextlib.contextmanager
def deferred():
    """A block that an interrupt does not cut: a signal within it is raised when it ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            exc, _state["pending"] = _state["pending"], None
            raise exc


@contextlib.contextmanager
def installed():
    """handle() for SIGINT and SIGTERM while the block runs (main thread only), the earlier handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = [getattr(signal, name) for name in SIGNALS if hasattr(signal, name)]
    previous = {n: signal.signal(n, handle) for n in numbers}
    try:
        yield
    finally:
        for n, old in previous.items():
            signal.signal(n, old)
