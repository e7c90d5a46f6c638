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
        return
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
