"""End-to-end tests of a run: outputs, pixels, reproducibility, resume, bad and odd inputs, progressive."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from lowlight_gpu import __version__
from lowlight_gpu.fsutil import temp_name
from lowlight_gpu.synth import numpy_backend

from conftest import random_pixels, read_jsonl, read_png, tree_bytes, tree_mtimes, write_image, write_images

NO_NOISE = ("noise.model=none",)
TIMING_KEY = re.compile(r"time|second|elapsed|duration|date|speed|per_s", re.I)


@pytest.fixture
def generate(run_cli):
    """generate(inp, out, *sets, args=()) -> CliResult, via cli.main with backend=numpy, workers=2."""

    def go(inp, out, *sets, args=()):
        argv = ["--set", f"input={inp}", "--set", f"output={out}"]
        for s in sets:
            argv += ["--set", s]
        return run_cli(*argv, *args)

    return go


def _rows(out):
    return read_jsonl(out / "manifest.jsonl")


def _errors(out):
    return read_jsonl(out / "errors.jsonl")


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def _png16(values, color_type):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _reference_low(high_rgb, params):
    """beta * (alpha * x) ** gamma in float64, as 8-bit codes."""
    x = high_rgb.astype(np.float64) / 255.0
    y = params["beta"] * (params["alpha"] * x) ** params["gamma"]
    return np.clip(np.round(y * 255.0), 0, 255)


def _assert_within_1_lsb(low_rgb, ref):
    diff = np.abs(low_rgb.astype(np.int64) - ref.astype(np.int64))
    assert diff.max() <= 1, f"max difference {diff.max()} LSB"


# ---------------------------------------------------------------- output files

def test_manifest_errors_and_dataset_files(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_images(inp, {"b.jpg": (20, 31), "a.png": (37, 23), "nested/deeper/c.png": (9, 4),
                       "a/x.png": (3, 5)})
    (inp / "bad.png").write_bytes(os.urandom(200))
    res = generate(inp, out_dir)
    assert res.code == 3
    rows = _rows(out_dir)
    sources = [r["source"] for r in rows]
    assert sources == sorted(sources) == ["a.png", "a/x.png", "b.jpg", "nested/deeper/c.png"]
    sizes = {"a.png": (37, 23), "a/x.png": (3, 5), "b.jpg": (20, 31), "nested/deeper/c.png": (9, 4)}
    for r in rows:
        for key in ("source", "high", "low", "seed", "params", "width", "height", "backend"):
            assert key in r, key
        assert not any(TIMING_KEY.search(k) for k in _keys(r)), r
        assert not any(k.startswith("_") for k in r), "private resume state leaked into manifest.jsonl"
        assert isinstance(r["seed"], int) and not isinstance(r["seed"], bool) and r["seed"] >= 0
        p = r["params"]
        for key in ("alpha", "beta", "gamma"):
            assert isinstance(p[key], float), key
        assert 0 < p["alpha"] <= 1 and 0 < p["beta"] <= 1 and p["gamma"] > 0
        assert isinstance(p["noise"], dict) and p["noise"]["model"] == "poisson-gaussian"
        assert (r["width"], r["height"]) == sizes[r["source"]]
        assert r["backend"] == "numpy"  # the backend that rendered
        assert r["high"].startswith("high/") and r["low"].startswith("low/")
        assert r["high"][len("high/"):] == r["low"][len("low/"):]  # same relative name in both trees
        for key in ("high", "low"):
            assert "\\" not in r[key] and not os.path.isabs(r[key])
            with Image.open(out_dir / r[key]) as im:
                assert im.size == sizes[r["source"]] and im.mode == "RGB"
    assert rows[0]["high"] == "high/a.png" and rows[3]["low"] == "low/nested/deeper/c.png"
    assert len({r["seed"] for r in rows}) == len(rows)

    errors = _errors(out_dir)
    assert len(errors) == 1
    assert errors[0]["source"] == "bad.png"
    assert isinstance(errors[0]["error"], str) and errors[0]["error"] and "\n" not in errors[0]["error"]

    info = json.loads((out_dir / "dataset.json").read_text(encoding="utf-8"))
    assert info["version"] == __version__
    assert info["counts"]["pairs"] == 4 and info["counts"]["errors"] == 1
    assert info["config"]["noise"]["model"] == "poisson-gaussian"
    assert info["config"]["darken"]["gamma"] == [1.5, 5.0]
    assert info["config"]["seed"] == 0 and info["config"]["max_pixels"] == 89478485
    # Every line of the manifest is one compact JSON object.
    for line in (out_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        assert line.startswith("{") and line.endswith("}")


def test_clean_run_has_empty_errors_file(generate, input_dir, out_dir):
    assert generate(input_dir, out_dir).code == 0
    assert _errors(out_dir) == []
    assert len(_rows(out_dir)) == 2


def test_same_stem_sources_do_not_overwrite_each_other(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_image(inp / "x.png", 6, 5, seed=1)
    write_image(inp / "x.jpg", 7, 4, seed=2)
    write_image(inp / "X.PNG", 3, 3, seed=3)
    write_image(inp / "sub" / "x.png", 4, 4, seed=4)
    assert generate(inp, out_dir, *NO_NOISE).code == 0
    rows = {r["source"]: r for r in _rows(out_dir)}
    assert set(rows) == {"X.PNG", "sub/x.png", "x.jpg", "x.png"}
    highs = [r["high"].casefold() for r in rows.values()]
    lows = [r["low"].casefold() for r in rows.values()]
    assert len(set(highs)) == 4 and len(set(lows)) == 4
    for name, size in (("x.png", (6, 5)), ("x.jpg", (7, 4)), ("X.PNG", (3, 3)), ("sub/x.png", (4, 4))):
        with Image.open(out_dir / rows[name]["high"]) as im:
            assert im.size == size
    np.testing.assert_array_equal(read_png(out_dir / rows["x.png"]["high"]), random_pixels(6, 5, seed=1))
    assert rows["sub/x.png"]["high"] == "high/sub/x.png"


# ---------------------------------------------------------------- pixels

def test_high_is_the_decoded_source(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_images(inp, {"p.png": (37, 23), "j.jpg": (20, 31), "u.JPG": (5, 8)})
    assert generate(inp, out_dir).code == 0
    rows = {r["source"]: r for r in _rows(out_dir)}
    for name in ("p.png", "j.jpg", "u.JPG"):
        with Image.open(inp / name) as src:
            expected = np.asarray(src.convert("RGB"))
        high = read_png(out_dir / rows[name]["high"])
        assert high.dtype == np.uint8 and high.shape == expected.shape
        np.testing.assert_array_equal(high, expected)


@pytest.mark.parametrize("gamma", ["[1.5,5.0]", "[0.3,1.0]", "1.0"])
def test_low_matches_formula_within_one_lsb(generate, tmp_path, out_dir, gamma):
    inp = tmp_path / "in"
    write_images(inp, {"a.png": (37, 23), "b.jpg": (20, 31), "c.png": (16, 16)})
    # Every code 0..255 appears in c.png.
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("RGB").save(inp / "c.png")
    assert generate(inp, out_dir, *NO_NOISE, f"darken.gamma={gamma}", "darken.alpha=[0.5,1]",
                    "darken.beta=[0.1,1]").code == 0
    rows = _rows(out_dir)
    assert len(rows) == 3
    for r in rows:
        assert r["params"]["noise"]["model"] == "none"
        high = read_png(out_dir / r["high"])
        low = read_png(out_dir / r["low"])
        assert low.shape == high.shape and low.dtype == np.uint8
        _assert_within_1_lsb(low, _reference_low(high, r["params"]))
    # A darkening curve can only darken (alpha, beta <= 1, gamma >= 1 at this setting).
    if gamma != "[0.3,1.0]":
        for r in rows:
            assert (read_png(out_dir / r["low"]).astype(int) <= read_png(out_dir / r["high"]).astype(int) + 1).all()


def test_noisy_low_is_replayable_from_the_row(generate, input_dir, out_dir):
    assert generate(input_dir, out_dir).code == 0
    for r in _rows(out_dir):
        high = read_png(out_dir / r["high"])
        low = read_png(out_dir / r["low"])
        assert r["params"]["seed"] == r["seed"]
        replay = numpy_backend.render(high, r["params"])
        np.testing.assert_array_equal(replay, low)
        # The noise is really there: the noisy image is not the clean curve.
        assert not np.array_equal(low, _reference_low(high, r["params"]).astype(np.uint8))


@pytest.mark.parametrize("noise", ["none", "poisson-gaussian"])
def test_alpha_passes_through_unchanged(generate, tmp_path, out_dir, noise):
    inp = tmp_path / "in"
    inp.mkdir()
    rgba = random_pixels(11, 13, 4, seed=7)
    Image.fromarray(rgba).save(inp / "rgba.png")
    la = random_pixels(9, 6, 2, seed=8)
    Image.fromarray(la).save(inp / "la.png")
    assert generate(inp, out_dir, f"noise.model={noise}").code == 0
    rows = {r["source"]: r for r in _rows(out_dir)}
    for name, alpha, gray in (("rgba.png", rgba[:, :, 3], None), ("la.png", la[:, :, 1], la[:, :, 0])):
        high = read_png(out_dir / rows[name]["high"])
        low = read_png(out_dir / rows[name]["low"])
        assert high.shape[2] == 4 and low.shape[2] == 4
        np.testing.assert_array_equal(high[:, :, 3], alpha)
        np.testing.assert_array_equal(low[:, :, 3], alpha)
        if gray is not None:
            np.testing.assert_array_equal(high[:, :, :3], np.repeat(gray[:, :, None], 3, axis=2))
        if noise == "none":
            _assert_within_1_lsb(low[:, :, :3], _reference_low(high[:, :, :3], rows[name]["params"]))
    np.testing.assert_array_equal(read_png(out_dir / rows["rgba.png"]["high"]), rgba)


def test_exif_orientation_is_applied(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    inp.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    Image.fromarray(random_pixels(20, 31, seed=3)).save(inp / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert generate(inp, out_dir).code == 0
    row, = _rows(out_dir)
    with Image.open(inp / "rot.jpg") as src:
        upright = np.asarray(ImageOps.exif_transpose(src).convert("RGB"))
    assert upright.shape == (20, 31, 3)
    assert (row["width"], row["height"]) == (31, 20)
    high = read_png(out_dir / row["high"])
    np.testing.assert_array_equal(high, upright)
    assert read_png(out_dir / row["low"]).shape == (20, 31, 3)


def test_odd_inputs_all_become_pairs(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    inp.mkdir()
    gray = random_pixels(13, 7, 1, seed=1)
    Image.fromarray(gray).save(inp / "gray.png")
    Image.fromarray(random_pixels(12, 9, seed=2)).convert("P").save(inp / "palette.png")
    g16 = np.random.default_rng(3).integers(0, 65536, size=(6, 10), dtype=np.uint16)
    Image.fromarray(g16).save(inp / "gray16.png")
    rgb16 = np.random.default_rng(4).integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    (inp / "rgb16.png").write_bytes(_png16(rgb16, color_type=2))
    Image.fromarray(random_pixels(8, 6, seed=5)).convert("CMYK").save(inp / "cmyk.jpg", quality=95)
    frames = [Image.fromarray(random_pixels(10, 8, seed=s)).convert("P") for s in (6, 7, 8)]
    frames[0].save(inp / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    write_image(inp / "one.png", 1, 1, seed=9)
    write_image(inp / "thin.png", 1, 500, seed=10)
    write_image(inp / "wide.png", 500, 1, seed=11)
    write_image(inp / "with space é.png", 4, 3, seed=12)
    write_image(inp / "日本" / "深い dir" / "写真.JPG", 5, 4, seed=13)
    write_image(inp / "UPPER.JPEG", 6, 6, seed=14)
    write_image(inp / "bmp.bmp", 5, 5, seed=15)
    write_image(inp / "tif.tiff", 5, 5, seed=16)
    write_image(inp / "web.webp", 5, 5, seed=17, lossless=True)
    (inp / "readme.txt").write_text("not an image")
    (inp / "data.npy").write_bytes(b"\x93NUMPY")

    res = generate(inp, out_dir)
    assert res.code == 0, (res.err, _errors(out_dir))
    rows = {r["source"]: r for r in _rows(out_dir)}
    expect = {
        "gray.png": (13, 7), "palette.png": (12, 9), "gray16.png": (10, 6), "rgb16.png": (7, 5),
        "cmyk.jpg": (8, 6), "anim.gif": (10, 8), "one.png": (1, 1), "thin.png": (1, 500),
        "wide.png": (500, 1), "with space é.png": (4, 3), "日本/深い dir/写真.JPG": (5, 4),
        "UPPER.JPEG": (6, 6), "bmp.bmp": (5, 5), "tif.tiff": (5, 5), "web.webp": (5, 5),
    }
    assert set(rows) == set(expect)  # .txt and .npy are ignored, not errors
    assert _errors(out_dir) == []
    for name, (w, h) in expect.items():
        r = rows[name]
        assert (r["width"], r["height"]) == (w, h), name
        for key in ("high", "low"):
            with Image.open(out_dir / r[key]) as im:
                assert im.mode == "RGB" and im.size == (w, h), (name, key, im.mode)
    assert rows["with space é.png"]["high"] == "high/with space é.png"
    assert rows["日本/深い dir/写真.JPG"]["low"] == "low/日本/深い dir/写真.png"

    def high(name):
        return read_png(out_dir / rows[name]["high"])

    np.testing.assert_array_equal(high("gray.png"), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(high("gray16.png")[:, :, 0], ((g16.astype(np.uint32) + 128) // 257))
    assert np.abs(high("rgb16.png").astype(int) - np.round(rgb16 / 257.0)).max() <= 1
    with Image.open(inp / "anim.gif") as gif:
        first = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(high("anim.gif"), first)
    with Image.open(inp / "cmyk.jpg") as cmyk:
        np.testing.assert_array_equal(high("cmyk.jpg"), np.asarray(cmyk.convert("RGB")))
    np.testing.assert_array_equal(high("one.png"), random_pixels(1, 1, seed=9))
    np.testing.assert_array_equal(high("thin.png"), random_pixels(1, 500, seed=10))


# ---------------------------------------------------------------- reproducibility

def _many(tmp_path):
    inp = tmp_path / "in"
    write_images(inp, {f"d{i % 3}/img{i}.png": (7 + i, 5 + 2 * i) for i in range(7)})
    write_images(inp, {"z.jpg": (9, 9), "rgba.png": (6, 5, "RGBA")}, seed=50)
    return inp


@pytest.mark.parametrize("extra", [(), ("progressive.enabled=true", "progressive.steps=3", "progressive.save=all",
                                        "save.clean_low=true")])
def test_same_bytes_for_any_worker_count(generate, tmp_path, extra):
    inp = _many(tmp_path)
    results = []
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        assert generate(inp, out, f"workers={workers}", *extra).code == 0
        results.append(((out / "manifest.jsonl").read_bytes(), tree_bytes(out)))
    manifest, images = results[0]
    assert len(manifest.splitlines()) == 9
    assert len(images) >= 18
    for other in results[1:]:
        assert other[0] == manifest
        assert other[1] == images


def test_moving_the_input_root_gives_the_same_pairs(generate, tmp_path):
    inp = _many(tmp_path)
    moved = tmp_path / "somewhere" / "else" / "photos"
    shutil.copytree(inp, moved)
    assert generate(inp, tmp_path / "o1").code == 0
    shutil.rmtree(inp)  # the original is gone: nothing may depend on it
    assert generate(moved, tmp_path / "o2").code == 0
    assert (tmp_path / "o1" / "manifest.jsonl").read_bytes() == (tmp_path / "o2" / "manifest.jsonl").read_bytes()
    assert tree_bytes(tmp_path / "o1") == tree_bytes(tmp_path / "o2")


def test_adding_an_unrelated_file_changes_no_other_pair(generate, tmp_path):
    inp = _many(tmp_path)
    assert generate(inp, tmp_path / "o1").code == 0
    write_images(inp, {"d1/aaa_new.png": (8, 8), "0first.png": (4, 4)}, seed=99)
    assert generate(inp, tmp_path / "o2").code == 0
    before = {r["source"]: r for r in _rows(tmp_path / "o1")}
    after = {r["source"]: r for r in _rows(tmp_path / "o2")}
    assert set(after) - set(before) == {"d1/aaa_new.png", "0first.png"}
    for src, row in before.items():
        assert after[src] == row
    b1, b2 = tree_bytes(tmp_path / "o1"), tree_bytes(tmp_path / "o2")
    assert all(b2[rel] == data for rel, data in b1.items())


def test_seed_changes_every_pair(generate, input_dir, tmp_path):
    assert generate(input_dir, tmp_path / "s0").code == 0
    assert generate(input_dir, tmp_path / "s1", "seed=1").code == 0
    r0, r1 = _rows(tmp_path / "s0"), _rows(tmp_path / "s1")
    for a, b in zip(r0, r1):
        assert a["source"] == b["source"]
        assert a["seed"] != b["seed"]
        assert a["params"]["gamma"] != b["params"]["gamma"]
        assert (tmp_path / "s0" / a["low"]).read_bytes() != (tmp_path / "s1" / b["low"]).read_bytes()
        assert (tmp_path / "s0" / a["high"]).read_bytes() == (tmp_path / "s1" / b["high"]).read_bytes()


def test_output_inside_input_is_not_scanned(generate, input_dir):
    out = input_dir / "generated"
    assert generate(input_dir, out).code == 0
    res = generate(input_dir, out)
    assert res.code == 0 and "2 pairs (2 already done)" in res.out
    assert [r["source"] for r in _rows(out)] == ["a.png", "b.jpg"]


def test_work_in_flight_is_bounded(monkeypatch):
    import threading
    import time

    from lowlight_gpu import pipeline

    consumed = []
    running = [0, 0]  # now, most ever
    lock = threading.Lock()

    def items():
        for i in range(2000):
            consumed.append(i)
            yield i, None

    def fake_make_pair(src, prior, ctx):
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.0005)
        with lock:
            running[0] -= 1
        return pipeline.PairResult(pipeline.MADE, {"source": src})

    monkeypatch.setattr(pipeline, "make_pair", fake_make_pair)
    outcomes = pipeline.execute(items(), ctx=None, workers=2, engine=None)
    first = next(outcomes)
    assert first.row == {"source": 0}
    assert len(consumed) < 1000  # the scan is pulled as work completes, not drained up front
    rest = [outcome.row["source"] for outcome in outcomes]
    assert rest == list(range(1, 2000))  # results come back in input order
    assert 1 <= running[1] <= 2  # never more items being worked on than workers


# ---------------------------------------------------------------- resume

def test_rerun_skips_finished_pairs_and_changes_nothing(generate, tmp_path, out_dir):
    inp = _many(tmp_path)
    assert generate(inp, out_dir).code == 0
    images = tree_bytes(out_dir)
    mtimes = {rel: t for rel, t in tree_mtimes(out_dir).items() if rel in images}
    manifest = (out_dir / "manifest.jsonl").read_bytes()
    dataset = (out_dir / "dataset.json").read_bytes()
    res = generate(inp, out_dir)
    assert res.code == 0
    assert "9 pairs (9 already done)" in res.out
    assert tree_bytes(out_dir) == images
    assert {rel: t for rel, t in tree_mtimes(out_dir).items() if rel in images} == mtimes
    assert (out_dir / "manifest.jsonl").read_bytes() == manifest
    assert (out_dir / "dataset.json").read_bytes() == dataset


def test_deleted_low_is_regenerated_identically(generate, tmp_path, out_dir):
    inp = _many(tmp_path)
    assert generate(inp, out_dir).code == 0
    images = tree_bytes(out_dir)
    manifest = (out_dir / "manifest.jsonl").read_bytes()
    victim = out_dir / "low" / "d1" / "img4.png"
    victim.unlink()
    res = generate(inp, out_dir)
    assert res.code == 0 and "(8 already done)" in res.out
    assert tree_bytes(out_dir) == images
    assert (out_dir / "manifest.jsonl").read_bytes() == manifest


def test_truncated_output_is_regenerated(generate, input_dir, out_dir):
    assert generate(input_dir, out_dir).code == 0
    images = tree_bytes(out_dir)
    high = out_dir / "high" / "a.png"
    high.write_bytes(high.read_bytes()[:40])
    res = generate(input_dir, out_dir)
    assert res.code == 0 and "(1 already done)" in res.out
    assert tree_bytes(out_dir) == images


def test_leftover_temp_files_are_gone_after_rerun(generate, input_dir, out_dir):
    assert generate(input_dir, out_dir).code == 0
    images = tree_bytes(out_dir)
    # A run killed mid-write: the final file is missing, its temp file is half written.
    low_a = out_dir / "low" / "a.png"
    low_a.unlink()
    tmp_a = temp_name(low_a)
    assert tmp_a.name == ".a.png.tmp"
    tmp_a.write_bytes(b"half a png")
    # A stray temp file beside an output that did make it.
    tmp_b = temp_name(out_dir / "high" / "b.png")
    tmp_b.write_bytes(b"junk")
    assert generate(input_dir, out_dir).code == 0
    assert not tmp_a.exists()
    assert not tmp_b.exists()
    assert tree_bytes(out_dir) == images
    assert not [p for p in out_dir.rglob("*.tmp")]


def test_changed_source_is_redone(generate, input_dir, out_dir):
    assert generate(input_dir, out_dir).code == 0
    write_image(input_dir / "a.png", 8, 3, seed=123)
    res = generate(input_dir, out_dir)
    assert res.code == 0 and "(1 already done)" in res.out
    row = {r["source"]: r for r in _rows(out_dir)}["a.png"]
    assert (row["width"], row["height"]) == (8, 3)
    np.testing.assert_array_equal(read_png(out_dir / row["high"]), random_pixels(8, 3, seed=123))


def test_failed_input_is_retried_once_fixed(generate, input_dir, out_dir):
    (input_dir / "c.png").write_bytes(b"")
    assert generate(input_dir, out_dir).code == 3
    assert [e["source"] for e in _errors(out_dir)] == ["c.png"]
    write_image(input_dir / "c.png", 5, 5)
    res = generate(input_dir, out_dir)
    assert res.code == 0 and "(2 already done)" in res.out
    assert _errors(out_dir) == []
    assert [r["source"] for r in _rows(out_dir)] == ["a.png", "b.jpg", "c.png"]


# ---------------------------------------------------------------- bad inputs

def test_bad_inputs_are_listed_and_the_run_goes_on(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_images(inp, {"good.png": (9, 7), "z_good.jpg": (5, 6)})
    (inp / "empty.png").write_bytes(b"")
    full = (inp / "good.png").read_bytes()
    (inp / "truncated.png").write_bytes(full[: len(full) // 2])
    write_image(inp / "cut.jpg", 30, 30, seed=4)
    (inp / "cut.jpg").write_bytes((inp / "cut.jpg").read_bytes()[:200])
    (inp / "random.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (inp / "text.jpg").write_text("hello, I am not a JPEG\n")
    (inp / "ignored.txt").write_text("not an image")
    (inp / "folder.png").mkdir()  # a folder named like an image holds nothing
    res = generate(inp, out_dir)
    assert res.code == 3
    assert "Traceback" not in res.err
    errors = _errors(out_dir)
    assert [e["source"] for e in errors] == ["cut.jpg", "empty.png", "random.png", "text.jpg", "truncated.png"]
    for e in errors:
        assert set(e) >= {"source", "error"}
        assert isinstance(e["error"], str) and e["error"].strip() and "\n" not in e["error"]
    assert [r["source"] for r in _rows(out_dir)] == ["good.png", "z_good.jpg"]
    info = json.loads((out_dir / "dataset.json").read_text())
    assert info["counts"]["pairs"] == 2 and info["counts"]["errors"] == 5
    assert not (out_dir / "high" / "empty.png").exists()


def test_decompression_bomb_is_refused(generate, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_images(inp, {"big.png": (37, 23), "small.png": (10, 10), "tiny.jpg": (5, 4)})
    res = generate(inp, out_dir, "max_pixels=100")
    assert res.code == 3
    errors = _errors(out_dir)
    assert [e["source"] for e in errors] == ["big.png"]
    assert "100" in errors[0]["error"]
    assert [r["source"] for r in _rows(out_dir)] == ["small.png", "tiny.jpg"]
    assert not (out_dir / "high" / "big.png").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file_is_listed(generate, input_dir, out_dir):
    locked = input_dir / "locked.png"
    write_image(locked, 4, 4)
    os.chmod(locked, 0)
    try:
        res = generate(input_dir, out_dir)
    finally:
        os.chmod(locked, 0o644)
    assert res.code == 3
    assert [e["source"] for e in _errors(out_dir)] == ["locked.png"]
    assert len(_rows(out_dir)) == 2


@pytest.mark.skipif(os.name != "posix", reason="needs byte file names")
def test_file_name_that_is_not_utf8_is_an_error_not_a_crash(generate, input_dir, out_dir):
    bad = os.path.join(os.fsencode(input_dir), b"caf\xe9.png")
    try:
        shutil.copy(os.fsencode(input_dir / "a.png"), bad)
    except (OSError, UnicodeError):
        pytest.skip("filesystem refuses non-UTF-8 names")
    res = generate(input_dir, out_dir)
    assert res.code == 3 and "Traceback" not in res.err
    errors = _errors(out_dir)
    assert len(errors) == 1 and "UTF-8" in errors[0]["error"]
    assert [r["source"] for r in _rows(out_dir)] == ["a.png", "b.jpg"]


# ---------------------------------------------------------------- progressive

@pytest.mark.parametrize("save, saved", [("all", [1, 2, 3, 4]), ("last", [4]), ("[1,3]", [1, 3])])
def test_progressive_steps(generate, tmp_path, out_dir, save, saved):
    inp = tmp_path / "in"
    write_images(inp, {"a.png": (9, 7), "n/b.jpg": (6, 5)})
    sets = ("progressive.enabled=true", "progressive.steps=4", f"progressive.save={save}", *NO_NOISE)
    assert generate(inp, out_dir, *sets).code == 0
    rows = _rows(out_dir)
    assert len(rows) == 2
    for r in rows:
        steps = r["steps"]
        assert [s["t"] for s in steps] == saved
        assert all(set(s) >= {"t", "path"} for s in steps)
        assert r["low"] == steps[-1]["path"]
        prog = r["params"]["progressive"]
        assert set(prog) >= {"steps", "eta", "a"} and prog["steps"] == 4
        assert isinstance(prog["eta"], float) and isinstance(prog["a"], float)
        high = read_png(out_dir / r["high"])
        x = high.astype(np.float64) / 255.0
        for t in range(1, 5):
            x = (prog["a"] * x) ** prog["eta"]  # x_t = (a * x_{t-1}) ** eta
            if t in saved:
                path, = [s["path"] for s in steps if s["t"] == t]
                assert path.startswith(f"low/t{t:02d}/")
                assert path.endswith(r["high"][len("high/"):])
                _assert_within_1_lsb(read_png(out_dir / path), np.round(x * 255.0))
        if saved[-1] == 4:  # step T is the one-shot image
            _assert_within_1_lsb(read_png(out_dir / r["low"]), _reference_low(high, r["params"]))
    assert sorted(p.name for p in (out_dir / "low").iterdir()) == [f"t{t:02d}" for t in saved]
    assert (out_dir / "low" / f"t{saved[0]:02d}" / "n" / "b.png").is_file()

    # Resume skips everything and touches nothing.
    images = tree_bytes(out_dir)
    mtimes = {rel: t for rel, t in tree_mtimes(out_dir).items() if rel in images}
    res = generate(inp, out_dir, *sets)
    assert res.code == 0 and "2 pairs (2 already done)" in res.out
    assert tree_bytes(out_dir) == images
    assert {rel: t for rel, t in tree_mtimes(out_dir).items() if rel in images} == mtimes


def test_progressive_noisy_last_step_matches_one_shot(generate, tmp_path):
    inp = tmp_path / "in"
    write_images(inp, {"a.png": (9, 7), "b.png": (4, 11)})
    assert generate(inp, tmp_path / "one").code == 0
    assert generate(inp, tmp_path / "prog", "progressive.enabled=true", "progressive.steps=4",
                    "progressive.save=all").code == 0
    one = {r["source"]: r for r in _rows(tmp_path / "one")}
    for r in _rows(tmp_path / "prog"):
        assert r["seed"] == one[r["source"]]["seed"]
        for key in ("alpha", "beta", "gamma"):
            assert r["params"][key] == one[r["source"]]["params"][key]
        last = (tmp_path / "prog" / r["low"]).read_bytes()
        assert last == (tmp_path / "one" / one[r["source"]]["low"]).read_bytes()
        # Earlier steps are brighter on average than the last one.
        means = [read_png(tmp_path / "prog" / s["path"]).mean() for s in r["steps"]]
        assert means[0] > means[-1]


def test_a_noop_rerun_leaves_every_dataset_file_untouched(generate, input_dir, out_dir):
    """'Changes nothing' includes the manifest, errors, dataset.json and the shard part: same bytes, same mtimes."""
    assert generate(input_dir, out_dir).code == 0
    names = ["manifest.jsonl", "errors.jsonl", "dataset.json", "parts/shard-00000-of-00001.jsonl"]
    before = {n: ((out_dir / n).read_bytes(), (out_dir / n).stat().st_mtime_ns) for n in names}
    images = tree_mtimes(out_dir)
    assert generate(input_dir, out_dir).code == 0
    assert {n: ((out_dir / n).read_bytes(), (out_dir / n).stat().st_mtime_ns) for n in names} == before
    assert tree_mtimes(out_dir) == images
