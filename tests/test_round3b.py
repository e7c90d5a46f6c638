"""Hardening round three (issue 20): meta_info names, tiny physics images, dry runs, merges, config and CLI edges."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, read_jsonl, tree_mtimes, write_image, write_images
from lowlight_gpu import cli, encode, locks, synth
from lowlight_gpu.config import ConfigError, config_from_dict, load_config
from lowlight_gpu.tools import preview


def _io(inp, out):
    return ["--set", f"input={inp}", "--set", f"output={out}"]


def _one_line(res, code=2):
    """The single stderr line of a refused run, asserting its exit code and that there is no traceback."""
    assert res.code == code, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.err, res.err
    return lines[0]


@pytest.fixture
def four(tmp_path):
    """A folder of four tiny images."""
    folder = tmp_path / "in"
    write_images(folder, {n: (6, 5) for n in ("a.png", "b.png", "c.png", "d.png")})
    return folder


# ---------------------------------------------------------------- 3. files-layout meta_info and BasicSR

def basicsr_meta_info_paths(meta_info, gt_folder, lq_folder, filename_tmpl="{}"):
    """BasicSR's own reading of a meta_info file (basicsr/data/data_util.py, paired_paths_from_meta_info_file)."""
    with open(meta_info, "r") as fin:
        gt_names = [line.strip().split(" ")[0] for line in fin]
    paths = []
    for gt_name in gt_names:
        basename, ext = os.path.splitext(os.path.basename(gt_name))
        input_name = f"{filename_tmpl.format(basename)}{ext}"
        paths.append((os.path.join(lq_folder, input_name), os.path.join(gt_folder, gt_name)))
    return paths


ODD_NAMES = ["ok.png", "with space.png", "ünïcödé 日本.png", "new\nline.png", "cr\rname.png", " lead.png",
             "d/nested.png", "plain_ü.png", "x.jpg", "x.png"]


