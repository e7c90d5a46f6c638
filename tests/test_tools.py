"""Tests for --verify, --preview and --report (and the report written at the end of a run)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowlight_gpu.synth.spec import FORMAT_VERSION
from lowlight_gpu.tools import preview, report, report_draw, report_stats, spread, verify

from conftest import read_jsonl, read_png, write_image


def _io(inp, out):
    return ["--set", f"input={inp}", "--set", f"output={out}"]


def _tamper(path, index=(3, 4, 1), delta=1):
    """Change one value of one pixel of a PNG (re-encoded losslessly)."""
    a = read_png(path)
    a[index] = (int(a[index]) + delta) % 256
    Image.fromarray(a).save(path)


@pytest.fixture
def dataset(run_cli, input_dir, out_dir):
    """A generated dataset of the two default tiny images; returns (input_dir, out_dir)."""
    res = run_cli(*_io(input_dir, out_dir))
    assert res.code == 0, res
    return input_dir, out_dir


# ---------------------------------------------------------------- verify

def test_verify_passes_on_an_untouched_dataset(run_cli, dataset):
    res = run_cli(*_io(*dataset), "--verify")
    assert res.code == 0, res
    assert "2 of 2 rows replayed, 4 files compared: all match" in res.out


def test_verify_notes_a_dataset_of_another_format_version(run_cli, dataset):
    inp, out = dataset
    info = json.loads((out / "dataset.json").read_text())
    assert info["format_version"] == FORMAT_VERSION
    info["format_version"] = FORMAT_VERSION - 1
    (out / "dataset.json").write_text(json.dumps(info))
    res = run_cli(*_io(inp, out), "--verify")
    assert f"made by format version {FORMAT_VERSION - 1} of the model and this is version {FORMAT_VERSION}" in res.out


def test_verify_n_replays_a_spread_of_rows(run_cli, dataset):
    res = run_cli(*_io(*dataset), "--verify", "1")
    assert res.code == 0, res
    assert "1 of 2 rows replayed, 2 files compared: all match" in res.out


def test_spread_is_deterministic_and_even():
    assert spread(10, 3) == [0, 3, 6]
    assert spread(3, 10) == [0, 1, 2]
    assert spread(5, None) == [0, 1, 2, 3, 4]
    assert spread(5, 0) == []


@pytest.mark.parametrize("target", ["low/a.png", "high/b.png"])
def test_verify_catches_a_single_changed_pixel(run_cli, dataset, target):
    inp, out = dataset
    _tamper(out / target)
    res = run_cli(*_io(inp, out), "--verify")
    assert res.code == verify.EXIT_DIFFERS == 1, res
    named = [line for line in res.out.splitlines() if line.startswith("DIFFERS")]
    assert len(named) == 1 and target in named[0] and "1 of" in named[0], res.out
    assert "1 differ" in res.out


def test_verify_compares_pixels_not_bytes(run_cli, dataset):
    inp, out = dataset
    Image.open(out / "low/a.png").save(out / "low/a.png", compress_level=9)  # other bytes, same pixels
    assert run_cli(*_io(inp, out), "--verify").code == 0


def test_verify_names_a_missing_file(run_cli, dataset):
    inp, out = dataset
    (out / "low/b.png").unlink()
    res = run_cli(*_io(inp, out), "--verify")
    assert res.code == 1 and "MISSING: low/b.png" in res.out, res


def test_verify_reports_a_gone_source(run_cli, dataset):
    inp, out = dataset
    (inp / "b.jpg").unlink()
    res = run_cli(*_io(inp, out), "--verify")
    assert res.code == verify.EXIT_UNREPLAYABLE == 3, res
    assert "CANNOT REPLAY: b.jpg" in res.out and "gone" in res.out


def test_verify_without_a_dataset_is_a_one_line_error(run_cli, input_dir, tmp_path):
    res = run_cli(*_io(input_dir, tmp_path / "nothing"), "--verify")
    assert res.code == 2 and "manifest.jsonl" in res.err and len(res.err.strip().splitlines()) == 1


def test_verify_progressive_steps_clean_images_and_alpha(run_cli, tmp_path, out_dir):
    inp = tmp_path / "in"
    write_image(inp / "a.png", 37, 23, "RGBA", seed=1)
    write_image(inp / "b.png", 20, 31, seed=2)
    sets = _io(inp, out_dir) + ["--set", "progressive.enabled=true", "--set", "progressive.steps=3",
                                "--set", "progressive.save=all", "--set", "save.clean_low=true"]
    assert run_cli(*sets).code == 0
    assert run_cli(*sets, "--verify").code == 0
    _tamper(out_dir / "low/t02/b.png")
    _tamper(out_dir / "low_clean/t03/a.png", index=(0, 0, 3))  # the alpha channel of a clean step
    res = run_cli(*sets, "--verify")
    assert res.code == 1
    named = sorted(line.split(":")[1].strip() for line in res.out.splitlines() if line.startswith("DIFFERS"))
    assert named == ["low/t02/b.png", "low_clean/t03/a.png"], res.out
    assert "alpha" in res.out


def test_verify_uses_the_recorded_layout(run_cli, dataset, tmp_path):
    """A dataset made with another layout than the config given still replays (dataset.json says how)."""
    inp, _ = dataset
    out = tmp_path / "mb"
    assert run_cli(*_io(inp, out), "--set", "layout=mbllen").code == 0
    res = run_cli(*_io(inp, out), "--verify")
    assert res.code == 0 and "6 files compared: all match" in res.out, res


def test_verify_flags_tampered_params(run_cli, dataset):
    inp, out = dataset
    rows = read_jsonl(out / "manifest.jsonl")
    rows[0]["params"]["gamma"] += 0.5
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli(*_io(inp, out), "--verify")
    assert res.code == 1 and "manifest.jsonl" in res.out and "low/a.png" in res.out, res


def test_verify_allows_no_difference_at_all():
    want = np.zeros((100, 100, 3), np.uint8)
    assert verify.pixel_difference(want.copy(), want) is None
    got = want.copy()
    got[5, 5, 0] = 1  # 1 LSB on 1 of 30000 values: a difference like any other (every backend is exact)
    assert verify.pixel_difference(got, want) == "1 of 30000 values differ (max |diff| 1 at row 5, column 5)"


# ---------------------------------------------------------------- preview

def test_preview_opens_with_the_expected_size(run_cli, dataset):
    inp, out = dataset
    res = run_cli(*_io(inp, out), "--preview")
    assert res.code == 0 and "preview.png" in res.out, res
    with Image.open(out / "preview.png") as im:
        im.load()
        # Two pairs, columns high + low; the widest source (37x23) scaled to 256 tall is capped at MAX_CELL_W.
        cell_w = min(preview.MAX_CELL_W, round(preview.CELL_H * 37 / 23))
        width = preview.PAD + preview.LABEL_W + 2 * (cell_w + preview.PAD)
        height = preview.PAD + 2 * (preview.CAPTION_H + preview.CELL_H + preview.PAD)
        assert im.size == (width, height) and im.mode == "RGB"
        # The high image of the first row is really there: its cell is not plain background.
        cell = np.asarray(im)[preview.PAD + preview.CAPTION_H:, preview.PAD + preview.LABEL_W:][:preview.CELL_H]
        assert cell.std() > 10


def test_preview_shows_progressive_steps_and_samples_rows(run_cli, input_dir, out_dir):
    sets = _io(input_dir, out_dir) + ["--set", "progressive.enabled=true", "--set", "progressive.steps=3",
                                      "--set", "progressive.save=all"]
    assert run_cli(*sets).code == 0
    path = preview.write_preview(out_dir, rows=1)
    with Image.open(path) as im:
        cell_w = min(preview.MAX_CELL_W, round(preview.CELL_H * 37 / 23))  # only a.png (row 0) is sampled
        assert im.size == (preview.PAD + preview.LABEL_W + 4 * (cell_w + preview.PAD),
                           preview.PAD + preview.CAPTION_H + preview.CELL_H + preview.PAD)
    row = read_jsonl(out_dir / "manifest.jsonl")[0]
    assert [c for c, _ in preview.row_columns(row)] == ["high", "t=1", "t=2", "t=3 (low)"]
    label = "\n".join(preview.label_lines(row))
    for word in ("a.png", "alpha", "beta", "gamma", "peak", "read_sigma"):
        assert word in label


def test_preview_caps_the_step_columns():
    steps = [{"t": t, "path": f"low/t{t:03d}/x.png"} for t in range(1, 101)]
    cols = preview.row_columns({"high": "high/x.png", "low": steps[-1]["path"], "steps": steps})
    assert len(cols) == 1 + preview.MAX_STEP_COLUMNS
    assert cols[1][0] == "t=1" and cols[-1][0] == "t=100 (low)"


# ---------------------------------------------------------------- report

@pytest.mark.end_report
def test_run_writes_the_report_at_the_end(dataset):
    _, out = dataset
    with Image.open(out / "report.png") as im:
        im.load()
        # alpha, beta, gamma, peak, read_sigma histograms + brightness + noise panels.
        assert im.size == report_draw.sheet_size(7) == (3 * report_draw.PANEL_W, report_draw.TITLE_H + 3 * report_draw.PANEL_H)
    text = (out / "report.md").read_text()
    for word in ("alpha", "gamma", "peak", "read_sigma", "brightness", "Noise", "report.png"):
        assert word in text


@pytest.mark.end_report
def test_report_flag_and_noise_estimate(run_cli, tmp_path, out_dir):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):  # flat images, big enough for a meaningful noise estimate
        Image.fromarray(np.full((64, 80, 3), 140 + 30 * i, np.uint8)).save(inp / f"f{i}.png")
    sets = _io(inp, out_dir) + ["--set", "darken.gamma=1.5", "--set", "noise.peak=200"]
    assert run_cli(*sets).code == 0
    (out_dir / "report.png").unlink()
    res = run_cli(*sets, "--report")
    assert res.code == 0 and "report.png" in res.out and "report.md" in res.out
    assert (out_dir / "report.png").exists()
    stats = [report_stats.image_stats(str(out_dir), row) for row in read_jsonl(out_dir / "manifest.jsonl")]
    for s in stats:
        assert s["low"] < s["high"]
        assert s["estimated"] == pytest.approx(s["declared"], rel=0.1)
    assert "median" in (out_dir / "report.md").read_text()


@pytest.mark.end_report
def test_no_report_for_a_shard(run_cli, input_dir, out_dir):
    assert run_cli(*_io(input_dir, out_dir), "--shard", "0/2").code == 0
    assert not (out_dir / "report.png").exists()


def test_matplotlib_is_imported_only_to_draw_the_report():
    code = ("import sys, numpy, lowlight_gpu as ll, lowlight_gpu.cli, lowlight_gpu.tools.report as r, lowlight_gpu.tools.report_draw as d; "
            "ll.synthesize(numpy.zeros((2, 2, 3), numpy.uint8), ll.sample_params(1)); "
            "print('matplotlib' in sys.modules); d.draw_report({'alpha': [0.9]}, [], 1); "
            "print('matplotlib' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "True"]


def test_report_ranges_and_shares():
    assert math.isclose(report_draw.widen(2.0, 2.0, False)[0], 1.8)
    assert report_draw.widen(10.0, 10.0, True) == pytest.approx((10 / 1.5, 15.0))
    assert report_draw.widen(0.1, 0.3, False) == (0.1, 0.3)


def test_pairs_within_the_budget_are_spread_and_at_least_one():
    assert report_stats.pairs_within([100] * 10, 1000, 64) == 10  # all fit
    assert report_stats.pairs_within([100] * 10, 450, 64) == 4
    assert report_stats.pairs_within([100] * 10, 10 ** 6, 3) == 3  # capped by the sample size
    assert report_stats.pairs_within([10 ** 6] * 5, 10, 64) == 1  # one pair even when it alone exceeds the budget
    assert report_stats.pairs_within([], 10, 64) == 0
    # Rows 0, 2, 4 (spread(6, 3)) hold 10 + 10 + 10; rows 0, 1, 3, 4 (spread(6, 4)) hold 10 + 500 + ...: too many.
    assert report_stats.pairs_within([10, 500, 10, 500, 10, 500], 40, 64) == 3


def _panel_boxes(n):
    """(left, top, right, bottom) of each panel's plot area in report.png."""
    boxes = []
    for i in range(n):
        left = (i % report_draw.COLUMNS) * report_draw.PANEL_W + report_draw.MARGIN[0]
        top = report_draw.TITLE_H + (i // report_draw.COLUMNS) * report_draw.PANEL_H + report_draw.MARGIN[1]
        boxes.append((left, top, left - report_draw.MARGIN[0] + report_draw.PANEL_W - report_draw.MARGIN[2],
                      top - report_draw.MARGIN[1] + report_draw.PANEL_H - report_draw.MARGIN[3]))
    return boxes


@pytest.mark.end_report
def test_report_draws_every_panel(dataset):
    _, out = dataset
    rows = read_jsonl(out / "manifest.jsonl")
    values = report_stats.parameter_values(rows)
    stats = [report_stats.image_stats(str(out), row) for row in rows]
    names = [name for name, _ in report_draw.panels(values, stats)]
    assert names == ["alpha", "beta", "gamma", "peak", "read_sigma", "brightness", "noise"]
    sheet = read_png(out / "report.png")
    blank = np.full(3, 255)
    for name, (left, top, right, bottom) in zip(names, _panel_boxes(len(names))):
        area = sheet[top + 2:bottom - 2, left + 2:right - 2].reshape(-1, 3)
        coloured = np.any(np.abs(area.astype(int) - blank) > 40, axis=1)
        # Bars, dots, a line or a note: each plot area holds more than its frame and light grid.
        assert coloured.sum() >= 20, name
    # The space right of the last panel stays empty.
    empty = sheet[report_draw.TITLE_H + 2 * report_draw.PANEL_H:, report_draw.PANEL_W + 1:]
    assert (empty == 255).all()


@pytest.mark.end_report
def test_report_is_deterministic_and_a_rerun_leaves_it(dataset):
    _, out = dataset
    png = (out / "report.png").read_bytes()
    before = (out / "report.png").stat().st_mtime_ns
    report.write_report(out)
    assert (out / "report.png").read_bytes() == png
    assert (out / "report.png").stat().st_mtime_ns == before
    assert b"Software" not in png and b"tEXt" not in png  # no encoder or date metadata that would vary


def test_report_reads_whole_images_of_as_many_pairs_as_its_pixel_budget_holds(run_cli, tmp_path, out_dir,
                                                                              monkeypatch):
    """A dataset of images bigger than the report's share: fewer pairs are decoded, each whole, within budget."""
    inp = tmp_path / "in"
    for i in range(4):
        write_image(inp / f"p{i}.png", 203, 151, seed=i)  # 30653 pixels each, odd width
    assert run_cli(*_io(inp, out_dir)).code == 0
    decoded = []
    real = report_stats.imageio.decode

    def counting(path, *args, **kwargs):
        d = real(path, *args, **kwargs)
        decoded.append(d.rgb.shape[0] * d.rgb.shape[1])
        return d

    monkeypatch.setattr(report_stats.imageio, "decode", counting)
    budget = 2 * 30653 + 100  # two pairs' worth of each side
    report.write_report(out_dir, pixel_budget=budget)
    assert len(decoded) == 4 and set(decoded) == {203 * 151}  # high and low of 2 pairs, each whole
    assert sum(decoded) <= 2 * budget
    text = (out_dir / "report.md").read_text()
    assert "## Images (2 pairs sampled" in text and f"budget of {budget} pixels" in text
    decoded.clear()
    report.write_report(out_dir, pixel_budget=4 * 40000)  # room for every pair
    assert len(decoded) == 8 and set(decoded) == {203 * 151}
    assert "## Images (4 pairs sampled" in (out_dir / "report.md").read_text()
    assert "budget" not in (out_dir / "report.md").read_text()
    decoded.clear()
    report.write_report(out_dir, pixel_budget=10)  # one pair, even above the budget
    assert len(decoded) == 2 and "## Images (1 pairs sampled" in (out_dir / "report.md").read_text()


def test_transfer_pairs_are_the_physics_rows_spread():
    rows = [{"params": {"noise": {"model": "physics" if i % 2 else "poisson-gaussian"}}} for i in range(30)]
    picked = sorted(report_stats.transfer_rows(rows))
    assert len(picked) == report_stats.TRANSFER_PAIRS and all(i % 2 for i in picked)
    assert picked[0] == 1 and picked[-1] > 20
    assert report_stats.transfer_rows(rows[:1]) == set()


@pytest.mark.end_report
def test_report_photon_transfer_panel_for_physics(run_cli, tmp_path, out_dir):
    inp = tmp_path / "in"
    inp.mkdir()
    for i, level in enumerate((110, 230)):  # flat fields: the measured variance follows the declared line
        Image.fromarray(np.full((40, 48, 3), level, np.uint8)).save(inp / f"f{i}.png")
    sets = _io(inp, out_dir) + ["--set", "noise.model=physics", "--set", "save.raw=true",
                                "--set", "darken.gamma=1.2"]
    assert run_cli(*sets).code == 0
    text = (out_dir / "report.md").read_text()
    assert "## Photon transfer (2 physics pairs" in text
    rows = read_jsonl(out_dir / "manifest.jsonl")
    stats = [report_stats.image_stats(str(out_dir), row, 10 ** 6) for row in rows]
    transfer = [s["transfer"] for s in stats]
    names = [name for name, _ in report_draw.panels(report_stats.parameter_values(rows), stats, {}, transfer)]
    assert names == ["alpha", "beta", "gamma", "brightness", "noise", "photon transfer"]
    with Image.open(out_dir / "report.png") as im:
        assert im.size == report_draw.sheet_size(6)  # alpha, beta, gamma, brightness, noise, photon transfer
    for row, s in zip(rows, stats):
        points = s["transfer"]
        ratio = np.asarray(points["measured"]) / np.asarray(points["declared"])
        assert len(ratio) >= 2 and 0.75 < float(np.median(ratio)) < 1.33, ratio
        # Without save.raw the mosaics are re-rendered from the high image: the same points.
        high = read_png(out_dir / row["high"])[..., :3]
        bare = {k: v for k, v in row.items() if k not in ("raw_clean", "raw_low")}
        again = report_stats.pair_transfer(str(out_dir), bare, high, 10 ** 6)
        for k in ("mean", "measured", "declared"):
            assert np.array_equal(again[k], points[k]), k
