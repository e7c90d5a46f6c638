"""Group commit of small images across threads: the CuPy backend's batcher.

Small images cost more in per-call overhead (copies, launches, stream
synchronisation, Python) than in kernel time.  While one thread's device pass
runs, the small images other threads submit queue up, and the next pass renders
all of them with one upload, one launch and one download (``cupy_backend``'s
batch pass over batch.cuh's job table).  A lone image waits for nothing.
"""

import threading

MAX_BATCH_JOBS = 4096        # output images per batched launch (the grid's y extent allows 65535)


class Request:
    """One thread's small image and its jobs, waiting for (or leading) a batched device pass."""

    def __init__(self, rgb, jobs):
        self.rgb = rgb
        self.jobs = jobs
        self.device_values = rgb.size * (1 + len(jobs))  # input plus outputs on the device
        self.outputs = None
        self.error = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when this request's thread must lead the next pass

    def result(self):
        """The rendered images, or the pass's exception raised in this thread."""
        if self.error is not None:
            raise self.error
        return self.outputs


class Batcher:
    """Group commit for small images: one thread runs a device pass while the others queue.

    The thread that finds no pass running leads: it takes the queue (its own request
    first), renders it in one batch, hands the lead to the oldest request still queued,
    and wakes the rest.  No thread ever waits for a batch to fill, so a lone image is
    rendered at once, and under load each pass carries whatever queued meanwhile.
    """

    def __init__(self, render_batch):
        self._render_batch = render_batch  # fills each request's outputs (or error) of one batch
        self._lock = threading.Lock()
        self._queue = []
        self._running = False

    def render(self, request, max_values, max_jobs=MAX_BATCH_JOBS):
        """Render request's jobs in a batch of at most max_values device values (or alone); returns its images."""
        with self._lock:
            self._queue.append(request)
            lead = not self._running
            self._running = True
        if not lead:
            request.wake.wait()
            if request.done:
                return request.result()
        # This thread leads; its request is first in the queue (new, or handed the lead).
        batch = self._take(max_values, max_jobs)
        try:
            self._render_batch(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # not done: that thread leads the next pass
                else:
                    self._running = False
            for req in batch:
                if req.outputs is None and req.error is None:  # the pass was interrupted (KeyboardInterrupt)
                    req.error = RuntimeError("the batched GPU pass rendering this image was interrupted")
                req.done = True
                req.wake.set()
        return request.result()

    def _take(self, max_values, max_jobs):
        """Remove and return the queue's head: as many requests as fit in one batch (at least one)."""
        with self._lock:
            values = jobs = count = 0
            for req in self._queue:
                values += req.device_values
                jobs += len(req.jobs)
                if count and (values > max_values or jobs > max_jobs):
                    break
                count += 1
            batch, self._queue = self._queue[:count], self._queue[count:]
        return batch
