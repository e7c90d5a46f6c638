"""Tools that read a generated dataset: verify (replay and compare), preview (contact sheet), report (statistics).

They share the helpers below: reading the manifest, picking a deterministic
spread of rows, and finding the config the dataset was made with.
"""

import dataclasses
import json
import os

from .. import fsutil, paths, storage
from ..config import config_from_dict
from ..errors import ConfigError
from ..manifest import read_rows

MANIFEST = "manifest.jsonl"


def manifest_path(output_dir, storage_options=None):
    """OUTPUT/manifest.jsonl (a local copy for an output on object storage), or ConfigError (one line) when the
    dataset has none."""
    if storage.is_url(output_dir):
        path = storage.local_copy(output_dir, MANIFEST, storage_options)
        if path is None:
            raise ConfigError(f"output: no {MANIFEST} in '{output_dir}'; generate the dataset first "
                              "(or --merge its shards)")
        return path
    path = os.path.join(os.fspath(output_dir), MANIFEST)
    if not os.path.isfile(path):
        raise ConfigError(f"output: no {MANIFEST} in '{output_dir}'; generate the dataset first "
                          "(or --merge its shards)")
    return path


def read_text(output_dir, name, storage_options=None):
    """The text of a small file of a dataset (dataset.json), local or on object storage; OSError if missing."""
    if storage.is_url(output_dir):
        return storage.Location(output_dir, storage_options).read(name).decode("utf-8")
    with open(os.path.join(os.fspath(output_dir), name), encoding="utf-8") as f:
        return f.read()


def write_file(output_dir, name, data):
    """Write a tool's file (report.png, preview.png) into the dataset, local or on object storage; its path."""
    if storage.is_url(output_dir):
        storage.Location(output_dir).write(name, data)
        return storage.join(output_dir, name)
    path = os.path.join(os.fspath(output_dir), name)
    fsutil.write_atomic(path, data)
    return path


def count_rows(path):
    """The number of complete lines of a .jsonl file (one row each), counted without parsing JSON."""
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def sample(output_dir, n=None):
    """(total rows, iterator over the rows at spread(total, n)), streamed from the manifest; all rows when n is None."""
    path = manifest_path(output_dir)
    total = count_rows(path)
    wanted = None if n is None else set(spread(total, n))
    root = None if storage.is_url(output_dir) else paths.Root(output_dir)  # a bucket: the lexical rule only
    return total, _pick(read_rows(path), wanted, path, root)


def _pick(rows, wanted, path=MANIFEST, root=None):
    """The rows whose index is in wanted (all when None), stopping after the last one wanted.

    Every row read is checked (paths.check_row: UntrustedDataset naming path and row), a picked one on disk
    too (with root): a tool opens only files inside the output folder.
    """
    last = max(wanted, default=-1) if wanted is not None else None
    for i, row in enumerate(rows):
        if last is not None and i > last:
            return
        picked = wanted is None or i in wanted
        paths.check_row(row, path, i + 1, root if picked else None, public=True)
        if picked:
            yield row


def spread(count, n):
    """n indices spread evenly over range(count): every (count/n)-th, starting with the first; all when n >= count."""
    if n is None or n >= count:
        return list(range(count))
    # i * count // n is strictly increasing for n <= count, so the picks are distinct and deterministic.
    return [i * count // n for i in range(n)]


def recorded_config(output_dir, fallback):
    """The Config recorded in OUTPUT/dataset.json, with fallback's input and output; fallback if unreadable."""
    try:
        raw = json.loads(read_text(output_dir, "dataset.json"))["config"]
        cfg = config_from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError):  # ConfigError is a ValueError
        return fallback
    if fallback is None:
        return cfg
    return dataclasses.replace(cfg, input=fallback.input, output=fallback.output,
                               storage_options=fallback.storage_options, input_root=fallback.input_root,
                               input_column=fallback.input_column)