def test_files_meta_info_is_read_back_by_basicsr_for_every_line(run_cli, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(ODD_NAMES):
        write_image(inp / name, 5, 4, seed=i)
    res = run_cli(*_io(inp, out), "--set", "noise.model=none")
    assert res.code == 0, res
    rows = read_jsonl(out / "manifest.jsonl")
    assert len(rows) == len(ODD_NAMES)
    pairs = basicsr_meta_info_paths(out / "meta_info.txt", out / "high", out / "low")
    # Every entry BasicSR reads is a real pair (was: 5 of 19 raised FileNotFoundError, 20 entries from 19 rows).
    assert all(os.path.isfile(lq) and os.path.isfile(gt) for lq, gt in pairs), pairs
    got = sorted(os.path.relpath(gt, out / "high") for _, gt in pairs)
    assert got == sorted(["ok.png", "plain_ü.png", "x.jpg.png", "x.png.png"])
    left_out = len(ODD_NAMES) - len(got)
    assert f"meta_info.txt leaves out {left_out} pair(s)" in res.err
    # Ordinary names keep their lines byte for byte.
    text = (out / "meta_info.txt").read_text(encoding="utf-8")
    assert text.startswith("ok.png (4,5,3) 1\nplain_ü.png (4,5,3) 1\n")


def test_lmdb_meta_info_lists_every_name(run_cli, tmp_path):
    pytest.importorskip("lmdb")
    inp, out = tmp_path / "in", tmp_path / "out"
    for i, name in enumerate(ODD_NAMES):
        write_image(inp / name, 5, 4, seed=i)
    res = run_cli(*_io(inp, out), "--set", "noise.model=none", "--set", "save.container=lmdb")
    assert res.code == 0 and "leaves out" not in res.err, res
    keys = [line.split(".")[0] for line in (out / "high.lmdb" / "meta_info.txt").read_text().splitlines()]
    assert sorted(keys) == sorted(r["key"] for r in read_jsonl(out / "manifest.jsonl"))


# ---------------------------------------------------------------- 4. physics below one 2x2 cell

def test_physics_refuses_images_below_one_cell(run_cli, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    sizes = {"w1h1.png": (1, 1), "w1h3.png": (1, 3), "w3h1.png": (3, 1), "w2h2.png": (2, 2), "w3h3.png": (3, 3),
             "w2h5.png": (2, 5)}
    inp.mkdir()
    for name, (w, h) in sizes.items():
        Image.fromarray(np.full((h, w, 3), (200, 100, 50), np.uint8)).save(inp / name)
    res = run_cli(*_io(inp, out), "--set", "noise.model=physics", "--set", "noise.components=''",
                  "--set", "save.raw=true", "--set", "save.clean_low=true")
    assert res.code == 3, res
    errors = {e["source"]: e["error"] for e in read_jsonl(out / "errors.jsonl")}
    assert sorted(errors) == ["w1h1.png", "w1h3.png", "w3h1.png"]
    assert all("physics needs at least 2x2" in e for e in errors.values())
    assert "image is 1x3 pixels" in errors["w1h3.png"]
    rows = read_jsonl(out / "manifest.jsonl")
    assert sorted(r["source"] for r in rows) == ["w2h2.png", "w2h5.png", "w3h3.png"]
    for row in rows:
        raw = np.load(out / row["raw_low"])
        assert raw.size > 0 and raw.shape == (row["height"] // 2 * 2, row["width"] // 2 * 2)
        # the documented round trip: no sensor noise gives the clean low image back
        low = np.asarray(Image.open(out / row["low"]))
        clean = np.asarray(Image.open(out / row["clean_low"]))
        assert np.abs(low.astype(int) - clean).max() <= 1
    assert not [p for p in out.rglob("*.npy") if np.load(p).size == 0]
    assert not (out / "raw_low" / "w1h1.npy").exists()


def test_synthesize_refuses_a_physics_image_below_one_cell():
    import lowlight_gpu as ll

    params = ll.sample_params(1, {"noise": {"model": "physics"}})
    with pytest.raises(ValueError, match="needs at least 2x2"):
        ll.synthesize(np.zeros((3, 1, 3), np.uint8), params)
    assert ll.synthesize(np.zeros((3, 1, 3), np.uint8), params, noisy=False).shape == (3, 1, 3)  # no noise: fine
    assert ll.synthesize(np.zeros((2, 2, 3), np.uint8), params).shape == (2, 2, 3)


# ---------------------------------------------------------------- 8. a dry run makes the real run's checks

def _same_refusal(run_cli, args, monkeypatch=None):
    """The one line of a real run's refusal, which the dry run must print too (both exit 2, nothing written)."""
    dry = run_cli(*args, "--dry-run")
    real = run_cli(*args)
    assert _one_line(dry) == _one_line(real)
    return _one_line(real)


@pytest.mark.parametrize("case", ["gpu-decode", "cupy", "lmdb", "fpng"])
def test_dry_run_refuses_what_the_run_refuses(run_cli, four, tmp_path, monkeypatch, case):
    out = tmp_path / "out"
    sets = {"gpu-decode": ["decode.device=gpu"], "cupy": ["backend=cupy"], "lmdb": ["save.container=lmdb"],
            "fpng": ["save.encoder=fpng"]}[case]
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)
    monkeypatch.setitem(sys.modules, "lmdb", None)
    if case == "fpng":
        monkeypatch.setattr(encode, "_FPNG_MODULE", [None])
    monkeypatch.setattr(synth, "cupy_status", lambda: (False, "no GPU here"))
    args = _io(four, out) + [a for s in sets for a in ("--set", s)]
    line = _same_refusal(run_cli, args)
    assert {"gpu-decode": "nvImageCodec", "cupy": "cupy", "lmdb": "lmdb", "fpng": "fpng"}[case] in line
    assert not out.exists()


def test_dry_run_refuses_an_output_of_another_config(run_cli, four, out_dir):
    assert run_cli(*_io(four, out_dir)).code == 0
    before = tree_mtimes(out_dir)
    line = _same_refusal(run_cli, _io(four, out_dir) + ["--set", "seed=5"])
    assert "seed was 0, now 5" in line
    assert tree_mtimes(out_dir) == before


# ---------------------------------------------------------------- 9. merge and shard counts

def test_merge_with_another_config_names_the_keys(run_cli, four, out_dir):
    for i in range(2):
        assert run_cli(*_io(four, out_dir), "--shard", f"{i}/2").code == 0
    line = _one_line(run_cli(*_io(four, out_dir), "--merge", "--set", "seed=5", "--set", "darken.gamma=2"))
    assert "seed was 0, now 5" in line and "darken.gamma was [1.5, 5.0], now [2.0, 2.0]" in line
    assert "fingerprint" not in line
    assert not (out_dir / "manifest.jsonl").exists()


def test_a_job_of_another_shard_count_is_refused_at_once(run_cli, four, out_dir):
    assert run_cli(*_io(four, out_dir), "--shard", "0/2").code == 0
    before = tree_mtimes(out_dir)
    line = _one_line(run_cli(*_io(four, out_dir), "--shard", "1/3"))
    assert "2-shard run" in line and "--shard 1/3" in line and "shard-00000-of-00002.done" in line
    assert "split" not in line
    assert tree_mtimes(out_dir) == before and not list((out_dir / "parts").glob("*of-00003*"))
    assert run_cli(*_io(four, out_dir), "--shard", "1/2").code == 0  # the same count goes on
    assert run_cli(*_io(four, out_dir), "--merge").code == 0


def test_a_shard_job_into_a_whole_runs_output_is_refused(run_cli, four, out_dir):
    assert run_cli(*_io(four, out_dir)).code == 0
    before = tree_mtimes(out_dir)
    line = _one_line(run_cli(*_io(four, out_dir), "--shard", "0/2"))
    assert "a whole run" in line and "--shard 0/2" in line and "shard-00000-of-00001.done" in line
    assert tree_mtimes(out_dir) == before
    assert run_cli(*_io(four, out_dir)).code == 0  # a whole run resumes as before


def test_merge_of_two_shard_counts_names_them_and_the_files(run_cli, four, out_dir):
    for i in range(2):
        assert run_cli(*_io(four, out_dir), "--shard", f"{i}/2").code == 0
    parts = out_dir / "parts"
    # An output from before jobs of another count were refused: markers of 2 and of 3 shards side by side.
    (parts / "shard-00002-of-00003.done").write_bytes((parts / "shard-00000-of-00002.done").read_bytes())
    line = _one_line(run_cli(*_io(four, out_dir), "--merge"))
    assert "2-shard run" in line and "3-shard run" in line and "split" not in line
    assert "shard-00001-of-00002.done" in line and "shard-00002-of-00003.done" in line


def test_merge_of_shards_with_two_encoders_names_the_files(run_cli, four, out_dir):
    for i in range(2):
        assert run_cli(*_io(four, out_dir), "--shard", f"{i}/2").code == 0
    marker = out_dir / "parts" / "shard-00001-of-00002.done"
    body = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(body, encoder={"name": "pillow", "version": "0.0"})) + "\n")
    line = _one_line(run_cli(*_io(four, out_dir), "--merge"))
    assert "save.encoder" in line and "pillow 0.0" in line
    assert "shard-00000-of-00002.done" in line and "shard-00001-of-00002.done" in line


