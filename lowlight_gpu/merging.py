"""Merging finished shards into manifest.jsonl, errors.jsonl and dataset.json; which shard counts may mix.

The done-markers (parts/{tag}.done) say which shards are finished and with which codecs; merge() streams
their sorted parts into the dataset files, and other_count_refusal() keeps a job out of an output that
holds finished shards of another count (no merge could build that dataset).
"""

import glob
import heapq
import json
import os
import re

from . import locks
from .errors import MergeError
from .fsutil import replace_if_changed, write_atomic
from .fsutil import remove_if_present as _remove
from .manifest import PARTS, STATE, check_folders, check_part, dumps, read_rows, shard_tag

_TAG_RE = re.compile(r"shard-(\d+)-of-(\d+)\.done$")


def done_markers(out_root):
    """{count: {index: marker}} of the done-markers under OUTPUT/parts."""
    found = {}
    for path in glob.glob(os.path.join(out_root, PARTS, "shard-*.done")):
        m = _TAG_RE.search(path)
        with open(path, encoding="utf-8") as f:
            try:
                marker = json.loads(f.read())
            except ValueError:
                marker = None
        if not isinstance(marker, dict):
            raise MergeError(f"cannot merge: done-marker '{path}' is damaged (not a JSON object); "
                             "run that shard again")
        found.setdefault(int(m.group(2)), {})[int(m.group(1))] = marker
    return found


def _done_files(out_root, count, indexes=None):
    """'parts/shard-00000-of-00002.done, ...' of count's done-markers (the first three, then how many more)."""
    names = [f"{PARTS}/{shard_tag(i, count)}.done" for i in sorted(indexes if indexes is not None
                                                                    else done_markers(out_root).get(count, {}))]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def runs_of(count):
    """'a whole run' for one shard, else 'a 3-shard run'."""
    return "a whole run" if count == 1 else f"a {count}-shard run"


def other_count_refusal(out_root, index, count):
    """Why a job of shard index/count must not write into out_root (one line), or None when it may.

    An output holding finished shards of another count (a whole run's done-marker counts as a count of 1)
    belongs to that run: mixing the two would give a dataset no merge can build.  A killed run leaves no
    done-marker, so changing the count after one stays allowed (its journals are reused).
    """
    # A run of that count still in progress is refused by its lock instead (exit 5: wait for it).
    others = {n: m for n, m in done_markers(out_root).items() if n != count and not _count_in_progress(out_root, n)}
    if not others:
        return None
    this = f"this job is --shard {index}/{count}" if count > 1 else "this run is a whole run (no --shard)"
    held = "; ".join(f"{runs_of(n)} ({_done_files(out_root, n, m)})" for n, m in sorted(others.items()))
    first = min(others)
    same = f"with --shard I/{first} as they were (then --merge)" if first > 1 else "without --shard, as it was"
    goal = f"{count} shards" if count > 1 else "a whole run"
    return (f"output '{out_root}' holds finished shards of {held}, and {this}; run {same}, or delete "
            f"{PARTS}/shard-*-of-{first:05d}.done to go on with {goal} (the pairs already made are reused)")


def _count_in_progress(out_root, count):
    """Whether a run of count shards holds its lock on out_root now (probed without creating a lock file)."""
    path = os.path.join(out_root, PARTS, f"count-{count}.lock")
    return os.path.exists(path) and locks.is_locked(path)


