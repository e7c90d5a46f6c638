"""PNG encoders (encode.py): fpng and Pillow write the same pixels; save.encoder; codecs recorded and enforced."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import random_pixels, read_png, tree_bytes, write_images
from lowlight_gpu import encode, locks, manifest, merging, pipeline, run_record, worker_pool
from lowlight_gpu.errors import MergeError
from lowlight_gpu.config import ConfigError, load_config

fpng = pytest.importorskip("fpng")

SHAPES = [(1, 1), (23, 37), (1, 999), (998, 1), (31, 20)]  # (h, w): odd sizes, 1x1, single rows/columns


def _pixels(data):
    """The decoded pixels and mode of PNG bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy(), im.mode


@pytest.fixture
def no_fpng(monkeypatch):
    """Make `import fpng` fail inside encode.py for this test, and let auto's note print again."""
    monkeypatch.setattr(encode, "_FPNG_MODULE", [None])
    monkeypatch.setattr(encode, "_FALLBACK_NOTED", [])


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_fpng_decodes_to_the_arrays_written(shape, alpha):
    h, w = shape
    rgb = random_pixels(w, h, 3, seed=h * 1000 + w)
    a = random_pixels(w, h, 1, seed=7) if alpha else None
    enc = encode.resolve("fpng", 1)
    data = enc.encode(rgb, a)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pixels, mode = _pixels(data)
    assert mode == ("RGBA" if alpha else "RGB")
    want = np.dstack([rgb, a]) if alpha else rgb
    assert np.array_equal(pixels, want)
    assert enc.encode(rgb.copy(), None if a is None else a.copy()) == data  # deterministic
    # A view that is not C-contiguous (as EXIF rotation gives) encodes to the same bytes as its copy.
    assert enc.encode(np.ascontiguousarray(rgb[:, ::-1]), None) == enc.encode(rgb[:, ::-1], None)


def test_fpng_and_pillow_agree_on_pixels_not_bytes():
    rgb = random_pixels(40, 30, 3, seed=3)
    fast, slow = encode.resolve("fpng", 1).encode(rgb, None), encode.resolve("pillow", 1).encode(rgb, None)
    assert fast != slow
    assert np.array_equal(_pixels(fast)[0], _pixels(slow)[0])


def test_resolve_names_the_encoder_and_version():
    assert encode.resolve("auto", 1) == encode.Encoder("fpng", fpng.__version__, 1)
    pil = encode.resolve("pillow", 6)
    assert (pil.name, pil.version, pil.compress_level) == ("pillow", Image.__version__, 6)
    assert pil.label == f"pillow {Image.__version__} level 6"
    with pytest.raises(ValueError, match="save.encoder"):
        encode.resolve("png", 1)


def test_auto_without_fpng_falls_back_to_pillow_with_one_line(no_fpng, capsys):
    rgb = random_pixels(21, 13, 3, seed=5)
    first = encode.resolve("auto", 1)
    again = encode.resolve("auto", 1)
    assert first.name == again.name == "pillow"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "save.encoder auto -> pillow" in err and "fpng" in err
    assert first.encode(rgb, None) == encode.resolve("pillow", 1).encode(rgb, None)
    assert np.array_equal(_pixels(first.encode(rgb, None))[0], rgb)


def test_explicit_fpng_without_fpng_is_unavailable(no_fpng):
    with pytest.raises(encode.EncoderUnavailable, match="pip install fpng"):
        encode.resolve("fpng", 1)


# ---------------------------------------------------------------- in the pipeline

def _config(inp, out, *sets):
    return load_config(None, [f"input={inp}", f"output={out}", "backend=numpy", "workers=1", *sets])


def test_dataset_json_run_json_and_markers_record_the_encoder(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)
    pipeline.run(_config(inp, out))
    want = {"name": "fpng", "version": fpng.__version__}
    assert json.loads((out / "dataset.json").read_text())["encoder"] == want
    assert manifest.read_run(str(out))["encoder"] == want
    (marker,) = merging.done_markers(str(out))[1].values()
    assert marker["encoder"] == want and marker["decoder"]["name"] == "pillow"