def test_merge_during_a_whole_run_says_a_run_is_in_progress(run_cli, four, out_dir):
    lock = locks.OutputLock(str(out_dir)).acquire_shard(0, 1)  # a whole run holding the output
    try:
        res = run_cli(*_io(four, out_dir), "--merge")
    finally:
        lock.release()
    line = _one_line(res, code=5)
    assert "whole run is in progress" in line and f"pid {os.getpid()}" in line
    assert "run the shards first" not in line and line.replace(str(out_dir), "").count("wait") == 1


# ---------------------------------------------------------------- 11, 12, 13: config

def test_components_null_is_refused_with_both_meanings():
    with pytest.raises(ConfigError, match="noise.components' is null; write ptrqc .* or ''"):
        config_from_dict({"noise": {"model": "physics", "components": None}})


def test_hints_write_null_not_none():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"noise": {"model": "physics", "gain": [0, 1]}})
    assert "e.g. noise.gain: null" in str(exc.value) and "None" not in str(exc.value)


@pytest.mark.parametrize("raw, key", [
    ({"noise": {"camera": "SonyA7S2"}}, "noise.camera"),
    ({"noise": {"model": "gaussian", "gain": [1, 2]}}, "noise.gain"),
    ({"noise": {"model": "none", "components": "p"}}, "noise.components"),
    ({"noise": {"model": "physics", "order": "before"}}, "noise.order"),
    ({"noise": {"model": "physics", "space": "linear"}}, "noise.space"),
])
def test_keys_that_do_not_apply_are_refused(raw, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        config_from_dict(raw)


def test_keys_that_do_not_apply_may_keep_their_defaults():
    shipped = load_config(REPO_ROOT / "config.yaml", ["noise.model=physics"], check_paths=False)
    assert shipped.noise.order == "after" and shipped.noise.space == "srgb"
    explicit = {"noise": {"model": "physics", "order": "after", "space": "srgb"}}
    assert config_from_dict(explicit).fingerprint() == config_from_dict({"noise": {"model": "physics"}}).fingerprint()
    assert config_from_dict({"noise": {"camera": "virtual", "gain": None}}).fingerprint() == \
        config_from_dict({}).fingerprint()


def test_preview_label_of_a_physics_pair_names_camera_and_gain():
    row = {"source": "a.png", "params": {"alpha": 1, "beta": 1, "gamma": 2, "noise": {
        "model": "physics", "camera": "SonyA7S2", "K": 2.3456, "order": "after", "space": "srgb"}}}
    lines = preview.label_lines(row)
    assert "noise physics SonyA7S2, K 2.35" in lines and not any("srgb" in line for line in lines)
    other = dict(row, params=dict(row["params"], noise={"model": "poisson", "peak": 5, "order": "after",
                                                        "space": "srgb"}))
    assert "noise poisson (srgb, after)" in preview.label_lines(other)


def test_yaml_11_exponent_numbers_are_numbers(tmp_path):
    given = load_config(None, ["noise.model=physics", "noise.gain=[1e-1, 1e1]", "save.shard_pairs=1e3",
                               "noise.peak=[1e2, 1E3]"], check_paths=False)
    plain = load_config(None, ["noise.model=physics", "noise.gain=[0.1, 10]", "save.shard_pairs=1000",
                               "noise.peak=[100, 1000]"], check_paths=False)
    assert given == plain and given.fingerprint() == plain.fingerprint()
    path = tmp_path / "c.yaml"
    path.write_text("darken:\n  gamma: [2e0, 3e0]\n", encoding="utf-8")
    assert load_config(path, check_paths=False).darken.gamma == (2.0, 3.0)
    assert load_config(None, ["input=1e6"], check_paths=False).input == "1e6"  # text keys stay text
    with pytest.raises(ConfigError, match="save.shard_pairs"):
        load_config(None, ["save.shard_pairs=1.5e0"], check_paths=False)  # not a whole number


def test_duplicate_yaml_key_is_refused_in_one_line(run_cli, four, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nnoise:\n  model: none\n  model: physics\n", encoding="utf-8")
    line = _one_line(run_cli("--config", path, *_io(four, tmp_path / "out"), defaults=False))
    assert "'model' is given twice" in line and "line 4" in line
    line = _one_line(run_cli(*_io(four, tmp_path / "out"), "--set", "noise={model: none, model: physics}"))
    assert "given twice" in line and "quote it" not in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 14. smaller items

def test_tensors_are_made_from_writable_arrays(tmp_path, monkeypatch):
    from lowlight_gpu import dataset

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {"one.png": (1, 1), "b.png": (5, 4)})
    assert cli.main(["--set", f"input={inp}", "--set", f"output={out}", "--set", "backend=numpy", "--quiet",
                     "--set", "noise.model=none"]) == 0
    seen = []

    class Tensor:
        def float(self):
            return self

        def div_(self, value):
            return self

    def from_numpy(array):  # torch warns "The given NumPy array is not writable" for a read-only one
        seen.append(array.flags.writeable)
        return Tensor()

    monkeypatch.setattr(dataset, "torch", types.SimpleNamespace(from_numpy=from_numpy))
    ds = dataset.PairDataset(out, as_tensor=True)
    for i in range(len(ds)):
        ds[i]
    assert seen == [True] * 4  # was False for the 1x1 image's low and high


def test_tensors_raise_no_warning_with_torch(tmp_path):
    pytest.importorskip("torch")
    import warnings

    from lowlight_gpu import dataset

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {"one.png": (1, 1)})
    assert cli.main(["--set", f"input={inp}", "--set", f"output={out}", "--set", "backend=numpy", "--quiet"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = dataset.PairDataset(out, as_tensor=True)[0]
    assert tuple(low.shape) == (3, 1, 1)


def _png_header_only(w, h):
    """A PNG whose header claims w x h but whose pixel data is a stub."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def _generate(*args, **kw):
    """Run generate.py in a subprocess with this tree first on the path."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(REPO_ROOT / "generate.py"), "--set", "backend=numpy", "--quiet",
                           *map(str, args)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_a_decompression_bomb_is_an_errors_row_without_a_warning(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "big.png").write_bytes(_png_header_only(10000, 10000))  # 100 MP: above Pillow's warning limit
    write_image(inp / "ok.png", 4, 4)
    res = _generate(*_io(inp, out), "--set", "noise.model=none")
    assert res.returncode == 3, res.stderr
    assert "DecompressionBombWarning" not in res.stderr and "warn" not in res.stderr.lower()
    error, = read_jsonl(out / "errors.jsonl")
    assert error["source"] == "big.png" and error["error"].startswith("decompression bomb")


def test_a_closed_stdout_after_a_good_run_exits_0(tmp_path, four):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    args = [sys.executable, str(REPO_ROOT / "generate.py"), "--set", "backend=numpy", "--quiet",
            "--set", "noise.model=none", *_io(four, tmp_path / "out")]
    for _ in range(2):  # a first run and a no-op rerun: the reader (`| head -0`) is gone before the summary
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err and "report" not in err


def test_lock_message_says_wait_once(run_cli, four, out_dir):
    for held in ((0, 1), (0, 2)):  # the same shard, then a run of another count
        lock = locks.OutputLock(str(out_dir)).acquire_shard(*held)
        try:
            # one worker, in a thread: a forked worker process would inherit this test's lock
            line = _one_line(run_cli(*_io(four, out_dir), "--set", "workers=1"), code=5)
        finally:
            lock.release()
        assert line.replace(str(out_dir), "").count("wait") == 1 and f"pid {os.getpid()}" in line


@pytest.mark.parametrize("value", ["-1/2", "-0/2", "--x"])
def test_negative_shard_is_a_clear_one_line_error(run_cli, four, out_dir, value):
    line = _one_line(run_cli(*_io(four, out_dir), "--shard", value))
    if value.startswith("--"):
        assert "expected one argument" in line  # a real missing value is still said so
    else:
        assert f"'{value}'" in line and "0 <= I < N" in line and "expected one argument" not in line


def test_an_input_without_images_is_refused_before_writing(run_cli, tmp_path, out_dir):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "notes.txt").write_text("not a photo")
    for extra in ([], ["--dry-run"]):
        line = _one_line(run_cli(*_io(inp, out_dir), *extra))
        assert f"no images in '{inp}'" in line and "1 not an image" in line
        assert not out_dir.exists()
    write_image(inp / "d" / "deep.png", 3, 3)
    assert run_cli(*_io(inp, out_dir), "--shard", "0/1").code == 0
