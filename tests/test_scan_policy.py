"""The scan's policies: symlinks, non-regular files, the project's own outputs, depth, skip counts, HEIC."""

from __future__ import annotations

import json
import os
import sys

import pytest

from lowlight_gpu import imageio, sources
from lowlight_gpu.sources import ScanStats, scan

from conftest import write_image, write_images

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")


def _scan(root, **kw):
    stats = ScanStats()
    return [s.rel for s in scan(str(root), stats=stats, **kw)], stats.counts


@needs_symlinks
def test_linked_folder_outside_the_tree_is_read_once(tmp_path):
    write_images(tmp_path / "ext", {"x.png": (2, 2), "y.png": (2, 2)})
    write_images(tmp_path / "in", {"a.png": (2, 2)})
    os.symlink(tmp_path / "ext", tmp_path / "in" / "one")
    os.symlink(tmp_path / "ext", tmp_path / "in" / "two")
    rels, counts = _scan(tmp_path / "in")
    assert rels == ["a.png", "one/x.png", "one/y.png"]  # the second link to the same folder adds nothing
    assert counts["seen_via_link"] == 1


@needs_symlinks
def test_link_into_the_tree_does_not_duplicate_photos(tmp_path):
    """The report: a linked folder duplicated photos, with other seeds and maybe other splits."""
    write_images(tmp_path, {"z_real/p.png": (2, 2), "z_real/q.png": (2, 2)})
    os.symlink(tmp_path / "z_real", tmp_path / "a_link")  # sorts first, but the real folder is read
    os.symlink(tmp_path / "z_real" / "p.png", tmp_path / "p_link.png")
    rels, counts = _scan(tmp_path)
    assert rels == ["z_real/p.png", "z_real/q.png"]
    assert counts["seen_via_link"] == 2


@needs_symlinks
def test_linked_files_and_hard_links_are_read_once(tmp_path):
    write_image(tmp_path / "ext" / "e.png", 2, 2)
    write_images(tmp_path / "in", {"a.png": (2, 2)})
    os.symlink(tmp_path / "ext" / "e.png", tmp_path / "in" / "e1.png")
    os.symlink(tmp_path / "ext" / "e.png", tmp_path / "in" / "e2.png")
    os.link(tmp_path / "in" / "a.png", tmp_path / "in" / "b.png")
    rels, counts = _scan(tmp_path / "in")
    assert rels == ["a.png", "e1.png"]
    assert counts["seen_via_link"] == 2


@needs_symlinks
def test_follow_symlinks_false_skips_every_link(tmp_path):
    write_images(tmp_path / "ext", {"x.png": (2, 2)})
    write_images(tmp_path / "in", {"a.png": (2, 2)})
    os.symlink(tmp_path / "ext", tmp_path / "in" / "d")
    os.symlink(tmp_path / "ext" / "x.png", tmp_path / "in" / "f.png")
    rels, counts = _scan(tmp_path / "in", follow_symlinks=False)
    assert rels == ["a.png"]
    assert counts["link_not_followed"] == 2


