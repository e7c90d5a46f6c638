"""--verify [N]: replay manifest rows from their recorded params and seed, and compare with the files on disk.

Which rows: all of them, or N spread evenly over the manifest (rows 0, k, 2k, ...
with k = total / N), so a partial check samples the whole dataset
deterministically rather than only its first sources.

How: each row's source is decoded from ``config.input`` as the pipeline
decodes it, every planned image of the pair (``layout.plan_outputs`` of the
config recorded in OUTPUT/dataset.json) is re-rendered on the numpy backend
from the row's params, and the decoded pixels of each file on disk (alpha
included) are compared with the replayed ones.  Pixels, not bytes: a PNG
re-encoded by another zlib is still the same dataset.

Tolerance: none.  Every backend renders the same pixels (the reproducibility
contract, ARCHITECTURE.md), so the numpy replay must equal every file exactly,
whichever backend (numpy or cupy) made it.

Exit codes: 0 every file matches; 1 some file differs or is missing (each is
named on its own line); 3 nothing differs but some rows could not be
replayed (source gone, unreadable or changed size).
"""

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import containers, imageio, input_lists, layout, paths, storage, synth
from ..errors import UntrustedDataset
from ..containers.readers import shared_reader
from ..hashing import pair_seed
from ..params import sample_params
from ..synth.spec import FORMAT_VERSION
from . import read_text, recorded_config, sample

EXIT_OK, EXIT_DIFFERS, EXIT_UNREPLAYABLE = 0, 1, 3
REPLAY_BACKEND = "numpy"

DIFFERS, MISSING, UNREPLAYABLE = "DIFFERS", "MISSING", "CANNOT REPLAY"


def main(config, n=None, out=None):
    """Verify n rows (None: all) of config.output; print one line per problem and a summary; return the exit code."""
    import sys

    from ..worker_pool import resolve_workers

    out = out or sys.stdout
    total, rows = sample(config.output, n)
    cfg = recorded_config(config.output, config)
    if cfg.fingerprint() != config.fingerprint():
        print(f"lowlight-gpu: verify: note: replaying with the config recorded in "
              f"{os.path.join(config.output, 'dataset.json')} (it differs from the one given)", file=out)
    made_by = recorded_format_version(config.output)
    if made_by is not None and made_by != FORMAT_VERSION:
        print(f"lowlight-gpu: verify: note: this dataset was made by format version {made_by} of the model and this "
              f"is version {FORMAT_VERSION}: rendered images are expected to differ (regenerate it, or verify "
              f"with the release that made it)", file=out)
    counts = {DIFFERS: 0, MISSING: 0, UNREPLAYABLE: 0}
    checked = files = 0
    with ThreadPoolExecutor(max_workers=resolve_workers(config.workers)) as pool:
        # map keeps manifest order, so the report reads the same on every run.
        for n_files, problems in pool.map(lambda row: check_row(row, cfg), rows):
            checked += 1
            files += n_files
            for kind, name, detail in problems:
                counts[kind] += 1
                print(f"{kind}: {name}: {detail}", file=out)
    print(summary(checked, total, files, counts), file=out)
    if counts[DIFFERS] or counts[MISSING]:
        print("lowlight-gpu: verify: to make them again, byte for byte, run the same command with --repair "
              "instead of --verify", file=out)
        return EXIT_DIFFERS
    return EXIT_UNREPLAYABLE if counts[UNREPLAYABLE] else EXIT_OK


