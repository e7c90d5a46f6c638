"""Tests for the command line: --help, exit codes, one-line config errors, --limit, --dry-run, the summary."""

from __future__ import annotations

import os
import re

import pytest

from lowlight_gpu import __version__, cli

from conftest import REPO_ROOT, read_jsonl, run_subprocess, tree_mtimes, write_images

SUMMARY = re.compile(r"(\d+) pairs(?: \((\d+) already done\))?, (\d+) errors, [0-9.]+ pairs/s")
FIX_WORDS = ("did you mean", "must", "write it as", "set ", "use ", "pass ", "quote", "choose", "see --help",
             "rename", "expects", "expected", "list each")


def _io(inp, out):
    return ["--set", f"input={inp}", "--set", f"output={out}"]


def _assert_one_line_usage_error(res, *fragments, fix=True):
    assert res.code == 2, res
    assert "Traceback" not in res.err
    lines = res.err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be one line, got {res.err!r}"
    for fragment in fragments:
        assert fragment in res.err, f"{fragment!r} not in {res.err!r}"
    if fix:
        assert any(w in res.err for w in FIX_WORDS), f"no fix suggested in {res.err!r}"
    return lines[0]


def _summary(out):
    m = SUMMARY.search(out)
    assert m, f"no summary line in {out!r}"
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3))


# ---------------------------------------------------------------- help and version

def test_help_documents_every_option():
    res = run_subprocess("--help")
    assert res.code == 0 and "Traceback" not in res.err
    for opt in ("--config", "--set", "--limit", "--dry-run", "--shard", "--merge",
                "--verify", "--preview", "--report", "--quiet", "--version"):
        assert opt in res.out, opt
    assert "exit codes" in res.out and "0" in res.out and "2" in res.out and "3" in res.out


def test_version(run_cli):
    res = run_cli("--version", defaults=False)
    assert res.code == 0 and __version__ in res.out


# ---------------------------------------------------------------- bad config: real subprocesses

@pytest.mark.parametrize("args, fragments", [
    (["--set", "darken.gama=[2,3]"], ["darken.gama", "darken.gamma"]),
    (["--set", "darken.alpha=1.5"], ["darken.alpha", "1.5", "(0, 1]"]),
    (["--set", "workers=0"], ["workers", "0"]),
])
def test_bad_config_subprocess(tmp_path, input_dir, config_file, args, fragments):
    out = tmp_path / "never"
    res = run_subprocess("--config", config_file, *_io(input_dir, out), *args)
    _assert_one_line_usage_error(res, *fragments)
    assert res.out == ""
    assert not out.exists()


def test_missing_input_subprocess(tmp_path, config_file):
    out = tmp_path / "never"
    res = run_subprocess("--config", config_file, *_io(tmp_path / "no_such_folder", out))
    _assert_one_line_usage_error(res, "input", "no_such_folder")
    assert not out.exists()


def test_malformed_yaml_subprocess(tmp_path, input_dir):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("seed: 0\ndarken: {alpha: [0.9, 1.0\nnoise:\n  model: none\n", encoding="utf-8")
    out = tmp_path / "never"
    res = run_subprocess("--config", cfg, *_io(input_dir, out))
    _assert_one_line_usage_error(res, "broken.yaml", "YAML", "line", fix=False)
    assert not out.exists()


# ---------------------------------------------------------------- bad config: in process