def test_fallback_run_writes_the_same_pixels(tmp_path, no_fpng):
    inp = tmp_path / "in"
    write_images(inp, {"a.png": (37, 23), "b.jpg": (20, 31), "c.png": (9, 7, "RGBA")})
    pipeline.run(_config(inp, tmp_path / "slow"))
    encode._FPNG_MODULE[:] = [fpng]
    pipeline.run(_config(inp, tmp_path / "fast"))
    slow, fast = tree_bytes(tmp_path / "slow"), tree_bytes(tmp_path / "fast")
    assert sorted(slow) == sorted(fast) and slow != fast
    for rel in slow:
        assert np.array_equal(read_png(tmp_path / "slow" / rel), read_png(tmp_path / "fast" / rel)), rel
    assert json.loads((tmp_path / "slow" / "dataset.json").read_text())["encoder"]["name"] == "pillow"


def test_save_encoder_fpng_without_fpng_exits_2_before_writing(run_cli, input_dir, out_dir, no_fpng):
    res = run_cli("--set", f"input={input_dir}", "--set", f"output={out_dir}", "--set", "save.encoder=fpng")
    assert res.code == 2 and "save.encoder" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_resume_with_another_resolved_encoder_is_refused(tmp_path, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)
    pipeline.run(_config(inp, out), limit=1)
    before = tree_bytes(out)
    monkeypatch.setattr(encode, "_FPNG_MODULE", [None])  # the same config (auto) on a machine without fpng
    with pytest.raises(ConfigError) as info:
        pipeline.run(_config(inp, out))
    msg = str(info.value)
    assert msg.startswith("save.encoder:") and f"fpng {fpng.__version__}" in msg and "pillow" in msg
    assert "install" in msg and "new output folder" in msg
    with pytest.raises(ConfigError, match="save.encoder"):  # a shard of the same output: the same rule
        pipeline.run(_config(inp, out), shard=(1, 2))
    assert tree_bytes(out) == before


def test_merge_refuses_shards_of_different_encoders(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, {f"{k}.png": (9, 7) for k in "abcdef"})
    for i in range(2):
        pipeline.run(_config(inp, out), shard=(i, 2))
    marker = out / "parts" / f"{manifest.shard_tag(1, 2)}.done"
    body = json.loads(marker.read_text())
    body["encoder"] = {"name": "pillow", "version": Image.__version__}  # as if run.json had been deleted
    marker.write_text(json.dumps(body) + "\n")
    with pytest.raises(MergeError, match="save.encoder") as info:
        pipeline.merge(_config(inp, out))
    assert f"fpng {fpng.__version__}" in str(info.value) and f"pillow {Image.__version__}" in str(info.value)


