"""The exact keys of a manifest row, its params and its private resume state, per configuration family.

Each family is a real tiny run into tmp_path; the key sets are written out literally, so adding, dropping or
renaming a field of a row (rows.py, containers, params.py) fails here first (STYLE habit 6).
"""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from conftest import read_jsonl, write_images
from lowlight_gpu import decode_gpu, encode, imageio, layout, pipeline, rows
from lowlight_gpu.sources import Source
from lowlight_gpu.config import load_config

BASE = {"source", "high", "low", "seed", "params", "width", "height", "backend", "decoder"}
PARAMS = {"seed", "alpha", "beta", "gamma", "noise"}
PARAMS_PROGRESSIVE = PARAMS | {"progressive"}
PROGRESSIVE = {"a", "eta", "steps"}
NOISE = {"model", "peak", "read_sigma", "order", "space"}  # poisson-gaussian, the default model
NOISE_PHYSICS = {"model", "order", "space", "camera", "components", "cfa", "K", "read", "read_scale", "read_lambda",
                 "row_sigma", "bias", "bits", "black_level", "white_level", "ccm", "rgb_gain", "red_gain",
                 "blue_gain"}
STATE_FILES = {"source", "files"}
STATE_CONTAINER = {"source", "files", "members", "at"}
STEP = {"t", "path"}
RAW_STEP = {"t", "role", "path"}
ALL_STEPS = ["progressive.enabled=true", "progressive.steps=3", "progressive.save=all"]

# family: (--set items, row keys, params keys, noise keys, _state keys)
FAMILIES = {
    "files": ([], BASE, PARAMS, NOISE, STATE_FILES),
    "webdataset": (["save.container=webdataset"], BASE | {"key", "shard"}, PARAMS, NOISE, STATE_CONTAINER),
    "lmdb": (["save.container=lmdb"], BASE | {"key"}, PARAMS, NOISE, STATE_CONTAINER),
    "progressive": (ALL_STEPS, BASE | {"steps"}, PARAMS_PROGRESSIVE, NOISE, STATE_FILES),
    "physics": (["noise.model=physics"], BASE, PARAMS, NOISE_PHYSICS, STATE_FILES),
    "physics_raw": (["noise.model=physics", "save.raw=true"], BASE | {"raw_clean", "raw_low"}, PARAMS,
                    NOISE_PHYSICS, STATE_FILES),
    "split": (["split.train=0.5", "split.val=0.5"], BASE | {"split"}, PARAMS, NOISE, STATE_FILES),
    "clean_low": (["save.clean_low=true"], BASE | {"clean_low"}, PARAMS, NOISE, STATE_FILES),
    "progressive_physics_raw_clean_low": (
        ["noise.model=physics", "save.raw=true", "save.clean_low=true", *ALL_STEPS],
        BASE | {"steps", "clean_low", "clean_steps", "raw_clean", "raw_low", "raw_steps"}, PARAMS_PROGRESSIVE,
        NOISE_PHYSICS, STATE_FILES),
    "progressive_webdataset": (["save.container=webdataset", *ALL_STEPS], BASE | {"key", "shard", "steps"},
                               PARAMS_PROGRESSIVE, NOISE, STATE_CONTAINER),
}


