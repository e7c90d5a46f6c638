"""The exact keys of a manifest row, its params and its private resume state, per configuration family.

Each family is a real tiny run into tmp_path; the key sets are written out literally, so adding, dropping or
renaming a field of a row (rows.py, containers, params.py) fails here first (STYLE habit 6).
"""

import json

import pytest

from conftest import read_jsonl, write_images
from lowlight_gpu import decode_gpu, imageio, pipeline
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
