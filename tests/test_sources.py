"""Tests for lowlight_gpu.sources: the lazy sorted scan, relative ids, output names."""

from __future__ import annotations

import inspect
import os
import shutil

import pytest

from lowlight_gpu import sources
from lowlight_gpu.hashing import shard_of
from lowlight_gpu.sources import Source, output_names, scan

from conftest import write_image, write_images


def _rels(it):
    return [s.rel for s in it]


def test_scan_is_a_generator_in_sorted_order_on_nested_tree(tmp_path):
    names = ["a.png", "a/b.png", "a-b.png", "B.png", "a/c/d.png", "a/c.png", "ab.png", "a_b.png"]
    for n in names:
        write_image(tmp_path / n, 3, 2)
    gen = scan(str(tmp_path))
    assert inspect.isgenerator(gen)
    rels = _rels(gen)
    assert rels == sorted(names)
    # A folder "a" sorts as "a/": after "a-b.png" and "a.png", before "a_b.png" and "ab.png".
    assert rels == ["B.png", "a-b.png", "a.png", "a/b.png", "a/c.png", "a/c/d.png", "a_b.png", "ab.png"]


def test_scan_is_lazy(tmp_path, monkeypatch):
    for i in range(6):
        write_image(tmp_path / f"d{i}" / "x.png", 2, 2)
    calls = []
    real = os.scandir

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(sources.os, "scandir", counting)
    gen = scan(str(tmp_path))
    assert calls == []  # nothing is read before the first item is asked for
    first = next(gen)
    assert first.rel == "d0/x.png"
    assert len(calls) == 2  # the root and d0 only, not the whole tree
    assert len(list(gen)) == 5
    assert len(calls) == 7


def test_relative_ids_use_slashes_and_paths_exist(tmp_path):
    write_images(tmp_path, {"x/y/z.png": (3, 2), "x/w.jpg": (2, 3)})
    found = list(scan(str(tmp_path)))
    assert [s.rel for s in found] == ["x/w.jpg", "x/y/z.png"]
    for s in found:
        assert isinstance(s, Source) and not s.error
        assert "\\" not in s.rel and not s.rel.startswith("/")
        assert os.path.samefile(s.path, tmp_path / s.rel)
    assert [s.out_rel for s in found] == ["x/w.png", "x/y/z.png"]


def test_non_images_and_hidden_entries_are_skipped(tmp_path):
    write_images(tmp_path, {"keep.png": (2, 2), "UPPER.JPG": (2, 2), "mixed.JpEg": (2, 2),
                            ".hidden.png": (2, 2), ".cache/in_hidden_dir.png": (2, 2)})
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "noext").write_bytes(b"\x89PNG")
    (tmp_path / "dir.png").mkdir()  # a folder with an image-like name is walked, not decoded
    write_image(tmp_path / "dir.png" / "inner.png", 2, 2)
    assert _rels(scan(str(tmp_path))) == ["UPPER.JPG", "dir.png/inner.png", "keep.png", "mixed.JpEg"]


def test_unicode_and_spaces_kept_exactly(tmp_path):
    names = ["café au lait.png", "日本/写真 1.jpg", "emoji 📷.png"]
    for n in names:
        write_image(tmp_path / n, 2, 2)
    found = list(scan(str(tmp_path)))
    assert sorted(s.rel for s in found) == sorted(names)
    assert {s.out_rel for s in found} == {"café au lait.png", "日本/写真 1.png", "emoji 📷.png"}


def test_same_stem_sources_get_distinct_output_names(tmp_path):
    write_images(tmp_path, {"x.jpg": (2, 2), "x.png": (2, 2), "X.PNG": (2, 2), "y.jpg": (2, 2)})
    found = {s.rel: s.out_rel for s in scan(str(tmp_path))}
    assert len(found) == 4
    outs = [o.casefold() for o in found.values()]
    assert len(set(outs)) == 4, found  # distinct even on a case-insensitive filesystem
    assert found["y.jpg"] == "y.png"  # names without a clash keep the plain stem
    assert all(o.endswith(".png") for o in found.values())


@pytest.mark.parametrize("names", [
    ["x.jpg", "x.png"],
    ["x.jpg", "x.png", "x.jpg.png"],
    ["a.PNG", "a.png", "A.png", "a.jpeg"],
])
def test_output_names_never_clash(names):
    chosen = output_names(names)
    assert set(chosen) == set(names)
    assert len({v.casefold() for v in chosen.values()}) == len(names), chosen
    assert output_names(list(reversed(names))) == chosen  # independent of listing order


def test_output_folder_inside_input_is_skipped(tmp_path):
    write_images(tmp_path, {"a.png": (2, 2)})
    write_images(tmp_path / "out" / "high", {"a.png": (2, 2)})
    assert _rels(scan(str(tmp_path), skip=[str(tmp_path / "out")])) == ["a.png"]
    assert _rels(scan(str(tmp_path))) == ["a.png", "out/high/a.png"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loop_terminates(tmp_path):
    write_images(tmp_path, {"a/x.png": (2, 2)})
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert _rels(scan(str(tmp_path))) == ["a/x.png"]


def test_shards_partition_the_sources(tmp_path):
    names = {f"f{i:02d}.png": (2, 2) for i in range(24)}
    write_images(tmp_path, names)
    everything = _rels(scan(str(tmp_path)))
    parts = [_rels(scan(str(tmp_path), shard=(i, 3))) for i in range(3)]
    for part in parts:
        assert part == sorted(part)
    assert sorted(sum(parts, [])) == everything
    assert sum(map(len, parts)) == len(everything)
    assert all(shard_of(r, 3) == i for i, part in enumerate(parts) for r in part)


def test_relative_ids_do_not_depend_on_root_location(tmp_path):
    write_images(tmp_path / "one", {"p/q.png": (2, 2), "r.jpg": (2, 2)})
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    a = [(s.rel, s.out_rel) for s in scan(str(tmp_path / "one"))]
    b = [(s.rel, s.out_rel) for s in scan(str(tmp_path / "elsewhere" / "two"))]
    assert a == b


@pytest.mark.skipif(os.name != "posix", reason="needs byte file names")
def test_undecodable_file_name_becomes_an_error_source(tmp_path):
    write_images(tmp_path, {"a.png": (2, 2)})
    bad = os.path.join(os.fsencode(tmp_path), b"\xff\xfe.png")
    try:
        shutil.copy(os.fsencode(tmp_path / "a.png"), bad)
    except (OSError, UnicodeError):
        pytest.skip("filesystem refuses non-UTF-8 names")
    found = list(scan(str(tmp_path)))
    assert len(found) == 2
    ok, = [s for s in found if not s.error]
    err, = [s for s in found if s.error]
    assert ok.rel == "a.png"
    err.rel.encode("utf-8")  # printable in JSON
    assert "UTF-8" in err.error and "\n" not in err.error


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can list any folder")
def test_unlistable_folder_is_reported(tmp_path):
    write_images(tmp_path, {"a.png": (2, 2), "locked/b.png": (2, 2)})
    os.chmod(tmp_path / "locked", 0)
    try:
        found = list(scan(str(tmp_path)))
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert [s.rel for s in found if not s.error] == ["a.png"]
    assert any(s.error.startswith("cannot list folder") for s in found)