def test_bytes_identical_across_workers_and_executors(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    write_images(inp, {f"{k}.png": (13 + i, 9) for i, k in enumerate("abcd")} | {"e.jpg": (20, 31)})
    trees = []
    runs = [(1, "threads", None), (2, "threads", None), (2, "processes", "fork"), (2, "processes", "loky"),
            (2, "encode-pool", None)]
    for k, (workers, executor, method) in enumerate(runs):
        monkeypatch.setenv(worker_pool.EXECUTOR_ENV, executor)
        worker_pool.release()  # a fresh pool, started the way this run asks
        if method:
            monkeypatch.setattr(worker_pool, "start_method", lambda *args, method=method: method)
        pipeline.run(_config(inp, tmp_path / str(k), f"workers={workers}"))
        trees.append(tree_bytes(tmp_path / str(k)))
    worker_pool.release()
    assert all(tree == trees[0] for tree in trees[1:])


def test_forked_workers_hold_no_lock_of_the_output(tmp_path, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)
    monkeypatch.delenv(worker_pool.EXECUTOR_ENV, raising=False)
    worker_pool.release()
    monkeypatch.setattr(worker_pool, "start_method", lambda *args: "fork")
    pipeline.run(_config(inp, out, "workers=2", "noise.model=poisson-gaussian"))
    assert worker_pool._POOL  # the workers are still running, forked from this process ...
    lock = locks.OutputLock(str(out)).acquire_shard(0, 1)  # ... and hold none of the run's files open
    lock.release()
    worker_pool.release()


def test_start_method_forks_only_a_single_threaded_cpu_run(monkeypatch):
    import sys
    import threading

    monkeypatch.setattr(sys, "platform", "linux")
    assert worker_pool.start_method("encode-pool") == "loky"  # a CUDA-owning process is never forked
    assert worker_pool.start_method("processes", "cupy") == "loky"  # nor one whose workers would use CUDA
    assert worker_pool.start_method("processes", "numpy", gpu_decode=True) == "loky"
    assert worker_pool.start_method("threads") == "loky"
    if threading.active_count() == 1:
        assert worker_pool.start_method("processes") == "fork"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert worker_pool.start_method("processes") == "loky"  # a fork would copy locks that thread may hold
    finally:
        stop.set()
        other.join()
    monkeypatch.setattr(sys, "platform", "darwin")
    assert worker_pool.start_method("processes") == "loky"


def test_executor_choice(monkeypatch):
    monkeypatch.delenv(worker_pool.EXECUTOR_ENV, raising=False)
    assert worker_pool.choose_executor("numpy", 1) == "threads"
    assert worker_pool.choose_executor("numpy", 2) == "processes"
    assert worker_pool.choose_executor("cupy", 16) == "encode-pool"
    assert worker_pool.choose_executor("numpy", 16, gpu_decode=True) == "encode-pool"
    assert worker_pool.choose_executor("numpy", 16, engine=object()) == "threads"
    monkeypatch.setenv(worker_pool.EXECUTOR_ENV, "threads")
    assert worker_pool.choose_executor("numpy", 2) == "threads"
    monkeypatch.setenv(worker_pool.EXECUTOR_ENV, "fork")
    with pytest.raises(ConfigError, match=worker_pool.EXECUTOR_ENV):
        worker_pool.choose_executor("numpy", 2)


def test_in_order_is_ordered_and_bounded():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    running, most, lock = [0], [0], threading.Lock()
    pulled = []

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.001 * (i % 3))  # finish out of order
        with lock:
            running[0] -= 1
        return i

    def calls():
        for i in range(60):
            pulled.append(i)
            yield work, (i,), {}

    with ThreadPoolExecutor(4) as pool:
        results = worker_pool.in_order(pool, calls(), 4)
        assert next(results) == 0 and len(pulled) <= 5  # the source is pulled as results are taken
        assert list(results) == list(range(1, 60))
    assert most[0] <= 4


def test_a_worker_without_the_runs_fpng_records_an_error_not_other_bytes(tmp_path, monkeypatch):
    rgb = random_pixels(9, 7, 3, seed=1)
    recorded = encode.resolve("fpng", 1)
    monkeypatch.setattr(encode, "_FPNG_MODULE", [None])  # as on a Dask worker without fpng
    with pytest.raises(encode.EncoderUnavailable, match=f"fpng {fpng.__version__}"):
        recorded.encode(rgb, None)
    other = encode.Encoder("fpng", "0.0.1", 1)  # or with another version of it
    monkeypatch.setattr(encode, "_FPNG_MODULE", [fpng])
    with pytest.raises(encode.EncoderUnavailable, match="0.0.1"):
        other.encode(rgb, None)
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp)
    ctx = pipeline.RunContext(run_record.absolute_paths(_config(inp, out)), "numpy", other)
    src = next(iter(pipeline.plan_sources(ctx.config, (0, 1), None)))
    outcome = pipeline.make_pair(src, None, ctx)
    assert outcome.failed and "pip install fpng==0.0.1" in outcome.row["error"]
