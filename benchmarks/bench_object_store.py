"""Requests to the object store per pair, and wall time against a local folder, on a real S3 server.

Starts SeaweedFS (tests/s3_server.py) on loopback, makes a folder of small photos, and runs the CLI in this
process (workers=1: every request is made here, where a botocore hook counts them by operation) for:

* a whole run into a bucket (loose files, then webdataset tars), and the same into a local folder;
* N shard jobs into a bucket, then --merge;
* a no-op rerun of the finished whole run (what a requeued job costs), and a --verify of 20 rows.

It prints a table (requests per pair by kind, wall time) and, with --write, puts it into docs/cluster.md
between the markers of "Requests to the object store".  Loopback S3 has no network latency: the counts are
what carries over to a cloud store; the times are this machine's and say how much the client costs.

    python benchmarks/bench_object_store.py [--pairs 200] [--jobs 4] [--write]
"""

import argparse
import collections
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "cluster.md"
BEGIN, END = "<!-- bench_object_store: begin -->", "<!-- bench_object_store: end -->"


def count_requests(counter):
    """Make every fsspec S3 filesystem the package opens count its HTTP requests into counter (by operation)."""
    from lowlight_gpu import storage

    made = storage.filesystem

    def counting(url, options=None):
        fs = made(url, options)
        if not getattr(fs, "_counted", False):
            fs.set_session()
            fs.s3.meta.events.register("before-send.s3", lambda request, **kw: _note(counter, request))
            fs._counted = True
        return fs

    storage.filesystem = counting


def _note(counter, request):
    """Count one request by its HTTP method and a coarse kind (PUT object, GET range, LIST, ...)."""
    method = request.method
    url = request.url
    if method == "GET" and ("list-type=2" in url or "?prefix" in url or "&prefix" in url or "delimiter" in url):
        kind = "LIST"
    elif method == "GET":
        kind = "GET"
    else:
        kind = method  # PUT, HEAD, DELETE, POST (multipart)
    counter[kind] += 1


def cli(*args):
    """Run the CLI in this process (without the end-of-run report: it has its own row); (exit code, seconds)."""
    from lowlight_gpu import cli as command

    command._end_report = lambda config: None
    start = time.perf_counter()
    code = command.main(["--set", "backend=numpy", "--set", "workers=1", "--quiet", *map(str, args)])
    return code, time.perf_counter() - start


def measure(label, counter, pairs, *args):
    """One row: requests by kind per pair and the wall time."""
    counter.clear()
    code, seconds = cli(*args)
    if code not in (0, 3):
        raise SystemExit(f"{label}: exit {code}")
    return {"label": label, "requests": dict(counter), "total": sum(counter.values()), "seconds": seconds,
            "pairs": pairs}


def table(rows, pairs):
    kinds = ["PUT", "GET", "HEAD", "LIST", "DELETE", "POST"]
    lines = ["| what (%d pairs) | %s | all | per pair | wall s |" % (pairs, " | ".join(kinds)),
             "|---|" + "---|" * (len(kinds) + 3)]
    for r in rows:
        cells = [str(r["requests"].get(k, 0)) for k in kinds]
        per = f"{r['total'] / r['pairs']:.2f}" if r["pairs"] else "-"
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['total']} | {per} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--write", action="store_true", help="put the table into docs/cluster.md")
    args = ap.parse_args()

    from s3_server import S3Server
    from conftest import write_images

    work = Path(tempfile.mkdtemp(prefix="bench-object-store-"))
    server = S3Server().start()
    try:
        os.environ.update(server.env)
        counter = collections.Counter()
        count_requests(counter)
        photos = work / "photos"
        write_images(photos, {f"d{i % 10}/p{i:05d}.png": (96, 64) for i in range(args.pairs)})
        n = args.pairs
        rows = []
        local = [cli("--set", f"input={photos}", "--set", f"output={work / f'local{i}'}")[1] for i in range(3)]
        rows.append({"label": "whole run, local folder (median of 3)", "requests": {}, "total": 0,
                     "seconds": statistics.median(local), "pairs": n})
        bucket = server.bucket("bench")
        whole = f"s3://{bucket}/whole"
        rows.append(measure("whole run, files, into the bucket", counter, n,
                            "--set", f"input={photos}", "--set", f"output={whole}"))
        rows.append(measure("no-op rerun of that run (every pair checked)", counter, n,
                            "--set", f"input={photos}", "--set", f"output={whole}"))
        rows.append(measure("--verify 20 of its rows", counter, 20,
                            "--set", f"input={photos}", "--set", f"output={whole}", "--verify", "20"))
        rows.append(measure("--report (the end-of-run report: a sample of rows read back)", counter, None,
                            "--set", f"input={photos}", "--set", f"output={whole}", "--report"))
        tars = f"s3://{bucket}/tars"
        rows.append(measure("whole run, webdataset (shard_pairs 50), into the bucket", counter, n,
                            "--set", f"input={photos}", "--set", f"output={tars}",
                            "--set", "save.container=webdataset", "--set", "save.shard_pairs=50"))
        sharded = f"s3://{bucket}/sharded"
        for i in range(args.jobs):
            rows.append(measure(f"shard job {i}/{args.jobs}, files", counter, None,
                                "--set", f"input={photos}", "--set", f"output={sharded}",
                                "--shard", f"{i}/{args.jobs}"))
        rows.append(measure(f"--merge of the {args.jobs} jobs", counter, n,
                            "--set", f"input={photos}", "--set", f"output={sharded}", "--merge"))
        for r in rows:
            r["pairs"] = r["pairs"] or 0
        text = table(rows, n)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    out = (f"{BEGIN}\nMeasured by `python benchmarks/bench_object_store.py --pairs {args.pairs} --jobs {args.jobs}` "
           f"on {machine} (SeaweedFS on loopback, CPU backend, workers=1; rows without a per-pair figure count what one "
           f"command made):\n\n{text}\n{END}")
    print(out)
    if args.write:
        doc = DOC.read_text()
        if BEGIN in doc:
            doc = doc[:doc.index(BEGIN)] + out + doc[doc.index(END) + len(END):]
        else:
            doc += "\n" + out + "\n"
        DOC.write_text(doc)


if __name__ == "__main__":
    main()
