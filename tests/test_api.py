"""Tests for the library API: sample_params / synthesize equal the CLI's pairs; numpy, torch and CuPy arrays."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import lowlight_gpu as ll
from lowlight_gpu.config import config_from_dict

from conftest import REPO_ROOT, read_jsonl, read_png, write_image

CONFIGS = {
    "noisy": {},
    "progressive+clean": {"progressive": {"enabled": True, "steps": 4, "save": "all"},
                          "save": {"clean_low": True}},
    "gaussian-linear": {"noise": {"model": "gaussian", "space": "linear"}},
    "brooks-before": {"noise": {"model": "brooks", "order": "before"}},
    "none": {"noise": {"model": "none"}},
}


def _generate(tmp_path, overrides, inp):
    """Run the CLI with a YAML config holding overrides; returns (config path, output, rows)."""
    import yaml

    from lowlight_gpu import cli

    cfg_path = tmp_path / "cfg.yaml"
    out = tmp_path / "out"
    cfg_path.write_text(yaml.safe_dump(dict(overrides, input=str(inp), output=str(out), backend="numpy")))
    assert cli.main(["--config", str(cfg_path), "--quiet"]) == 0
    return cfg_path, out, read_jsonl(out / "manifest.jsonl")


@pytest.fixture
def sources(tmp_path):
    """Three tiny sources: RGB PNG, JPEG, and an RGBA PNG (alpha passes through)."""
    inp = tmp_path / "in"
    write_image(inp / "a.png", 37, 23, seed=1)
    write_image(inp / "b.jpg", 20, 31, seed=2)
    write_image(inp / "sub/c.png", 16, 9, "RGBA", seed=3)
    return inp


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_synthesize_equals_the_cli(tmp_path, sources, name):
    cfg_path, out, rows = _generate(tmp_path, CONFIGS[name], sources)
    assert len(rows) == 3
    for row in rows:
        assert ll.pair_seed(0, row["source"]) == row["seed"]
        params = ll.sample_params(row["seed"], cfg_path)
        assert params == row["params"]
        high = ll.load_image(sources / row["source"])
        assert np.array_equal(high, read_png(out / row["high"]))
        lows = [(s["t"], s["path"]) for s in row["steps"]] if "steps" in row else [(None, row["low"])]
        cleans = [(s["t"], s["path"]) for s in row.get("clean_steps", [])]
        for t, rel in lows:
            assert np.array_equal(ll.synthesize(high, params, t=t), read_png(out / rel)), rel
        for t, rel in cleans:
            assert np.array_equal(ll.synthesize(high, params, t=t, noisy=False), read_png(out / rel)), rel


def test_sample_params_takes_a_config_a_dict_a_path_or_none(tmp_path):
    raw = {"darken": {"gamma": [2, 3]}, "noise": {"model": "gaussian"}}
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    want = ll.sample_params(42, config_from_dict(raw))
    assert ll.sample_params(42, raw) == want == ll.sample_params(42, path) == ll.sample_params(42, str(path))
    assert ll.sample_params(42, None) == ll.sample_params(42, {}) == ll.sample_params(42)
    assert 2 <= want["gamma"] <= 3 and want["noise"]["model"] == "gaussian"
    assert ll.load_config(path, check_paths=False) == config_from_dict(raw)


def test_synthesize_shapes_types_and_errors():
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    params = ll.sample_params(5)
    low = ll.synthesize(rgb, params)
    assert isinstance(low, np.ndarray) and low.dtype == np.uint8 and low.shape == rgb.shape
    assert np.array_equal(ll.synthesize(Image.fromarray(rgb), params), low)  # anything np.asarray takes
    assert np.array_equal(ll.synthesize(np.asfortranarray(rgb), params), low)  # layout does not matter
    rgba = np.concatenate((rgb, np.arange(63, dtype=np.uint8).reshape(9, 7, 1)), axis=2)
    out = ll.synthesize(rgba, params)
    assert np.array_equal(out[:, :, :3], low) and np.array_equal(out[:, :, 3], rgba[:, :, 3])
    floats = ll.synthesize(rgb.astype(np.float32) / 255, params)  # float in [0, 1]: quantised, same dtype out
    assert floats.dtype == np.float32 and np.array_equal(np.round(floats * 255).astype(np.uint8), low)
    with pytest.raises(ValueError, match="uint8"):
        ll.synthesize(rgb.astype(np.int32), params)
    with pytest.raises(ValueError, match="uint8"):
        ll.synthesize(rgb[:, :, 0], params)
    with pytest.raises(ValueError, match="progressive"):
        ll.synthesize(rgb, params, t=1)
    prog = ll.sample_params(5, {"progressive": {"enabled": True, "steps": 3}})
    with pytest.raises(ValueError, match="1..3"):
        ll.synthesize(rgb, prog, t=4)
    assert np.array_equal(ll.synthesize(rgb, prog, t=3), ll.synthesize(rgb, prog))  # step T is the low image


def test_importing_the_package_is_light():
    # PairDataset imports torch when it is installed (and torch may import tqdm), so it is left out here.
    code = ("import sys, numpy, lowlight_gpu as ll; ll.synthesize(numpy.zeros((2, 2, 3), numpy.uint8), "
            "ll.sample_params(1)); print(sorted(m for m in ('joblib', 'tqdm', 'cupy', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "[]"
    res = subprocess.run([sys.executable, "-c", "import sys, lowlight_gpu; print('torch' in sys.modules)"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False"


def test_torch_tensors_round_trip_through_dlpack():
    torch = pytest.importorskip("torch")
    rgb = np.random.default_rng(1).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    params = ll.sample_params(9)
    tensor = torch.from_numpy(rgb.copy())
    low = ll.synthesize(tensor, params)
    assert isinstance(low, torch.Tensor) and low.dtype == torch.uint8 and low.device.type == "cpu"
    assert np.array_equal(low.numpy(), ll.synthesize(rgb, params))
    if torch.cuda.is_available():
        pytest.importorskip("cupy")
        from lowlight_gpu import synth

        if not synth.cupy_status()[0]:
            pytest.skip("no working CuPy backend")
        gpu = ll.synthesize(tensor.cuda(), params)
        assert gpu.device.type == "cuda"
        assert np.array_equal(gpu.cpu().numpy(), low.numpy())  # one source: the same bytes


def test_cupy_arrays_stay_on_the_gpu():
    cupy = pytest.importorskip("cupy")
    from lowlight_gpu import synth

    if not synth.cupy_status()[0]:
        pytest.skip("no working CuPy backend")
    rgb = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    params = ll.sample_params(3)
    low = ll.synthesize(cupy.asarray(rgb), params)
    assert isinstance(low, cupy.ndarray)
    assert np.array_equal(cupy.asnumpy(low), ll.synthesize(rgb, params))  # one source: the same bytes
    clean = ll.synthesize(cupy.asarray(rgb), params, noisy=False)
    assert np.array_equal(cupy.asnumpy(clean), ll.synthesize(rgb, params, noisy=False))


def test_docs_example_and_example_script_run():
    text = (REPO_ROOT / "docs/tools.md").read_text(encoding="utf-8")
    first = text.split("```python\n", 1)[1].split("```", 1)[0]
    res = subprocess.run([sys.executable, "-c", first], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, str(REPO_ROOT / "examples/online_augmentation.py")], cwd=REPO_ROOT.parent,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "done in" in res.stdout, res.stderr