BAD_SETS = [
    (["seeed=1"], ["seeed", "'seed'"]),
    (["noise.modle=none"], ["noise.modle", "noise.model"]),
    (["seed=abc"], ["seed", "abc"]),
    (["seed=-1"], ["seed", "-1"]),
    (["seed=1.5"], ["seed", "1.5"]),
    (["workers=0"], ["workers", "0"]),
    (["workers=-3"], ["workers", "-3"]),
    (["workers=two"], ["workers", "two"]),
    (["workers=true"], ["workers", "True"]),
    (["darken.alpha=0"], ["darken.alpha", "0"]),
    (["darken.alpha=[0.5,1.2]"], ["darken.alpha", "1.2"]),
    (["darken.beta=0"], ["darken.beta", "0"]),
    (["darken.beta=-0.5"], ["darken.beta", "-0.5"]),
    (["darken.gamma=0"], ["darken.gamma", "0"]),
    (["darken.gamma=-2"], ["darken.gamma", "-2"]),
    (["darken.gamma=[3,2]"], ["darken.gamma", "[3, 2]"]),
    (["darken.gamma=[1,2,3]"], ["darken.gamma", "[1, 2, 3]"]),
    (["darken.gamma=fast"], ["darken.gamma", "fast"]),
    (["darken.alpha=.nan"], ["darken.alpha", "nan"]),
    (["noise.peak=[1000,10]"], ["noise.peak", "[1000, 10]"]),
    (["noise.model=gausian"], ["noise.model", "gausian", "gaussian"]),
    (["noise.read_sigma=2"], ["noise.read_sigma", "2"]),
    (["backend=tpu"], ["backend", "tpu"]),
    (["layout=coco"], ["layout", "coco"]),
    (["max_pixels=0"], ["max_pixels", "0"]),
    (["save.compress_level=12"], ["save.compress_level", "12"]),
    (["progressive.enabled=maybe"], ["progressive.enabled", "maybe"]),
    (["progressive.steps=0"], ["progressive.steps", "0"]),
    (["progressive.enabled=true", "progressive.steps=4", "progressive.save=[5]"], ["progressive.save", "5"]),
    (["split={train: 0.5, val: 0.2}"], ["split", "0.7"]),
    (["darken=3"], ["darken", "3"]),
    (["nonsense"], ["nonsense", "KEY=VALUE"]),
    (["darken.gamma=[2,"], ["darken.gamma", "[2,"]),
]


@pytest.mark.parametrize("sets, fragments", BAD_SETS, ids=[" ".join(s) for s, _ in BAD_SETS])
def test_bad_set_exits_2_with_one_line(run_cli, tmp_path, input_dir, sets, fragments):
    out = tmp_path / "never"
    argv = _io(input_dir, out)
    for s in sets:
        argv += ["--set", s]
    res = run_cli(*argv)
    _assert_one_line_usage_error(res, *fragments)
    assert not out.exists()
    assert res.out == ""


@pytest.mark.parametrize("text, fragments", [
    ("seed: 0\nworkerz: 2\n", ["workerz", "workers"]),
    ("darken:\n  gamma: [5, 1]\n", ["darken.gamma", "[5, 1]"]),
    ("darken:\n  beta: 1.5\n", ["darken.beta", "1.5"]),
    ("noise: poisson\n", ["noise", "poisson"]),
    ("- a\n- b\n", ["cfg.yaml"]),
    ("seed: [unclosed\n", ["cfg.yaml", "YAML", "line"]),
    ("seed: 0\n\tworkers: 2\n", ["cfg.yaml", "YAML", "line 2"]),
])
def test_bad_yaml_file_exits_2_with_one_line(run_cli, tmp_path, input_dir, text, fragments):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text, encoding="utf-8")
    out = tmp_path / "never"
    res = run_cli("--config", cfg, *_io(input_dir, out))
    # A YAML syntax error names the file, line and column: that is where the fix goes.
    _assert_one_line_usage_error(res, *fragments, fix="YAML" not in fragments)
    assert not out.exists()


def test_missing_config_file(run_cli, tmp_path, input_dir):
    out = tmp_path / "never"
    res = run_cli("--config", tmp_path / "nope.yaml", *_io(input_dir, out))
    _assert_one_line_usage_error(res, "nope.yaml", "--config")
    assert not out.exists()


