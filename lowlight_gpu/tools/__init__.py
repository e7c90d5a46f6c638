"""Tools that read a generated dataset: verify (replay and compare), preview (contact sheet), report (statistics).

They share the helpers below: reading the manifest, picking a deterministic
spread of rows, and finding the config the dataset was made with.
"""

import dataclasses
import json
import os

from .. import paths
from ..config import config_from_dict
from ..errors import ConfigError
from ..manifest import read_rows

MANIFEST = "manifest.jsonl"


def manifest_path(output_dir):
    """OUTPUT/manifest.jsonl, or ConfigError (one line) when the dataset has none."""
    path = os.path.join(os.fspath(output_dir), MANIFEST)
    if not os.path.isfile(path):
        raise ConfigError(f"output: no {MANIFEST} in '{output_dir}'; generate the dataset first "
                          "(or --merge its shards)")
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
    return total, _pick(read_rows(path), wanted, path, paths.Root(output_dir))


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
        with open(os.path.join(os.fspath(output_dir), "dataset.json"), encoding="utf-8") as f:
            raw = json.load(f)["config"]
        cfg = config_from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError):  # ConfigError is a ValueError
        return fallback
    if fallback is None:
        return cfg
    return dataclasses.replace(cfg, input=fallback.input, output=fallback.output)