@needs_symlinks
def test_chain_of_linked_folders_scans_each_folder_once(tmp_path, monkeypatch):
    """The report: a small chain of linked folders made the scan run for minutes (every path through it)."""
    depth = 18
    for i in range(depth):
        write_image(tmp_path / f"d{i}" / "p.png", 2, 2)
    for i in range(depth - 1):
        for name in ("l1", "l2", "l3"):
            os.symlink(tmp_path / f"d{i + 1}", tmp_path / f"d{i}" / name)
    calls = []
    real = os.scandir
    monkeypatch.setattr(sources.os, "scandir", lambda p: calls.append(p) or real(p))
    rels, counts = _scan(tmp_path / "d0")
    assert len(calls) == depth  # 3**17 paths before; each real folder once now
    assert rels == ["l1/" * k + "p.png" for k in reversed(range(depth))]  # through the first link, in id order
    assert counts["seen_via_link"] == 2 * (depth - 1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_like_an_image_is_skipped_and_counted(tmp_path):
    """The report: a FIFO named x.jpg hung the run forever."""
    write_images(tmp_path, {"a.png": (2, 2)})
    os.mkfifo(tmp_path / "x.jpg")
    rels, counts = _scan(tmp_path)
    assert rels == ["a.png"] and counts["not_regular"] == 1
    with pytest.raises(imageio.DecodeError, match="not a regular file"):  # even if it appears after the scan
        imageio.decode(tmp_path / "x.jpg", 1000)


def test_a_very_deep_tree_scans_without_recursion_error(tmp_path):
    """The report: a 1200-deep tree crashed with RecursionError; here 400 levels under a 200-frame limit."""
    depth = 400
    write_image(tmp_path / "src.png", 2, 2)
    fd = os.open(tmp_path, os.O_RDONLY)  # os.makedirs and pathlib recurse on such a path: go one level at a time
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    os.link(tmp_path / "src.png", "deep.png", dst_dir_fd=fd)
    os.close(fd)
    os.remove(tmp_path / "src.png")
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(200)  # a walk that recursed once per level would need 400 and more
        rels, _ = _scan(tmp_path)
        sys.setrecursionlimit(limit)
        assert rels == ["d/" * depth + "deep.png"]
    finally:
        sys.setrecursionlimit(limit)
        _remove_deep(tmp_path / "d")


def _remove_deep(top):
    """Remove a chain of single-child folders without recursion (shutil.rmtree recurses and fails on it)."""
    fds = [os.open(top, os.O_RDONLY)]
    while True:
        names = os.listdir(fds[-1])
        if "d" not in names:
            break
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    for name in os.listdir(fds[-1]):
        os.unlink(name, dir_fd=fds[-1])
    for parent, child in zip(reversed(fds[:-1]), reversed(fds[1:])):
        os.close(child)
        os.rmdir("d", dir_fd=parent)
    os.close(fds[0])
    os.rmdir(top)


def test_folders_holding_a_dataset_are_skipped(tmp_path):
    write_images(tmp_path, {"a.png": (2, 2), "old/high/a.png": (2, 2), "merged/high/a.png": (2, 2),
                            "theirs/b.png": (2, 2)})
    (tmp_path / "old" / "parts").mkdir()
    (tmp_path / "old" / "parts" / "run.json").write_text("{}")
    (tmp_path / "merged" / "dataset.json").write_text(json.dumps({"name": "lowlight_gpu dataset"}))
    (tmp_path / "theirs" / "dataset.json").write_text(json.dumps({"name": "COCO"}))  # another tool's: read
    rels, counts = _scan(tmp_path, skip=[str(tmp_path / "nowhere")])
    assert rels == ["a.png", "theirs/b.png"]
    assert counts["output_folder"] == 2


def test_skip_counts_by_reason(tmp_path, monkeypatch):
    write_images(tmp_path, {"a.png": (2, 2), ".h.png": (2, 2), ".cache/x.png": (2, 2)})
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "IMG_1.HEIC").write_bytes(b"\0" * 8)
    monkeypatch.setattr(imageio, "optional_formats", lambda: frozenset())  # no pillow-heif here
    stats = ScanStats()
    assert [s.rel for s in scan(str(tmp_path), stats=stats)] == ["a.png"]
    assert stats.counts["hidden"] == 2 and stats.counts["not_image"] == 1 and stats.counts["needs_heif"] == 1
    assert stats.describe() == "2 hidden, 1 not an image, 1 HEIC/HEIF/AVIF without a decoder"
    assert "IMG_1.HEIC" in stats.heif_note() and "lowlight-gpu[heif]" in stats.heif_note()


def test_heic_is_read_when_pillow_heif_is_installed(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    import numpy as np
    from PIL import Image

    from conftest import random_pixels

    pillow_heif.register_heif_opener()
    Image.fromarray(random_pixels(16, 8)).save(tmp_path / "p.heic", quality=-1)
    rels, counts = _scan(tmp_path)
    assert rels == ["p.heic"] and counts["needs_heif"] == 0
    decoded = imageio.decode(tmp_path / "p.heic", 1000)
    assert decoded.rgb.shape == (8, 16, 3) and decoded.rgb.dtype == np.uint8
