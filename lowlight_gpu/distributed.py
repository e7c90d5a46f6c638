"""distributed.engine: dask -- run the pipeline's work items on a Dask cluster.

Only cli._engine() imports this module, and only when the config asks for
Dask, so a default run never imports dask.  Work items are
``(make_pair, (source, prior row, context), {})`` calls: paths and small
dicts, never pixels.  Every worker reads its source and writes its outputs
itself, so every machine must see ``input`` and ``output`` under the same
absolute paths (a shared filesystem; the pipeline makes them absolute).
"""

import collections
import contextlib
import functools
import logging
import warnings

from . import fsutil
from .errors import ConfigError

MISSING_EXTRA = "distributed.engine: dask needs the dask extra: pip install -e '.[dask]'"

# A task that raises runs again up to RETRIES times (a worker short of memory, a flaky mount), and Dask
# itself reschedules one whose worker died (a preempted node).  Both are safe: a pair's outputs are a pure
# function of its source and config, and are written atomically.
RETRIES = 2

# Tasks in flight per worker thread: enough to keep every thread busy while the oldest task, whose
# result must be yielded first, is still running.
IN_FLIGHT_PER_THREAD = 4


def import_distributed():
    """The dask.distributed module, or a ConfigError naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(MISSING_EXTRA) from None
    return distributed


class DaskEngine:
    """Spreads work items over the Dask scheduler at address, or over a LocalCluster started for each run."""

    def __init__(self, address=None, connect_timeout=30, **cluster_options):
        self._dd = import_distributed()  # before anything is written: the CLI builds the engine first
        self.address = address
        self.connect_timeout = connect_timeout
        self.cluster_options = cluster_options
        # Connecting now turns an unreachable scheduler into a one-line config error, before any write.
        self._client = self._connect() if address is not None else None

    def _connect(self):
        """A Client of the scheduler at self.address; ConfigError when it cannot be reached."""
        try:
            return self._dd.Client(self.address, timeout=self.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConfigError(f"distributed.address: cannot reach the Dask scheduler at '{self.address}' "
                              f"({reason}); start it or set distributed.address: null for a LocalCluster") from None

    def run(self, calls, workers):
        """Yield the outcome of each (fn, args, kwargs) call, computed on the cluster, in call order."""
        with self._session(workers) as client:
            yield from ordered_results(client, calls, functools.partial(_window, client, workers))
            if self.address is not None:
                # Remote workers wrote the outputs: flush their page caches before the shard's part (which
                # later runs trust on sizes alone) is promoted on this machine.
                _run_everywhere(client, fsutil.flush_to_disk)

    @contextlib.contextmanager
    def _session(self, workers):
        """A Client for one run: of the configured scheduler, or of a loopback LocalCluster closed afterwards."""
        if self.address is None:
            with warnings.catch_warnings():
                # Without a dashboard the scheduler still serves /health on loopback, first trying port 8787;
                # another cluster holding that port is not the user's concern.
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                cluster = self._local_cluster(workers)
            with cluster, self._dd.Client(cluster) as client:
                yield client
            return
        client, self._client = self._client or self._connect(), None
        try:
            yield client
        finally:
            client.close()

    def _local_cluster(self, workers):
        """A LocalCluster of `workers` single-threaded processes on loopback, with no dashboard."""
        options = dict(
            n_workers=workers, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
            # Results are small rows, so Dask holds no data worth spilling; a per-process memory cap would
            # only kill a worker on one large photo that a local thread handles fine.
            memory_limit=0,
        )
        options.update(self.cluster_options)
        if not options["processes"] and "host" not in self.cluster_options:
            del options["host"]  # in-process workers talk over inproc://, which takes no host
        return self._dd.LocalCluster(**options)

    def close(self):
        """Close a scheduler connection opened by the constructor and not used by a run."""
        if self._client is not None:
            self._client.close()
            self._client = None


def ordered_results(client, calls, window):
    """Submit calls with at most window() in flight and yield their results in submission order.

    Why client.submit and not joblib's dask backend: the pipeline writes each row to its journal in source
    order, so results must come back in order, and a scan of millions of files must not be submitted at
    once.  A deque of futures waited on oldest-first gives both with nothing hidden: memory is bounded by
    the window (futures, then small rows), the order is the submission order, and each task gets
    RETRIES.  window() is asked again after every window's worth of submissions, so an adaptive cluster
    that grows (dask-jobqueue) gets more tasks in flight.
    """
    pending = collections.deque()
    limit = window()
    submitted = 0
    try:
        for func, args, kwargs in calls:
            if kwargs:  # never let a work item's keyword clash with one of submit's own
                func = functools.partial(func, **kwargs)
            pending.append(client.submit(func, *args, pure=False, retries=RETRIES))
            submitted += 1
            if submitted % limit == 0:
                limit = window()
            while len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        if pending:  # stopped early: do not leave the cluster working for nobody
            with contextlib.suppress(Exception):
                client.cancel(list(pending))


def _window(client, workers):
    """How many tasks to keep in flight: IN_FLIGHT_PER_THREAD per worker thread the cluster has now."""
    try:
        threads = sum(client.nthreads().values())
    except Exception:  # noqa: BLE001 - a scheduler hiccup only costs the estimate
        threads = 0
    return IN_FLIGHT_PER_THREAD * max(threads, workers, 1)


def _run_everywhere(client, func):
    """Run func on every worker, ignoring workers that fail or left."""
    try:
        client.run(func, on_error="ignore")
    except TypeError:  # distributed before on_error
        with contextlib.suppress(Exception):
            client.run(func)
    except Exception:  # noqa: BLE001 - the barrier is best effort: a dead worker has nothing left to flush
        pass
