"""Tests for the output layouts (lol, mbllen), the hash split, and PairDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lowlight_gpu as ll
from lowlight_gpu import layout, pipeline
from lowlight_gpu.config import config_from_dict

from conftest import read_jsonl, read_png, write_images

TWELVE = {f"img{i:02d}.png": (17 + i, 11 + (i % 5)) for i in range(12)}


def _run(inp, out, **raw):
    """Generate with pipeline.run and a checked config; returns (config, manifest rows)."""
    config = config_from_dict(dict(raw, input=str(inp), output=str(out), backend="numpy", workers=2),
                              check_paths=True)
    result = pipeline.run(config)
    assert result.errors == 0
    return config, read_jsonl(Path(out) / "manifest.jsonl")


def _files(root):
    """Relative paths of every PNG under root (parts/ and the report left out)."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")
                  if p.parent != root and "parts" not in p.parts)


def test_lol_is_the_default(tmp_path, input_dir):
    _, rows = _run(input_dir, tmp_path / "out")
    assert _files(tmp_path / "out") == ["high/a.png", "high/b.png", "low/a.png", "low/b.png"]
    assert [(r["high"], r["low"]) for r in rows] == [("high/a.png", "low/a.png"), ("high/b.png", "low/b.png")]


def test_mbllen_folders_share_names_and_dark_is_noiseless(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    names = write_images(inp, TWELVE)
    config, rows = _run(inp, out, layout="mbllen")
    assert _files(out) == sorted(f"{d}/{n}" for d in ("train", "train_dark", "train_lowlight") for n in names)
    for row in rows:
        name = row["source"]
        assert (row["high"], row["low"], row["clean_low"]) == \
            (f"train/{name}", f"train_lowlight/{name}", f"train_dark/{name}")
        high = read_png(out / row["high"])
        params = ll.sample_params(row["seed"], config)
        assert np.array_equal(read_png(out / row["clean_low"]), ll.synthesize(high, params, noisy=False))
        assert np.array_equal(read_png(out / row["low"]), ll.synthesize(high, params))


@pytest.mark.parametrize("name, folders", [
    ("mbllen", lambda s: (s, f"{s}_dark", f"{s}_lowlight")),
    ("lol", lambda s: (f"{s}/high", f"{s}/low")),
])
def test_split_folders_follow_the_hash(tmp_path, name, folders):
    inp = tmp_path / "in"
    names = write_images(inp, TWELVE)
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    config, rows = _run(inp, tmp_path / "out", layout=name, split=split)
    expected = sorted(f"{d}/{n}" for n in names for d in folders(layout.split_of(n, config.split)))
    assert _files(tmp_path / "out") == expected
    assert [r["split"] for r in rows] == [layout.split_of(n, config.split) for n in names]
    assert len({r["split"] for r in rows}) > 1  # twelve files do not all hash into one part
    # Deterministic: another run (another output, another seed) puts every source in the same part.
    _, again = _run(inp, tmp_path / "again", layout=name, split=split, seed=7)
    assert [r["split"] for r in again] == [r["split"] for r in rows]


def test_split_ratios_are_respected():
    split = config_from_dict({"split": {"train": 0.9, "val": 0.1}}).split
    parts = [layout.split_of(f"photos/{i:05d}.jpg", split) for i in range(5000)]
    assert set(parts) == {"train", "val"}
    assert parts.count("val") / len(parts) == pytest.approx(0.1, abs=0.015)
    three = config_from_dict({"split": {"train": 0.6, "val": 0.2, "test": 0.2}}).split
    parts = [layout.split_of(f"{i}.png", three) for i in range(5000)]
    for part, ratio in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert parts.count(part) / len(parts) == pytest.approx(ratio, abs=0.025)
    assert layout.split_of("x.png", None) is None


def test_pair_dataset_samples(tmp_path, input_dir):
    out = tmp_path / "out"
    _run(input_dir, out, progressive={"enabled": True, "steps": 3, "save": [1, 3]}, split={"train": 0.5, "val": 0.5})
    rows = read_jsonl(out / "manifest.jsonl")
    ds = ll.PairDataset(out)
    assert len(ds) == 2
    for i, row in enumerate(rows):
        low, high = ds[i]
        assert low.shape == high.shape == (row["height"], row["width"], 3) and low.dtype == np.uint8
        assert np.array_equal(high, read_png(out / row["high"])) and np.array_equal(low, read_png(out / row["low"]))
        assert low.flags.writeable
    low, high, params = ll.PairDataset(out, with_params=True)[1]
    assert params == rows[1]["params"]
    sample = ll.PairDataset(out, steps=True)[0]
    assert len(sample) == 3  # t=1, t=3, high
    assert np.array_equal(sample[0], read_png(out / rows[0]["steps"][0]["path"]))
    assert np.array_equal(sample[-1], read_png(out / rows[0]["high"]))
    by_split = {s: len(ll.PairDataset(out, split=s)) for s in ("train", "val")}
    assert sum(by_split.values()) == 2
    with pytest.raises(ValueError, match="'test' is not a split"):  # a typo is an error, not an empty dataset
        ll.PairDataset(out, split="test")
    flipped = ll.PairDataset(out, transform=lambda s: s[::-1])[0]
    assert np.array_equal(flipped[0], read_png(out / rows[0]["high"]))
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        ll.PairDataset(tmp_path / "nothing")


def test_pair_dataset_tensors(tmp_path, input_dir):
    torch = pytest.importorskip("torch")
    out = tmp_path / "out"
    _run(input_dir, out)
    ds = ll.PairDataset(out, as_tensor=True)
    assert isinstance(ds, torch.utils.data.Dataset)
    low, high = ds[0]
    assert low.shape == high.shape == (3, 23, 37) and low.dtype == torch.float32
    assert 0 <= float(low.min()) and float(high.max()) <= 1
    batch = next(iter(torch.utils.data.DataLoader(ll.PairDataset(out), batch_size=1)))
    assert batch[0].shape == (1, 23, 37, 3)