def recorded_format_version(output_dir):
    """dataset.json's format_version (1 for a dataset from before it was recorded), or None when unreadable."""
    try:
        return int(json.loads(read_text(output_dir, "dataset.json")).get("format_version", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def summary(checked, total, files, counts):
    """The closing line of a verify run."""
    head = f"lowlight-gpu: verify: {checked} of {total} rows replayed, {files} files compared"
    if not any(counts.values()):
        return f"{head}: all match"
    parts = [f"{counts[DIFFERS]} differ", f"{counts[MISSING]} missing",
             f"{counts[UNREPLAYABLE]} rows cannot be replayed"]
    return f"{head}: " + ", ".join(p for p in parts if not p.startswith("0 "))


def check_row(row, cfg):
    """Replay one manifest row; returns (files compared, [(kind, file or source, detail), ...])."""
    source = row.get("source", "?")
    try:
        plan = row_plan(row, cfg)
    except ValueError as exc:
        return 0, [(DIFFERS, "manifest.jsonl", f"row '{source}': {exc}")]
    src_path = source_path(cfg, source)
    if not source_exists(cfg, src_path):
        return 0, [(UNREPLAYABLE, source, f"source '{src_path}' is gone (is input set as when it was generated?)")]
    try:
        decoded = replay_source(row, cfg, plan, src_path)
    except imageio.DecodeError as exc:
        return 0, [(UNREPLAYABLE, source, f"source '{src_path}' cannot be decoded: {exc}")]
    h, w = decoded.rgb.shape[:2]
    if (row.get("width"), row.get("height")) != (w, h):
        return 0, [(UNREPLAYABLE, source, f"source '{src_path}' is {w}x{h} now, "
                                          f"{row.get('width')}x{row.get('height')} when generated")]
    problems = check_params(row, cfg)
    params = row["params"]
    lows = synth.get(REPLAY_BACKEND).render_many(decoded.rgb, params, [(o.t, o.noisy) for o in plan[1:]])
    for entry, rgb in zip(plan, [decoded.rgb] + lows):
        where, rel = _where(row, cfg, entry)
        problem = compare_file(where, rgb, decoded.alpha, cfg.max_pixels)
        if problem:
            problems.append((problem[0], rel, problem[1]))
    n_raw, raw_problems = check_raw(row, cfg, decoded.rgb, params)
    return len(plan) + n_raw, problems + raw_problems


def replay_source(row, cfg, plan, src_path):
    """The decoded source a row was made from: the source file, or for a GPU-decoded row its stored high image.

    GPU JPEG decoders round differently from Pillow, and the high image is the decoded source stored losslessly,
    so replaying from it verifies a GPU-decoded dataset on any machine, with or without nvImageCodec.
    """
    if row.get("decoder", "pillow") == "pillow":
        if storage.is_url(src_path):
            data = storage.read_url(src_path, cfg.storage_options)
            return imageio.decode_bytes(data, cfg.max_pixels, src_path, cfg.decode.color)
        return imageio.decode(src_path, cfg.max_pixels, cfg.decode.color)
    where, _ = _where(row, cfg, plan[0])
    if callable(where):
        return imageio.decode_bytes(where(), cfg.max_pixels, "high.png", "ignore")
    return imageio.decode(where, cfg.max_pixels, "ignore")


def source_path(cfg, source):
    """Where a row's source is: its id below the input folder, or below input_root for an input list (a path,
    or a URL on object storage)."""
    base = input_lists.root_of(cfg) if input_lists.is_list(cfg.input) else cfg.input
    if storage.is_url(base):
        return storage.join(base, paths.contained(source, paths.SOURCE, what="source"))
    return os.path.join(base, source)


def source_exists(cfg, src_path):
    """Whether the source file (or object) is there."""
    if storage.is_url(src_path):
        try:
            storage.stat_url(src_path, cfg.storage_options)
        except FileNotFoundError:
            return False
        return True
    return os.path.isfile(src_path)


def check_raw(row, cfg, rgb, params):
    """(files, problems) of the raw mosaics (.npy) the recorded config plans; compared value for value."""
    split_name = row.get("split")
    prefix = layout.folder(cfg.layout, "high", split_name) + "/"
    name = row["high"][len(prefix):] if containers.container_of(row) == "files" else containers.out_rel_of_row(row)
    raws = layout.plan_raw(name, cfg, split_name)
    problems, mosaics = [], {}
    for raw in raws:
        if raw.t not in mosaics:
            mosaics[raw.t] = dict(zip(layout.RAW_ROLES, synth.get(REPLAY_BACKEND).render_raw(rgb, params, raw.t)))
        want = mosaics[raw.t][raw.role]
        path, rel = _where(row, cfg, raw)
        if not callable(path) and not os.path.isfile(path):
            problems.append((MISSING, rel, "in the manifest but not on disk"))
            continue
        try:
            disk = np.load(io.BytesIO(path()) if callable(path) else path, allow_pickle=False)
        except UntrustedDataset:
            raise
        except FileNotFoundError:
            problems.append((MISSING, rel, "in the manifest but not in its container"))
            continue
        except (OSError, ValueError) as exc:
            problems.append((DIFFERS, rel, f"cannot be read as .npy: {exc}"))
            continue
        if disk.dtype != want.dtype or disk.shape != want.shape:
            problems.append((DIFFERS, rel, f"is {disk.dtype} {disk.shape}, replay is {want.dtype} {want.shape}"))
        elif not np.array_equal(disk, want):
            problems.append((DIFFERS, rel, f"{int(np.count_nonzero(disk != want))} of {want.size} values differ"))
    return len(raws), problems


def _where(row, cfg, entry):
    """(the file path, or a callable returning the bytes from the row's container; the name to report) of a plan
    entry (a layout.Output or RawOutput)."""
    if containers.container_of(row) == "files" and not storage.is_url(cfg.output):  # checked on disk here
        where = f"the row of source {paths.show(row.get('source'))}"
        return paths.Root(cfg.output).path(entry.rel, where=where), entry.rel
    (_, ref), = containers.planned_refs(row, [entry], cfg)
    reader = shared_reader(cfg.output)
    return (lambda: reader.for_row(row, ref)), reader.describe(ref, row.get("shard"), row.get("key"))


def row_plan(row, cfg):
    """The pipeline's plan of the row's pair, checked against the paths the row records; ValueError if they disagree."""
    split_name = row.get("split")
    prefix = layout.folder(cfg.layout, "high", split_name) + "/"
    high = row.get("high", "")
    if containers.container_of(row) != "files":  # a tar member or LMDB database: the name comes from the key
        if "params" not in row:
            raise ValueError("params are missing")
        prefix, high = "", containers.out_rel_of_row(row)
    if not high.startswith(prefix) or "params" not in row:
        raise ValueError(f"high '{high}' is not under '{prefix}' of layout '{cfg.layout}' (or params are missing)")
    plan = layout.plan_outputs(high[len(prefix):], cfg, split_name)
    planned = {ref for _, ref in containers.planned_refs(row, plan, cfg)}
    high = row.get("high", "")
    recorded = {high, row.get("low")} | {s["path"] for s in row.get("steps", []) + row.get("clean_steps", [])}
    if row.get("clean_low"):
        recorded.add(row["clean_low"])
    stray = sorted(str(r) for r in recorded - planned)
    if stray:
        raise ValueError(f"records {', '.join(stray)}, which the recorded config does not plan")
    return plan


def check_params(row, cfg):
    """A problem when the row's seed or params are not those its source and the run seed give."""
    seed = pair_seed(cfg.seed, row["source"])
    if row.get("seed") != seed or row["params"] != sample_params(seed, cfg):
        return [(DIFFERS, "manifest.jsonl", f"row '{row['source']}': seed or params are not those of "
                                            f"(seed {cfg.seed}, source); replaying the recorded ones")]
    return []


def compare_file(path, rgb, alpha, max_pixels):
    """None when the image at path (a file, or a callable returning its bytes) has these pixels (and alpha), else (kind, detail)."""
    if not callable(path) and not os.path.isfile(path):
        return MISSING, "in the manifest but not on disk"
    try:
        disk = imageio.decode(path, max_pixels) if not callable(path) else imageio.decode_bytes(path(), max_pixels)
    except FileNotFoundError:
        return MISSING, "in the manifest but not in its container"
    except imageio.DecodeError as exc:
        return DIFFERS, f"cannot be decoded: {exc}"
    if disk.rgb.shape != rgb.shape:
        return DIFFERS, f"is {disk.rgb.shape[1]}x{disk.rgb.shape[0]}, replay is {rgb.shape[1]}x{rgb.shape[0]}"
    if (disk.alpha is None) != (alpha is None):
        return DIFFERS, "has an alpha channel" if alpha is None else "lost its alpha channel"
    problem = pixel_difference(disk.rgb, rgb)
    if problem is None and alpha is not None:
        problem = pixel_difference(disk.alpha, alpha)
        problem = problem and "alpha: " + problem
    return problem and (DIFFERS, problem)


def pixel_difference(got, want):
    """None when got equals want exactly, else a one-line description."""
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    n = int(np.count_nonzero(diff))
    if n == 0:
        return None
    worst = int(diff.max())
    where = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return f"{n} of {diff.size} values differ (max |diff| {worst} at row {where[0]}, column {where[1]})"