def merge(out_root, dataset_info, count=None, fingerprint=None, prepare=None):
    """Combine the shard parts into manifest.jsonl, errors.jsonl and dataset.json; returns the counts.

    prepare(part paths), when given, runs once every shard is known done and before the manifest is written
    (containers.assemble: it may rewrite the parts); what it returns is dataset.json's "container".
    """
    markers = done_markers(out_root)
    if count is None:
        if not markers:
            raise MergeError(f"no finished shards under '{os.path.join(out_root, PARTS)}'; run the shards first")
        if len(markers) > 1:  # refused since when a job starts: an output from before that check
            held = "; ".join(f"{runs_of(n)} ({_done_files(out_root, n)})" for n in sorted(markers))
            raise MergeError(f"cannot merge: '{os.path.join(out_root, PARTS)}' holds finished shards of {held}; "
                             f"delete the files of the count you gave up ({PARTS}/shard-*-of-NNNNN.*)")
        count = next(iter(markers))
    have = markers.get(count, {})
    missing = [i for i in range(count) if i not in have]
    if missing:
        names = ", ".join(f"{i}/{count}" for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise MergeError(f"cannot merge: shard {names} not done (no parts/{shard_tag(missing[0], count)}.done); "
                         f"run it with --shard {missing[0]}/{count} first")
    other = sorted(i for i, m in have.items() if m.get("fingerprint") != fingerprint)
    if fingerprint is not None and other:  # run.json names the keys (pipeline.merge); this is the last guard
        raise MergeError(f"cannot merge: {_done_files(out_root, count, other)} record(s) another config than "
                         f"this one (fingerprint {have[other[0]].get('fingerprint')}, this config {fingerprint}); "
                         "merge with the --config and --set of the shard jobs, or run those shards again")
    codecs = _shared_codecs(have, count)
    parts = os.path.join(out_root, PARTS)
    shards = [(f"shard {i}/{count}", os.path.join(parts, shard_tag(i, count)), have[i]) for i in range(count)]
    root = check_folders(out_root)
    for _, base, _ in shards:  # before anything is assembled, written or deleted
        check_part(f"{base}.jsonl", root, images_on_disk=False)  # a merge opens tars and databases only
        check_part(f"{base}.errors.jsonl", root, errors=True)
    container = prepare([f"{base}.jsonl" for _, base, _ in shards]) if prepare is not None else None
    n_pairs = _write_merged(os.path.join(out_root, "manifest.jsonl"),
                            [(name, f"{base}.jsonl", m.get("pairs")) for name, base, m in shards])
    n_errors = _write_merged(os.path.join(out_root, "errors.jsonl"),
                             [(name, f"{base}.errors.jsonl", m.get("errors")) for name, base, m in shards])
    # No shard count here: N shards plus --merge must give the very bytes of one whole run.
    counts = {"pairs": n_pairs, "errors": n_errors}
    skipped = have[0].get("skipped")  # every shard scans the whole tree, so shard 0's counts are everyone's
    if have[0].get("skipped_share") and skipped is not None:  # an input list's jobs count their own shares
        skipped = {k: sum((m.get("skipped") or {}).get(k, 0) for m in have.values()) for k in skipped}
    if skipped is not None:
        counts["skipped"] = skipped
    info = dict(dataset_info, **codecs, counts=counts)
    if container is not None:
        info["container"] = container
    write_atomic(os.path.join(out_root, "dataset.json"), (json.dumps(info, indent=2) + "\n").encode())
    return dict(info["counts"], shards=count)


def _shared_codecs(markers, count=None):
    """{"encoder": ..., "decoder": ...} the done-markers recorded (the same in all), or MergeError naming both."""
    found = {}
    for role, key in (("encoder", "save.encoder"), ("decoder", "decode.device")):
        seen = {json.dumps(m.get(role), sort_keys=True): i for i, m in sorted(markers.items(), reverse=True)}
        if len(seen) > 1:
            (_, i), (_, j) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
            a, b = _codec_label(markers[i].get(role)), _codec_label(markers[j].get(role))
            where = f" ({PARTS}/{shard_tag(i, count)}.done, {PARTS}/{shard_tag(j, count)}.done)" if count else ""
            raise MergeError(f"cannot merge: {key}: shard {i} was written with {role} {a}, shard {j} with {b}{where}; "
                             f"run shard {j} again with {a} installed")
        value = markers[min(markers)].get(role) if markers else None
        if value is not None:  # parts from before codecs were recorded have none
            found[role] = value
    return found


def _codec_label(record):
    """'fpng 0.1.0' for a codec record ('none' for parts from before codecs were recorded)."""
    if not isinstance(record, dict):
        return "none recorded"
    return " ".join(str(record[k]) for k in ("name", "version") if k in record)


def _numbered(rows, i):
    """(row, i) for each row."""
    for row in rows:
        yield row, i


def _write_merged(dest, parts):
    """Stream-merge sorted parts [(name, path, expected rows)] into dest without private state; returns the row count.

    dest is replaced atomically, and only when every part holds the rows its done-marker counted:
    a lost or damaged part is a MergeError naming its shard, never a silently short manifest.
    """
    tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".tmp")
    seen = [0] * len(parts)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            streams = [_numbered(read_rows(path), i) for i, (_, path, _) in enumerate(parts)]
            for row, i in heapq.merge(*streams, key=lambda item: item[0]["source"]):
                row.pop(STATE, None)
                f.write(dumps(row) + "\n")
                seen[i] += 1
        for (name, path, expected), n in zip(parts, seen):
            if not os.path.exists(path) or (expected is not None and n != expected):
                raise MergeError(f"cannot merge: {name} is damaged ({os.path.basename(path)} holds {n} readable "
                                 f"rows, its done-marker says {expected}); run that shard again")
    except BaseException:
        _remove(tmp)
        raise
    replace_if_changed(tmp, dest)
    return sum(seen)