def _run(tmp_path, *sets, images=None):
    """A real run of the default tiny images with sets; (its manifest rows, its part's rows, its error rows)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, images)
    pipeline.run(load_config(None, [f"input={inp}", f"output={out}", "backend=numpy", "workers=1", *sets]))
    part = read_jsonl(out / "parts" / "shard-00000-of-00001.jsonl")
    return read_jsonl(out / "manifest.jsonl"), part, read_jsonl(out / "errors.jsonl")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_rows_keys_per_configuration_family(tmp_path, family):
    sets, keys, params, noise, state = FAMILIES[family]
    manifest_rows, part_rows, _ = _run(tmp_path, *sets)
    assert [r["source"] for r in manifest_rows] == ["a.png", "b.jpg"]
    for row in manifest_rows:
        assert set(row) == keys
        assert set(row["params"]) == params
        assert set(row["params"]["noise"]) == noise
        if "progressive" in row["params"]:
            assert set(row["params"]["progressive"]) == PROGRESSIVE
            assert [s["t"] for s in row["steps"]] == [1, 2, 3]
        for name in ("steps", "clean_steps"):
            assert all(set(step) == STEP for step in row.get(name, []))
        assert all(set(step) == RAW_STEP for step in row.get("raw_steps", []))
        assert row["backend"] == "numpy" and row["decoder"] == "pillow"
    for row in part_rows:  # the part holds the public row and the private resume state
        assert set(row) == keys | {"_state"}
        assert set(row["_state"]) == state


def test_an_rgba_source_adds_alpha_and_a_failed_source_gets_an_errors_row(tmp_path):
    images = {"a.png": (9, 7, "RGBA"), "b.jpg": (8, 6)}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    manifest_rows, _, errors = _run(tmp_path, images=images)
    assert [set(r) for r in manifest_rows] == [BASE | {"alpha"}, BASE]
    assert manifest_rows[0]["alpha"] is True
    assert [set(e) for e in errors] == [{"source", "error"}]
    assert errors[0]["source"] == "c.png"


def test_a_gpu_decoded_row_records_nvimgcodec(tmp_path, monkeypatch):
    # nvImageCodec stands in as Pillow's pixels returned as decode_gpu's GpuDecoded, the type a real GPU
    # decode returns; the row's keys stay those of the files family and only its decoder differs.
    def decode(path, max_pixels, color="convert"):
        cpu = imageio.decode(path, max_pixels, color)
        return decode_gpu.GpuDecoded(rgb=cpu.rgb, alpha=None) if str(path).endswith(".jpg") else cpu

    monkeypatch.setattr(decode_gpu, "decode", decode)
    monkeypatch.setattr(decode_gpu, "describe", lambda: {"name": "nvimgcodec", "version": "0.0-test"})
    manifest_rows, part_rows, _ = _run(tmp_path, "decode.device=gpu")
    assert [set(r) for r in manifest_rows] == [BASE, BASE]
    assert [r["decoder"] for r in manifest_rows] == ["pillow", "nvimgcodec"]
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["decoder"] == {"name": "nvimgcodec", "version": "0.0-test"}
    assert all(set(r["_state"]) == STATE_FILES for r in part_rows)


def test_the_row_function_records_which_decoder_decoded(tmp_path):
    src_file = tmp_path / "s.jpg"
    src_file.write_bytes(b"x" * 10)
    config = load_config(None, [f"input={tmp_path}", f"output={tmp_path / 'out'}"])
    plan = layout.plan_outputs("s.png", config, None)
    rgb = np.zeros((3, 4, 3), np.uint8)
    src = Source(str(src_file), "s.jpg", "s.png")
    params = {"seed": 7, "noise": {}}
    gpu = rows.build_row(src, decode_gpu.GpuDecoded(rgb=rgb, alpha=None), params, plan, None, "numpy", {})
    cpu = rows.build_row(src, imageio.Decoded(rgb=rgb, alpha=None), params, plan, None, "numpy", {})
    assert set(gpu) == set(cpu) == BASE | {"_state"}
    assert (gpu["decoder"], cpu["decoder"]) == ("nvimgcodec", "pillow")
    assert (gpu["high"], gpu["low"], gpu["width"], gpu["height"]) == ("high/s.png", "low/s.png", 4, 3)
    assert gpu["_state"] == {"source": [10, src_file.stat().st_mtime_ns], "files": {}}


def test_plans_and_pair_results_are_frozen_records_that_pickle(tmp_path):
    config = load_config(None, [f"input={tmp_path}", f"output={tmp_path / 'out'}", "noise.model=physics",
                                "save.raw=true", "save.clean_low=true", *ALL_STEPS])
    plan = layout.plan_outputs("d/x.png", config, "val")
    raws = layout.plan_raw("d/x.png", config, "val")
    assert plan[0] == layout.Output("high", None, False, "val/high/d/x.png")
    assert [(o.role, o.t, o.noisy) for o in plan[1:4]] == [("low", 1, True), ("low", 2, True), ("low", 3, True)]
    assert [(o.role, o.t) for o in plan[4:]] == [("clean_low", 1), ("clean_low", 2), ("clean_low", 3)]
    assert raws[-1] == layout.RawOutput("raw_low", 3, "val/raw_low/t03/d/x.npy")
    outcome = pipeline.PairResult(pipeline.FAILED, rows.error_row("x.png", "cannot read"), unwritable=True)
    # worker processes and Dask send these across: each must come back equal
    assert pickle.loads(pickle.dumps((plan, raws, outcome))) == (plan, raws, outcome)
    assert outcome.failed and not outcome.reused and outcome.row == {"source": "x.png", "error": "cannot read"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan[0].rel = "elsewhere.png"


def test_write_pngs_writes_and_returns_sizes_encode_pngs_returns_the_same_bytes(tmp_path):
    encoder = encode.resolve("pillow", 1)
    images = [np.full((5, 6, 3), v, np.uint8) for v in (10, 200)]
    alpha = np.full((5, 6), 128, np.uint8)
    encoded = pipeline.encode_pngs(images, alpha, encoder)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    sizes = pipeline.write_pngs(list(zip(map(str, paths), images)), alpha, encoder)
    assert all(isinstance(data, bytes) for data in encoded)
    assert [p.read_bytes() for p in paths] == encoded
    assert [size for size, _ in sizes] == [len(data) for data in encoded]
    assert sizes[0] != sizes[1] and all(isinstance(digest, str) for _, digest in sizes)