def test_missing_input_and_input_that_is_a_file(run_cli, tmp_path):
    out = tmp_path / "never"
    res = run_cli(*_io(tmp_path / "absent", out))
    _assert_one_line_usage_error(res, "input", "absent")
    afile = tmp_path / "file.png"
    afile.write_bytes(b"x")
    res = run_cli(*_io(afile, out))
    _assert_one_line_usage_error(res, "input", "file.png")
    assert not out.exists()


def test_output_that_is_a_file_or_below_a_file(run_cli, tmp_path, input_dir):
    afile = tmp_path / "taken"
    afile.write_text("keep me")
    res = run_cli(*_io(input_dir, afile))
    _assert_one_line_usage_error(res, "output", "taken")
    res = run_cli(*_io(input_dir, afile / "sub" / "out"))
    _assert_one_line_usage_error(res, "output", "taken")
    assert afile.read_text() == "keep me"


def test_output_equal_to_input_is_refused(run_cli, tmp_path, input_dir):
    before = sorted(p.name for p in input_dir.iterdir())
    res = run_cli(*_io(input_dir, input_dir))
    _assert_one_line_usage_error(res, "output", str(input_dir))
    res = run_cli(*_io(input_dir, tmp_path / "." / "in" / ".." / "in"))
    _assert_one_line_usage_error(res, "output")
    assert sorted(p.name for p in input_dir.iterdir()) == before


@pytest.mark.parametrize("argv, fragment", [
    (["--shard", "3/2"], "--shard"),
    (["--shard", "x"], "--shard"),
    (["--limit", "-1"], "--limit"),
    (["--limit", "many"], "--limit"),
    (["--bogus"], "--bogus"),
])
def test_bad_usage_exits_2_with_one_line(run_cli, tmp_path, input_dir, argv, fragment):
    out = tmp_path / "never"
    res = run_cli(*_io(input_dir, out), *argv)
    _assert_one_line_usage_error(res, fragment)
    assert not out.exists()


def test_rerun_with_other_config_is_refused_and_changes_nothing(run_cli, tmp_path, input_dir, out_dir):
    assert run_cli(*_io(input_dir, out_dir)).code == 0
    before = tree_mtimes(out_dir)
    res = run_cli(*_io(input_dir, out_dir), "--set", "seed=5")
    _assert_one_line_usage_error(res, "output", str(out_dir))
    assert tree_mtimes(out_dir) == before


def test_cupy_backend_without_gpu_exits_2(run_cli, tmp_path, input_dir):
    from lowlight_gpu import synth

    if synth.cupy_status()[0]:
        pytest.skip("a working GPU is present")
    out = tmp_path / "never"
    res = run_cli(*_io(input_dir, out), "--set", "backend=cupy")
    _assert_one_line_usage_error(res, "cupy")
    assert not out.exists()


# ---------------------------------------------------------------- exit codes 0 and 3, summary

def test_success_exit_0_and_summary(tmp_path, input_dir, out_dir, config_file):
    res = run_subprocess("--config", config_file, *_io(input_dir, out_dir),
                         "--set", "backend=numpy", "--set", "workers=2")
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    assert _summary(res.out) == (2, 0, 0)
    assert len(read_jsonl(out_dir / "manifest.jsonl")) == 2


