"""decode.device: gpu (decode_gpu.py) against a stand-in nvImageCodec; the real one runs in scripts/gpu_check.sh."""

import io
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from conftest import read_jsonl, read_png, write_image, write_images
from lowlight_gpu import decode_gpu, imageio, pipeline
from lowlight_gpu.config import load_config
from lowlight_gpu.tools import verify


class _FakeImage:
    """What nvimgcodec.Decoder.decode returns: something with .cpu() that numpy reads."""

    def __init__(self, array):
        self.array = array

    def cpu(self):
        return self.array


def _fake_nvimgcodec(shift=1):
    """A stand-in nvidia.nvimgcodec: Pillow's decode without EXIF rotation, every value + shift (another IDCT)."""
    mod = types.ModuleType("nvidia.nvimgcodec")
    mod.__version__ = "0.0-test"
    mod.ColorSpec = types.SimpleNamespace(RGB="rgb", SRGB="srgb")
    mod.calls = []

    class DecodeParams:
        def __init__(self, **kw):
            assert kw["apply_exif_orientation"] is False  # decode_gpu orients on the host, as the CPU path does
            self.kw = kw

    class Decoder:
        def __init__(self, **kw):
            assert kw.get("max_num_cpu_threads") == 1
            mod.options = kw.get("options")

        def decode(self, data, params=None):
            mod.calls.append(len(data))
            try:
                with Image.open(io.BytesIO(data)) as im:
                    rgb = np.asarray(im.convert("RGB")).astype(np.int16)
            except Exception:  # noqa: BLE001 - like nvImageCodec: nothing for a file it cannot decode
                return None
            return _FakeImage(np.clip(rgb + shift, 0, 255).astype(np.uint8))

    mod.Decoder, mod.DecodeParams = Decoder, DecodeParams
    return mod


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install the stand-in as nvidia.nvimgcodec for this test."""
    mod = _fake_nvimgcodec()
    pkg = types.ModuleType("nvidia")
    pkg.nvimgcodec = mod
    monkeypatch.setitem(sys.modules, "nvidia", pkg)
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", mod)
    monkeypatch.setattr(decode_gpu, "_MODULE", [])
    monkeypatch.setattr(decode_gpu, "_LOCAL", type(decode_gpu._LOCAL)())
    return mod


def _config(inp, out, *sets):
    return load_config(None, [f"input={inp}", f"output={out}", "backend=numpy", "workers=1", *sets])


def test_jpegs_go_to_the_gpu_with_exif_orientation(tmp_path, fake_gpu):
    path = write_image(tmp_path / "r.jpg", 20, 12, exif=_exif(6))
    got = decode_gpu.decode(path, 10**8)
    cpu = imageio.decode(path, 10**8)
    assert isinstance(got, decode_gpu.GpuDecoded) and got.decoder == "nvimgcodec"
    assert got.rgb.shape == cpu.rgb.shape == (20, 12, 3) and not got.rgb.flags.writeable
    diff = got.rgb.astype(int) - cpu.rgb.astype(int)
    assert ((diff == 1) | (cpu.rgb == 255)).all()  # the same upright image, through the stand-in's "IDCT"


def test_other_formats_and_failures_fall_back_to_the_cpu(tmp_path, fake_gpu):
    png = write_image(tmp_path / "a.png", 9, 7)
    gray = write_image(tmp_path / "g.jpg", 9, 7, mode="L")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "g.jpg").read_bytes()[:40])
    for path in (png, gray):
        got = decode_gpu.decode(path, 10**8)
        assert not isinstance(got, decode_gpu.GpuDecoded)
        assert np.array_equal(got.rgb, imageio.decode(path, 10**8).rgb)
    with pytest.raises(imageio.DecodeError) as cpu_error:
        imageio.decode(cut, 10**8)
    with pytest.raises(imageio.DecodeError) as gpu_error:
        decode_gpu.decode(cut, 10**8)
    assert str(gpu_error.value) == str(cpu_error.value)
    big = write_image(tmp_path / "big.jpg", 30, 30)
    with pytest.raises(imageio.DecodeError, match="decompression bomb"):
        decode_gpu.decode(big, 100)
    assert fake_gpu.calls == []  # none of these reached the GPU decoder


def test_rows_and_dataset_record_the_decoder_and_verify_replays(tmp_path, fake_gpu, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)  # a.png (CPU fallback) and b.jpg (GPU)
    pipeline.run(_config(inp, out, "decode.device=gpu"))
    rows = {r["source"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert rows["a.png"]["decoder"] == "pillow" and rows["b.jpg"]["decoder"] == "nvimgcodec"
    info = json.loads((out / "dataset.json").read_text())
    assert info["decoder"] == {"name": "nvimgcodec", "version": "0.0-test",
                               "fallback": {"name": "pillow", "version": Image.__version__}}
    high = read_png(out / rows["b.jpg"]["high"])
    assert not np.array_equal(high, imageio.decode(inp / "b.jpg", 10**8).rgb)  # the GPU's pixels were stored
    sys.modules.pop("nvidia.nvimgcodec")  # --verify runs anywhere, without nvImageCodec
    assert verify.main(_config(inp, out, "decode.device=gpu"), None) == verify.EXIT_OK


def test_cpu_runs_never_import_the_gpu_decoder(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "lowlight_gpu.decode_gpu")
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)
    pipeline.run(_config(inp, out))
    assert "lowlight_gpu.decode_gpu" not in sys.modules and "nvidia.nvimgcodec" not in sys.modules
    assert {r["decoder"] for r in read_jsonl(out / "manifest.jsonl")} == {"pillow"}


def test_gpu_decoding_without_nvimgcodec_exits_2_before_writing(run_cli, input_dir, out_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # import fails
    monkeypatch.setattr(decode_gpu, "_MODULE", [])
    res = run_cli("--set", f"input={input_dir}", "--set", f"output={out_dir}", "--set", "decode.device=gpu")
    assert res.code == 2 and "Traceback" not in res.err
    assert res.err.strip().count("\n") == 0 and "decode.device" in res.err and "nvImageCodec" in res.err
    assert not out_dir.exists()


def test_an_api_drift_is_logged_once_and_counted_not_silent(run_cli, tmp_path, fake_gpu):
    """A changed nvImageCodec API (here: Decoder.decode gone) is one stderr line with its reason and a count."""
    del fake_gpu.Decoder.decode  # decoder.decode(...) now raises AttributeError, as after a renamed method
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {"a.png": (9, 7), "b.jpg": (11, 8), "c.jpg": (10, 6)})
    res = run_cli("--set", f"input={inp}", "--set", f"output={out}", "--set", "decode.device=gpu")
    assert res.code == 0, res
    logged = [line for line in res.err.splitlines() if "nvImageCodec failed on" in line]
    assert len(logged) == 1 and "AttributeError" in logged[0] and "'decode'" in logged[0], res.err
    assert "b.jpg" in logged[0]  # the first JPEG of the run, named
    summary = [line for line in res.err.splitlines() if "fell back to the CPU decoder" in line]
    assert len(summary) == 1 and summary[0].startswith("lowlight-gpu: 2 JPEG(s) fell back to the CPU decoder: "
                                                       "AttributeError: "), res.err
    assert summary[0].endswith("(2)")
    rows = read_jsonl(out / "manifest.jsonl")
    assert {r["decoder"] for r in rows} == {"pillow"}  # the CPU decoded them, and the rows say so
    res = run_cli("--set", f"input={inp}", "--set", f"output={out}", "--set", "decode.device=gpu")
    assert "fell back" not in res.err  # a rerun that reuses every pair decodes nothing: its own count is 0


def test_a_wrong_image_from_the_gpu_is_counted_with_its_reason(tmp_path, fake_gpu, capsys):
    path = write_image(tmp_path / "r.jpg", 20, 12)
    real = fake_gpu.Decoder.decode
    fake_gpu.Decoder.decode = lambda self, data, params=None: _FakeImage(real(self, data, params).array[:5])
    decode_gpu.reset_fallbacks()
    try:
        got = decode_gpu.decode(path, 10**8)
        again = decode_gpu.decode(path, 10**8)
        count, reasons = decode_gpu.fallbacks()
    finally:
        decode_gpu.reset_fallbacks()
    assert not isinstance(got, decode_gpu.GpuDecoded) and np.array_equal(got.rgb, imageio.decode(path, 10**8).rgb)
    assert not isinstance(again, decode_gpu.GpuDecoded)
    assert count == 2 and len(reasons) == 1 and "(5, 20, 3)" in next(iter(reasons)), reasons
    assert capsys.readouterr().err.count("nvImageCodec failed on") == 1  # logged once, counted twice


def _exif(orientation):
    """EXIF bytes holding only an Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()
