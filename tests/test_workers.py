"""Worker processes (worker_pool): they never outlive a killed run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT

SCRIPT = """
import sys, time
from lowlight_gpu import worker_pool
pool = worker_pool.pool(2, sys.argv[1])
pids = [pool.submit(worker_pool.worker_ready).result() for _ in range(4)]
print(" ".join(map(str, sorted(set(pids)))), flush=True)
time.sleep(60)
"""


def _alive(pid):
    """Whether pid is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("method", ["fork", "loky"])
def test_workers_exit_when_their_parent_is_sigkilled(method):
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc here: a worker's liveness is read from /proc/PID/stat")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, method], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_in_threads_keeps_order_and_runs_one_worker_inline():
    import threading

    from lowlight_gpu import worker_pool

    def work(i):
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i, threading.current_thread().name

    calls = [(work, (i,), {}) for i in range(20)]
    many = list(worker_pool.in_threads(iter(calls), 3))
    assert [i for i, _ in many] == list(range(20))
    assert {name for _, name in many} <= {f"lowlight-gpu-worker_{k}" for k in range(3)}
    one = list(worker_pool.in_threads(iter(calls), 1))
    assert [i for i, _ in one] == list(range(20)) and {name for _, name in one} == {threading.current_thread().name}


def test_in_threads_stops_at_the_first_error():
    from lowlight_gpu import worker_pool

    done = []

    def work(i):
        if i == 5:
            raise OSError("disk gone")
        done.append(i)
        return i

    for workers in (1, 2):
        done.clear()
        with pytest.raises(OSError, match="disk gone"):
            list(worker_pool.in_threads(((work, (i,), {}) for i in range(100)), workers))
        assert len(done) < 20  # the rest of the inputs were never started
