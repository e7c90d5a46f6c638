"""PairDataset: read a generated dataset through its manifest, for training loops.

    from lowlight_gpu import PairDataset
    ds = PairDataset("out")                         # (low, high) uint8 (H, W, 3) numpy arrays
    ds = PairDataset("out", as_tensor=True)         # (low, high) float CHW torch tensors in [0, 1]
    ds = PairDataset("out", with_params=True)       # (low, high, params)
    ds = PairDataset("out", steps=True)             # (step_1, ..., step_T, high): the saved progressive steps
    ds = PairDataset("out", split="train")          # only the rows of one hash split
    ds = PairDataset("s3://bucket/out")             # straight from object storage (s3://, gs://, az://)

Loose files, WebDataset tar shards and BasicSR LMDBs (save.container) give the
same samples in the same order: each manifest row says where its images are.
An LMDB dataset needs the lmdb package (ImportError with the install hint, at
construction); a damaged LMDB (a truncated data.mdb) raises DamagedDatabase,
naming it, instead of killing the process with SIGBUS.
With torch installed the class is a ``torch.utils.data.Dataset`` (use it with a
DataLoader); without torch it is a plain sequence of numpy samples.

A row whose paths would lead outside root (absolute, ``..``, a link out; paths.py) raises a ValueError
(``errors.UntrustedDataset``) naming manifest.jsonl and the row, when read or, for a link, when opened.
"""

import os

import numpy as np

from . import imageio, paths, storage
from .containers import container_of
from .containers.readers import Reader
from .manifest import read_rows

try:  # torch is optional: subclass its Dataset when it is there, so DataLoader and friends accept it
    import torch
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None
    _Base = object

MAX_PIXELS = 1 << 40  # our own outputs: the decompression-bomb guard is for untrusted sources


def _where(row):
    """(shard, key) that Reader.read needs for a tar or LMDB row; None for loose files."""
    container = container_of(row)
    if container == "files":
        return None
    return (row["shard"], None) if container == "webdataset" else (None, row["key"])


def known_splits(root, seen=(), storage_options=None):
    """The split names of a dataset: those its dataset.json configured, plus any its rows carry."""
    import json

    names = {name for name in seen if name is not None}
    try:
        if storage.is_url(root):
            text = storage.Location(root, storage_options).read("dataset.json").decode("utf-8")
        else:
            with open(os.path.join(root, "dataset.json"), encoding="utf-8") as f:
                text = f.read()
        names.update((json.loads(text).get("config") or {}).get("split") or {})
    except (OSError, ValueError, AttributeError, TypeError):  # a damaged dataset.json names no splits
        pass
    return names


def _need_lmdb(root):
    """ImportError with the install hint when the lmdb package is missing."""
    try:
        import lmdb  # noqa: F401
    except ImportError:
        raise ImportError(f"PairDataset: '{root}' stores its images in LMDB databases, which need the lmdb "
                          "package: pip install 'lowlight-gpu[lmdb]'") from None


class PairDataset(_Base):
    """Samples of a generated dataset: (low, high), (low, high, params), or (steps..., high)."""

    def __init__(self, root, with_params=False, steps=False, transform=None, as_tensor=False, split=None,
                 storage_options=None):
        """Read root/manifest.jsonl; keep only paths (and params if asked) per row.

        root may be a URL (s3://, gs://, az://): the manifest is read once, the images as they are asked for;
        storage_options are fsspec's (credentials otherwise come from the environment, as for a run)."""
        if as_tensor and torch is None:
            raise ImportError("PairDataset(as_tensor=True) needs torch; pip install 'lowlight-gpu[torch]'")
        self.root = os.fspath(root)
        self.storage_options = storage_options
        remote = storage.is_url(self.root)
        path = storage.local_copy(self.root, "manifest.jsonl", storage_options) if remote else \
            os.path.join(self.root, "manifest.jsonl")
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"PairDataset: no manifest.jsonl in '{self.root}'; generate the dataset first")
        self.with_params, self.steps, self.transform, self.as_tensor = with_params, steps, transform, as_tensor
        self.items = []
        self._reader = None
        self._root = None if remote else paths.Root(self.root)  # a bucket: the lexical rule (paths.contained)
        seen = set()
        for n, row in enumerate(read_rows(path), 1):
            # ValueError (UntrustedDataset) naming the file and row for a path that would leave root.
            paths.check_row(row, path, n, public=True)
            seen.add(row.get("split"))
            if split is not None and row.get("split") != split:
                continue
            # Keep only what __getitem__ needs: a million rows of full dicts would cost gigabytes.
            images = tuple(s["path"] for s in row["steps"]) if steps and "steps" in row else (row["low"],)
            where = _where(row)  # None for loose files; (shard, key) of a tar or LMDB container
            if where is not None and where[1] is not None and len(self.items) == 0:
                _need_lmdb(self.root)
            self.items.append((images + (row["high"],), row["params"] if with_params else None, where, n))
        if split is not None and split not in known_splits(self.root, seen, storage_options):
            names = sorted(known_splits(self.root, seen, storage_options))
            raise ValueError(f"PairDataset: split {split!r} is not a split of '{self.root}' "
                             + (f"(its splits: {', '.join(map(repr, names))})" if names
                                else "(it was made with split: null, so it has none; leave split out)"))

    def __len__(self):
        """The number of pairs."""
        return len(self.items)

    def __getitem__(self, index):
        """One sample: the low image(s) then high, plus params when with_params; transform applied last."""
        refs, params, where, n = self.items[index]
        sample = tuple(self._convert(self._read(ref, where, n)) for ref in refs)
        if self.with_params:
            sample += (params,)
        return self.transform(sample) if self.transform is not None else sample

    def _read(self, rel, where=None, n=None):
        """One image of the dataset as a read-only uint8 (H, W, 3) array (alpha dropped)."""
        row = f"'{os.path.join(self.root, 'manifest.jsonl')}' row {n}"  # for a refusal's message
        if where is None and self._root is not None:  # every folder on the way inside root, a regular file
            return imageio.decode(self._root.path(rel, where=row), MAX_PIXELS).rgb
        if self._reader is None:  # made on first use, so each DataLoader worker opens its own tars and LMDBs
            self._reader = Reader(self.root, self.storage_options)
        if where is None:  # a file on object storage
            return imageio.decode_bytes(self._reader.read(rel, where=row), MAX_PIXELS, rel).rgb
        return imageio.decode_bytes(self._reader.read(rel, *where, where=row), MAX_PIXELS, rel).rgb

    def __getstate__(self):
        """Pickled for DataLoader workers without open tars or LMDBs."""
        return dict(self.__dict__, _reader=None)

    def _convert(self, rgb):
        """A writable uint8 HWC copy, or a float32 CHW tensor in [0, 1] when as_tensor."""
        if not self.as_tensor:
            # A copy: decode's arrays are read-only, which torch's default_collate warns about.
            return np.array(rgb)
        # np.array always copies: ascontiguousarray would hand torch the read-only array itself where the
        # transpose is already contiguous (a 1x1 image), and torch warns that it is not writable.
        return torch.from_numpy(np.array(rgb.transpose(2, 0, 1), order="C")).float().div_(255.0)