def test_failed_inputs_exit_3(tmp_path, input_dir, out_dir, config_file):
    (input_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    res = run_subprocess("--config", config_file, *_io(input_dir, out_dir),
                         "--set", "backend=numpy", "--set", "workers=2")
    assert res.code == 3
    assert "Traceback" not in res.err and "errors.jsonl" in res.err
    assert _summary(res.out) == (2, 0, 1)
    assert [e["source"] for e in read_jsonl(out_dir / "errors.jsonl")] == ["broken.png"]


def test_summary_reports_already_done(run_cli, input_dir, out_dir):
    assert _summary(run_cli(*_io(input_dir, out_dir)).out) == (2, 0, 0)
    res = run_cli(*_io(input_dir, out_dir))
    assert res.code == 0
    assert _summary(res.out) == (2, 2, 0)


def test_keyboard_interrupt_is_one_line(run_cli, monkeypatch, input_dir, out_dir):
    from lowlight_gpu import pipeline

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run", interrupted)
    res = run_cli(*_io(input_dir, out_dir))
    assert res.code == 130
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert "resume" in res.err


# ---------------------------------------------------------------- --limit and --dry-run

def test_limit_processes_the_first_n_sorted_inputs(run_cli, tmp_path, out_dir):
    names = write_images(tmp_path / "many", {f"{c}.png": (5, 4) for c in "edcba"})
    res = run_cli(*_io(tmp_path / "many", out_dir), "--limit", "2")
    assert res.code == 0
    assert _summary(res.out)[0] == 2
    rows = read_jsonl(out_dir / "manifest.jsonl")
    assert [r["source"] for r in rows] == names[:2] == ["a.png", "b.png"]
    assert sorted(p.name for p in (out_dir / "low").iterdir()) == ["a.png", "b.png"]
    # Lifting the limit later resumes: the first two are reused, the rest made.
    res = run_cli(*_io(tmp_path / "many", out_dir))
    assert res.code == 0 and _summary(res.out) == (5, 2, 0)
    assert [r["source"] for r in read_jsonl(out_dir / "manifest.jsonl")] == names


def test_limit_zero_processes_nothing(run_cli, input_dir, out_dir):
    res = run_cli(*_io(input_dir, out_dir), "--limit", "0")
    assert res.code == 0 and "nothing written" in res.out
    assert not out_dir.exists()  # --limit 0 writes nothing, not even an empty manifest


def test_dry_run_writes_nothing(run_cli, tmp_path, input_dir, out_dir):
    res = run_cli(*_io(input_dir, out_dir), "--dry-run")
    assert res.code == 0
    assert not out_dir.exists()
    assert "2 input" in res.out and "a.png" in res.out
    # Also nothing changes in an existing output.
    assert run_cli(*_io(input_dir, out_dir)).code == 0
    write_images(input_dir, {"c.png": (3, 3)})
    before = tree_mtimes(out_dir)
    res = run_cli(*_io(input_dir, out_dir), "--dry-run", "--limit", "1")
    assert res.code == 0 and "1 input" in res.out
    assert tree_mtimes(out_dir) == before


def test_dry_run_still_validates_config(run_cli, tmp_path, input_dir):
    out = tmp_path / "never"
    res = run_cli(*_io(input_dir, out), "--dry-run", "--set", "darken.beta=2")
    _assert_one_line_usage_error(res, "darken.beta", "2")
    assert not out.exists()


def test_main_returns_exit_code_without_raising(tmp_path, input_dir, config_file, capsys):
    out = tmp_path / "o"
    code = cli.main(["--config", str(config_file), *_io(input_dir, out), "--set", "backend=numpy",
                     "--set", "workers=1", "--quiet"])
    assert code == 0
    assert (out / "manifest.jsonl").is_file()
    assert _summary(capsys.readouterr().out)[0] == 2


def test_without_config_yaml_here_the_builtin_defaults_apply(tmp_path, monkeypatch):
    """Run from a folder without config.yaml: the documented defaults, which equal the repo's config.yaml."""
    from lowlight_gpu.cli import config_path
    from lowlight_gpu.config import load_config

    repo_config = load_config(os.path.join(REPO_ROOT, "config.yaml"), check_paths=False)
    monkeypatch.chdir(tmp_path)
    assert config_path(None) is None
    assert load_config(config_path(None), check_paths=False) == repo_config
    assert config_path("mine.yaml") == "mine.yaml"


def test_command_returns_mains_exit_code(capsys):
    import gc

    try:
        assert cli.command(["--list-cameras"]) == cli.main(["--list-cameras"]) == 0
        assert cli.command(["--config", "no-such-file.yaml", "--dry-run"]) == 2  # an error's code, not 0
    finally:
        gc.unfreeze()  # command() freezes the collector for the interpreter's exit: not for the rest of the tests
    assert "virtual" in capsys.readouterr().out
