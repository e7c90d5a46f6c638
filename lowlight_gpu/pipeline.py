"""A run's execution: scan -> (skip finished) -> decode -> synthesize -> encode/write -> manifest, for one shard.

Work items carry only paths and small dicts (never pixels), so the same
function runs in local threads, worker processes or on Dask workers.  Each
item returns a PairResult (a new row, an earlier row reused, or an errors
row); nothing raises for a bad input.  What a run records and checks before
it writes lives in run_record.py; the rows themselves are built in rows.py.
"""

import dataclasses
import errno
import functools
import itertools
import os
import sys
import time
from dataclasses import dataclass, field

from . import __version__, containers, encode, fsutil, imageio, interrupts, layout, manifest, paths, rows, synth
from . import input_lists, locks, merging, remote_output, storage, worker_pool
from .errors import ConfigError, LockHeld, MergeError, StorageError
from .hashing import pair_seed, shard_of
from .params import sample_params, size_problem
from .run_record import absolute_paths, config_difference, dataset_info, preflight, read_recorded, record_run
from .sources import ScanStats, scan, source_stat

# Failures of the output's storage: every later pair would fail the same way, so they stop the run (exit 4).
STORAGE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EIO", "EROFS") if hasattr(errno, n))
MADE, REUSED, FAILED = "made", "reused", "failed"  # the kinds of PairResult


@dataclass(frozen=True)
class RunContext:
    """What a work item needs besides its source: plain, picklable data."""

    config: object
    backend: str
    encoder: encode.Encoder = None  # resolved once per run (run_record.resolve_codecs); None: from config.save.encoder
    encode_processes: int = 0  # > 0: encode and write in a pool of this many processes (choose_executor)
    store: object = None  # the storage.Location of an output on object storage: images go there, not to disk
    stage: tuple = None  # (job tag, run id): a Dask worker writes a tar sample itself (containers.worker_staging)

    @property
    def images(self):
        """Where the pair's images are: the output folder, or the object store (storage.Location)."""
        return self.store if self.store is not None else self.config.output


@dataclass(frozen=True)
class PairResult:
    """What one work item gives back (plain, picklable data): a new row, an earlier row reused, or an errors row."""

    kind: str  # MADE, REUSED or FAILED
    row: dict  # the manifest row with its private state; FAILED: the errors row (rows.error_row)
    unwritable: bool = False  # FAILED only: the output's name cannot exist on its filesystem; a rerun cannot help

    @property
    def failed(self):
        """Whether the source gave no pair (its row goes to errors.jsonl)."""
        return self.kind == FAILED

    @property
    def reused(self):
        """Whether the row is an earlier run's, whose files still verify."""
        return self.kind == REUSED


@dataclass
class RunResult:
    """Counts of one run (or one shard)."""

    pairs: int = 0
    errors: int = 0
    skipped: int = 0  # of pairs: reused from earlier runs (kept included)
    kept: int = 0  # of skipped: earlier pairs beyond --limit, kept as they were
    seconds: float = 0.0
    removed: int = 0  # files of pairs whose source is gone
    unwritable: int = 0  # of errors: inputs whose output name cannot exist (too long); a rerun cannot help
    rebuilt: list = field(default_factory=list)  # LMDB databases found damaged and rebuilt
    merged: dict = field(default_factory=dict)
    meta_info_left_out: int = 0  # pairs whose names BasicSR's meta_info cannot carry (containers/metainfo.py)
    scan: ScanStats = field(default_factory=ScanStats)

    @property
    def made(self):
        """Pairs made by this run (not reused)."""
        return self.pairs - self.skipped

    @property
    def pairs_per_second(self):
        """Pairs made per second of wall time; reused pairs do not count."""
        return self.made / self.seconds if self.seconds > 0 else 0.0


def make_pair(src, prior, ctx):
    """Produce one pair (or reuse a verified earlier one); returns its PairResult."""
    config = ctx.config
    prepare_process(ctx)
    if src.error:
        return failed(src, src.error)
    out_root = config.output
    if prior is not None:
        row, from_journal = prior
        if manifest.row_is_intact(ctx.images, row, stat_or_none(src, config.storage_options),
                                 check_hashes=from_journal):
            if ctx.store is None:  # object storage has no temporary files: every object is one PUT
                remove_temps(out_root, row[manifest.STATE]["files"])
            return PairResult(REUSED, row)
    try:
        if src.stat is None and storage.is_url(src.path):  # a listed URL: its row records the object's stat
            src = dataclasses.replace(src, stat=tuple(source_stat(src, config.storage_options)))
        decoded = decode_source(src.path, config)
    except (FileNotFoundError, PermissionError) as exc:  # an object gone since the listing, or not ours to read
        return failed(src, f"cannot read file: {'no such object' if isinstance(exc, FileNotFoundError) else exc}")
    except imageio.DecodeError as exc:
        return failed(src, str(exc))
    too_small = size_problem(decoded.rgb.shape[1], decoded.rgb.shape[0], config.noise.model)
    if too_small:
        return failed(src, too_small)
    try:
        return PairResult(MADE, synthesize_and_write(src, decoded, ctx))
    except encode.EncoderUnavailable as exc:  # a worker without the run's encoder: the pair waits for one with it
        return failed(src, f"cannot write output: {exc}")
    except StorageError:  # the object store refused a write: every later pair would fail too
        raise
    except OSError as exc:  # permissions, a name too long: record it, the next run retries
        if exc.errno in STORAGE_ERRNOS:  # the disk, not this pair: stop the run
            raise StorageError(exc.errno, exc.strerror, exc.filename) from None
        if exc.errno == errno.ENAMETOOLONG:
            return failed(src, name_too_long(exc.filename, config.output), unwritable=True)
        return failed(src, f"cannot write output: {exc.strerror or exc}")


def stat_or_none(src, options=None):
    """The source's [size, mtime_ns] for the resume check (row_is_intact), or None when it cannot be read."""
    try:
        return source_stat(src, options)
    except OSError:
        return None


def failed(src, error, unwritable=False):
    """The PairResult of a source that gave no pair: its errors row."""
    return PairResult(FAILED, rows.error_row(src.rel, error), unwritable)


def name_too_long(path, out_root):
    """The errors row text of an output whose name cannot exist on the output's filesystem."""
    rel = os.path.relpath(path, out_root) if path else "?"
    longest = max((len(os.fsencode(part)) for part in rel.split(os.sep)), default=0)
    return (f"cannot write output: its name cannot exist on this filesystem ('{rel}' has a name of {longest} bytes, "
            f"the limit is {fsutil.NAME_MAX} per name and about 4096 per path); rename the source "
            "(or use save.container: webdataset or lmdb, which store any name)")


def decode_source(path, config):
    """The source decoded on decode.device: gpu sends JPEGs to nvImageCodec (decode_gpu), cpu everything to Pillow.

    A URL's bytes are fetched first (storage.read_url; FileNotFoundError when the object is gone) and decoded
    from memory by the same rules.
    """
    if storage.is_url(path):
        data = storage.read_url(path, config.storage_options)
        if config.decode.device == "gpu":
            from . import decode_gpu

            return decode_gpu.decode_data(data, config.max_pixels, config.decode.color, path)
        return imageio.decode_bytes(data, config.max_pixels, path, config.decode.color)
    if config.decode.device == "gpu":
        from . import decode_gpu  # imported only here, so a CPU run never loads nvImageCodec

        return decode_gpu.decode(path, config.max_pixels, config.decode.color)
    return imageio.decode(path, config.max_pixels, config.decode.color)


_PREPARED = []  # the backend settings this process has applied (a worker process starts with none)


def prepare_process(ctx):
    """Apply the GPU backend's settings once per process: run() does it for its own, workers on their first pair."""
    if ctx.backend == "cupy" and not _PREPARED:
        _PREPARED.append(True)
        synth.get("cupy").configure(ctx.config.gpu.batch_megapixels, ctx.config.gpu.memory_limit_gb)


def remove_temps(out_root, rels):
    """Delete the temp files ('.name.png.tmp') a killed run may have left beside a finished pair's outputs."""
    for rel in rels:  # contained (manifest.check_parts); a temp is removed only if it is a regular file
        paths.remove_regular(fsutil.temp_name(paths.join(out_root, rel, what="_state.files")))  # almost always: none


def synthesize_and_write(src, decoded, ctx):
    """Render every planned image of one pair, write them atomically (or hand their bytes to a container's
    writer), and return its manifest row."""
    config = ctx.config
    backend = synth.get(ctx.backend)
    split_name = layout.split_of(src.rel, config.split)
    plan = layout.plan_outputs(src.out_rel, config, split_name)
    raw_plan = layout.plan_raw(src.out_rel, config, split_name)
    params = sample_params(pair_seed(config.seed, src.rel), config)
    lows = backend.render_many(decoded.rgb, params, [(o.t, o.noisy) for o in plan[1:]])
    ran = backend.effective_name(params["noise"]["model"])  # the row records what rendered: numpy or cupy
    encoder = ctx.encoder or encode.resolve(config.save.encoder, config.save.compress_level)
    images = [decoded.rgb] + lows
    if containers.needs_writer(config):  # tar, LMDB: the bytes go back to the run's one ordered writer
        encoded = in_encode_pool(ctx, encode_pngs, images, decoded.alpha, encoder)
        raws = render_raw(backend, decoded.rgb, params, raw_plan)
        row = rows.with_raw(rows.build_row(src, decoded, params, plan, split_name, ran, {}), raw_plan)
        payload = [(containers.image_tag(o.role, o.t, config), o.rel, data)
                   for o, data in zip(plan + raw_plan, encoded + raws)]
        row = containers.attach(row, payload, src.out_rel, config.save.container)
        if ctx.stage is not None:  # a Dask worker: the bytes stay on the shared output, only the row travels
            return containers.stage_on_worker(config, ctx.stage, row)
        return row
    if ctx.store is not None:  # object storage: one PUT per image, from this worker
        outputs = [(o.rel, rgb) for o, rgb in zip(plan, images)]
        sizes = in_encode_pool(ctx, write_pngs, outputs, decoded.alpha, encoder, ctx.store)
    else:
        outputs = [(os.path.join(config.output, o.rel), rgb) for o, rgb in zip(plan, images)]
        sizes = in_encode_pool(ctx, write_pngs, outputs, decoded.alpha, encoder)
    files = dict(zip([o.rel for o in plan], sizes))
    files.update(write_bytes(ctx.images, raw_plan, render_raw(backend, decoded.rgb, params, raw_plan)))
    return rows.with_raw(rows.build_row(src, decoded, params, plan, split_name, ran, files), raw_plan)


def in_encode_pool(ctx, fn, *args):
    """fn(*args) in the run's encode processes when it has them (the encode-pool executor), else right here."""
    if ctx.encode_processes:
        return worker_pool.pool(ctx.encode_processes).submit(fn, *args).result()
    return fn(*args)


def render_raw(backend, rgb, params, raw_plan):
    """The .npy bytes of each planned raw mosaic (layout.RawOutput), in plan order."""
    mosaics = {}
    out = []
    for raw in raw_plan:
        if raw.t not in mosaics:  # one render gives the step's clean and noisy mosaics
            mosaics[raw.t] = dict(zip(layout.RAW_ROLES, backend.render_raw(rgb, params, raw.t)))
        out.append(encode.npy_bytes(mosaics[raw.t][raw.role]))
    return out


def write_bytes(out_root, plan, datas):
    """Write the bytes of each planned file (a layout.RawOutput) atomically; returns {rel: [size, digest]}.

    out_root: the output folder, or a storage.Location (one PUT per file)."""
    datas = {entry.rel: data for entry, data in zip(plan, datas)}
    if isinstance(out_root, (str, os.PathLike)):
        for rel, data in datas.items():
            fsutil.write_atomic(os.path.join(out_root, rel), data)
    else:
        out_root.write_many(datas)
    return {rel: [len(data), manifest.data_digest(data)] for rel, data in datas.items()}


def encode_pngs(images, alpha, encoder):
    """The PNG bytes of each rgb image with alpha, in order (for a container's writer)."""
    return [encoder.encode(rgb, alpha) for rgb in images]


def write_pngs(outputs, alpha, encoder, store=None):
    """Encode each (path, rgb) with alpha and write it atomically; returns [[size, digest], ...] in order.

    store: a storage.Location, whose relative paths the outputs then name (one PUT per image, all of the
    pair's in flight together)."""
    if store is not None:
        datas = {path: encoder.encode(rgb, alpha) for path, rgb in outputs}
        store.write_many(datas)
        return [[len(data), manifest.data_digest(data)] for data in datas.values()]
    sizes = []
    for path, rgb in outputs:
        data = encoder.encode(rgb, alpha)
        fsutil.write_atomic(path, data)
        sizes.append([len(data), manifest.data_digest(data)])
    return sizes


def plan_sources(config, shard, limit, stats=None):
    """The lazily scanned sources of this shard, at most limit of them; stats (a ScanStats) gets the skip counts.

    A folder (or folder URL) is scanned whole by every job, which keeps the sources whose id hashes to its
    shard; an input list is read by shares: the job keeps a contiguous range of it (input_lists).
    """
    if input_lists.is_list(config.input):
        sources = input_lists.scan_list(config, shard, stats)
    else:
        sources = scan(config.input, shard, skip=[config.output], follow_symlinks=config.follow_symlinks, stats=stats,
                       options=config.storage_options)
    return itertools.islice(sources, limit) if limit is not None else sources


def execute(items, ctx, workers, engine, executor="threads"):
    """Run make_pair over items in order, in threads, processes or on a Dask cluster; yields PairResults in item order.

    Each call is a (function, args, kwargs) tuple, the form joblib's delayed makes and the Dask engine takes.
    """
    calls = ((make_pair, (src, prior, ctx), {}) for src, prior in items)
    if engine is not None:
        return engine.run(calls, workers)
    if executor == "processes":
        return worker_pool.in_order(worker_pool.pool(workers), calls, 2 * workers)
    return worker_pool.in_threads(calls, workers)


def check_found(config, stats):
    """ConfigError when a scan (its ScanStats) found no image in the whole input: an empty, emptied or unmounted
    folder.  A shard without sources of its own in an input that has some is fine."""
    if stats.found or stats.partial:  # a list job's share may be empty while other shares hold images
        return
    skipped = f" (skipped: {stats.describe()})" if stats.describe() else ""
    note = f"; {stats.heif_note()}" if stats.heif_note() else ""
    raise ConfigError(f"input: no images in '{config.input}'{skipped}{note}; set input to a folder (or a list) "
                      "of images")


def start_scan(config, shard, stats):
    """The run's one scan of its sources, started until it has found an image in any shard (check_found).

    Called before anything but the output folder is made (run() removes it again when it made it), so a
    refused input leaves an earlier dataset exactly as it is; the run goes on with this scan, so every folder
    is still listed once.
    """
    sources = iter(plan_sources(config, shard, None, stats))
    first = next(sources, None)  # a shard without sources of its own scans the whole tree here, once
    check_found(config, stats)
    return itertools.chain([first], sources) if first is not None else sources


def run(config, shard=(0, 1), limit=None, progress=None, engine=None, backend=None, repair=False):
    """Generate the pairs of one shard into config.output; merge at once when there is a single shard.

    repair: check the checksum of every earlier pair's stored bytes (not only their sizes) before reusing
    them, so a pair damaged in place is redone (--repair).  An output on object storage runs through a
    local work folder (remote_output.py).
    """
    if not remote_output.is_remote(config):
        return _run(config, shard, limit, progress, engine, backend, repair)
    check_remote(config)
    job = remote_output.Job(config.output, config.storage_options)
    try:
        with job.speaking_of_url():
            job.fetch_record()
            local = dataclasses.replace(config, output=job.work)
            return _run(local, shard, limit, progress, engine, backend, repair, job)
    finally:
        job.close()


def check_remote(config):
    """ConfigError (exit 2) for a container an object-storage output cannot take."""
    if config.save.container == "lmdb":
        raise ConfigError(f"output: '{config.output}' is on object storage, and save.container lmdb writes one "
                          "database file that needs a local folder; use save.container webdataset (tar shards), "
                          "or write the LMDB to a local output and copy it")
    if config.save.container == "webdataset" and config.save.tar_boundaries == "global":
        raise ConfigError(f"output: '{config.output}' is on object storage, and save.tar_boundaries global makes "
                          "--merge copy every image through one machine; use save.tar_boundaries job")


def _run(config, shard, limit, progress, engine, backend, repair, job=None):
    """run() on a local output folder (for object storage: the job's work folder, images going to job.store)."""
    checked = preflight(config, backend, shard=shard)
    config, encoder, codecs, backend = checked.config, checked.encoder, checked.codecs, checked.backend
    if backend == "cupy":
        synth.get("cupy").configure(config.gpu.batch_megapixels, config.gpu.memory_limit_gb)
        _PREPARED.append(True)
    if limit == 0:  # nothing to make, and an existing dataset stays exactly as it is
        return RunResult()
    fsutil.allow_open_files()  # resuming reads the parts of every earlier shard job side by side
    result = RunResult()
    # Before the lock and the journal are opened: forked workers must not hold their file descriptors.
    executor, workers = start_workers(config, backend, engine)
    made = make_folders(config.output)  # before the scan, which counts the output among the skipped folders
    manifest.check_folders(config.output)  # before a lock file is made in parts/
    try:
        sources = start_scan(config, shard, result.scan)  # after the fork: workers need no folder of the scan
    except ConfigError:
        for folder in made:  # refused: leave no empty output folder behind
            fsutil.remove_empty_folder(folder)
        raise
    lock = locks.OutputLock(config.output).acquire_shard(*shard)  # LockHeld: another run is using it
    try:
        if job is not None:
            job.acquire(*shard)  # the bucket's lock: jobs on other machines
            job.fetch_parts(shard, tars=config.save.container != "files")
        return _run_locked(config, shard, limit, progress, engine, backend, encoder, codecs, result, executor,
                           workers, sources, repair, job)
    finally:
        lock.release()


def make_folders(path):
    """Create folder path and its missing parents; returns the folders it made, deepest first."""
    made, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(path, exist_ok=True)
    return made


def start_workers(config, backend, engine=None):
    """Start the run's worker processes (worker_pool) with the model loaded; (executor, workers)."""
    workers = worker_pool.resolve_workers(config.workers)
    executor = worker_pool.choose_executor(backend, workers, engine, config.decode.device == "gpu")
    method = worker_pool.start_method(executor, backend, config.decode.device == "gpu")
    if executor == "processes" and method == "loky":  # each worker loads the kernels itself, side by side
        pool = worker_pool.pool(workers, method)
        for future in [pool.submit(get_ready, backend) for _ in range(workers)]:
            future.result()
    elif method == "fork":  # loaded here once; the forked workers inherit them
        get_ready(backend)
        worker_pool.pool(workers, method)
    else:
        if executor == "encode-pool":
            worker_pool.pool(workers, method)  # the workers start while this process gets ready
        get_ready(backend)
    return executor, workers


def _run_locked(config, shard, limit, progress, engine, backend, encoder, codecs, result, executor, workers,
                sources, repair=False, job=None):
    """run() once it holds the output's lock; sources is its scan (start_scan), counting into result.scan."""
    manifest.check_parts(config.output, shard)  # UntrustedDataset before anything is written or deleted
    record_run(config, codecs)
    if job is not None and not job.push_record():
        record_run(config, codecs)  # another job's run.json won on the bucket: this config must match it
    start = time.perf_counter()
    prior = manifest.PriorRows(config.output, shard, check_all=repair)
    unlistable = []  # ids of folders the scan could not list: pairs below them are not "gone"
    sources = _watch(sources, unlistable)
    head = itertools.islice(sources, limit) if limit is not None else sources
    store = containers.open_store(config, shard, engine, workers)
    items = ((src, _intact_in(store, prior.pop(src.rel))) for src in head)
    writer = job.journal_writer(*shard, store) if job is not None else manifest.ShardWriter(config.output, *shard)
    ctx = RunContext(config, backend, encoder, workers if executor == "encode-pool" else 0,
                     job.store if job is not None else None,
                     containers.worker_staging(config, shard, engine) if job is None else None)
    try:
        with interrupts.deferred():  # Ctrl-C, SIGTERM: noted, then raised between pairs (check)
            for outcome in execute(items, ctx, workers, engine, executor):
                if outcome.failed:
                    result.unwritable += outcome.unwritable
                    writer.add_error(outcome.row)
                    result.errors += 1
                else:
                    for stored in store.put(outcome.row, outcome.reused):  # in manifest order, once stored
                        writer.add_row(stored)
                    result.pairs += 1
                    result.skipped += outcome.reused
                if progress is not None:
                    progress(outcome)
                interrupts.check()
        prior_errors = manifest.PriorErrors(config.output, shard) if limit is not None else None
        for src in sources:  # beyond --limit: earlier pairs (and failed inputs) stay as they are, none is made
            row = keep_prior(src, _intact_in(store, prior.pop(src.rel)), config.output, config.storage_options)
            if row is not None:
                for stored in store.put(row, reused=True):
                    writer.add_row(stored)
                result.pairs += 1
                result.skipped += 1
                result.kept += 1
            elif (error := prior_errors.pop(src.rel)) is not None:
                writer.add_error(error)  # listed again, not retried: this run's own errors decide its exit code
        for stored in store.finish():
            writer.add_row(stored)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (interrupts.py): keep every pair that is whole
        try:
            with interrupts.deferred():
                for stored in store.salvage():
                    writer.add_row(stored)
        except Exception:  # noqa: BLE001 - the interrupt stands; a journal row is CRC-checked on resume anyway
            pass
        finally:
            store.abandon()
            writer.abandon()
        raise
    except BaseException:
        store.abandon()
        writer.abandon()
        raise
    finally:
        result.rebuilt = list(getattr(store, "rebuilt", []))
    prior.drain()
    marker = {"fingerprint": config.fingerprint(), "version": __version__, "limit": limit, **codecs,
              **containers.boundaries_record(config), "skipped": result.scan.counts}
    if result.scan.partial:
        marker["skipped_share"] = True  # counts of this job's share of an input list: --merge adds them up
    writer.finish(marker, publish=store.publish)  # a webdataset job of N > 1 builds its own tars there (tars.py)
    store.cleanup()
    if job is not None and shard[1] > 1:
        job.commit_shard(*shard)
    if shard[1] == 1:
        with locks.OutputLock(config.output).acquire_merge():
            result.merged = merging.merge(config.output, dataset_info(config), count=1,
                                          prepare=functools.partial(containers.assemble, config,
                                                                    remote=getattr(store, "remote", None)))
            result.meta_info_left_out = containers.write_meta_info(config).left_out
        if job is not None:
            job.commit_shard(*shard)
            job.commit_merge()
    result.removed = remove_gone(config, shard, prior.passed, unlistable, result.scan, ctx.store)
    result.seconds = time.perf_counter() - start
    return result


def _watch(sources, unlistable):
    """Pass sources through, noting the ids of folders that could not be listed."""
    for src in sources:
        if src.error.startswith("cannot list folder"):
            unlistable.append(src.rel)
        yield src


def keep_prior(src, prior, out_root, options=None):
    """An earlier row of a source beyond --limit, if its files still verify; None otherwise (nothing is made).

    options: the storage_options of a URL source."""
    if prior is None or src.error:
        return None
    row, from_journal = prior
    return row if manifest.row_is_intact(out_root, row, stat_or_none(src, options), check_hashes=from_journal) else None


def remove_gone(config, shard, passed, unlistable, stats, store=None):
    """Delete the files of earlier pairs whose source is gone from the input; returns how many were removed.

    Only the shard that owns a source removes its files.  A scan that found no source at all (an empty or
    unmounted input) removes nothing, and neither does a folder that could not be listed.  With an input list,
    only a whole run removes: a shard's range follows the list's bytes, so a source missing from this job's
    share may simply have moved to another job's (lines added or removed before it).
    """
    if not stats.found:
        return 0
    index, count = shard
    if count > 1 and input_lists.is_list(config.input):
        return 0
    gone = [(source, files) for source, files in passed
            if (count == 1 or shard_of(source, count) == index) and not any(source.startswith(p) for p in unlistable)]
    part = os.path.join(config.output, manifest.PARTS, f"{manifest.shard_tag(index, count)}.jsonl")
    return manifest.remove_orphans(config.output, gone, part, store)


def get_ready(backend):
    """Load now what making a pair loads on first use: the backend (and the model's CPU library), the decoders
    and fpng.  Run where pairs are made, before the first one."""
    synth.get(backend)
    if backend == "numpy":
        from .synth import native

        native.lib()
    imageio.load_decoders()
    encode.fpng_version()


def merge(config):
    """Combine finished shard parts of config.output into the dataset files."""
    if not remote_output.is_remote(config):
        return _merge(config)
    check_remote(config)
    job = remote_output.Job(config.output, config.storage_options)
    try:
        with job.speaking_of_url():
            job.fetch_record()
            live = job.live_locks()
            if live:
                raise LockHeld(f"output '{config.output}' is in use: " + "; ".join(live))
            job.fetch_parts(None)
            merged = _merge(dataclasses.replace(config, output=job.work), set(job.store.list("shards")))
            job.commit_merge()
            return merged
    finally:
        job.close()


def _merge(config, stored=None):
    """merge() of a local output folder; stored: the tar names of an output on object storage."""
    config = absolute_paths(config)
    fsutil.allow_open_files()  # the parts of every shard job are read (and rewritten) side by side
    manifest.check_folders(config.output)  # before a lock file is made in parts/
    running = locks.OutputLock(config.output).runs_in_progress()
    if running:  # a whole run merges its own output when it ends; shards still being made are not done
        raise LockHeld(f"output '{config.output}' is in use: " + "; ".join(
            f"{merging.runs_of(n)} is in progress ({who})" for n, who in running))
    recorded = read_recorded(config)
    if recorded is not None and recorded.get("fingerprint") != config.fingerprint():
        raise MergeError(f"cannot merge: the shards in '{config.output}' were made with a different config "
                         f"({config_difference(recorded, config)}); merge with the --config and --set of the "
                         "shard jobs")
    with locks.OutputLock(config.output).acquire_merge():  # one merge at a time (a whole run's merge too)
        merged = merging.merge(config.output, dataset_info(config), fingerprint=config.fingerprint(),
                               prepare=functools.partial(containers.assemble, config, stored=stored))
        merged["meta_info_left_out"] = containers.write_meta_info(config).left_out
    return merged


def _intact_in(store, prior):
    """prior (row, from_journal) when its container still holds the row's bytes, else None (redo the pair)."""
    if prior is None or store.check(*prior):
        return prior
    return None


def dry_run(config, shard=(0, 1), limit=None, out=None, quiet=False):
    """Make the checks a run makes before writing (preflight: ConfigError, BackendUnavailable), then print what
    it would do, writing nothing; returns the number of sources."""
    out = out if out is not None else sys.stdout  # looked up per call, so redirected stdout is honoured
    if remote_output.is_remote(config):  # the checks read the bucket's run.json and done-markers (read only)
        check_remote(config)
        job = remote_output.Job(config.output, config.storage_options)
        try:
            with job.speaking_of_url():
                job.fetch_record()
                preflight(dataclasses.replace(config, output=job.work), quiet=quiet, shard=shard)
        finally:
            job.close()
    else:
        preflight(config, quiet=quiet, shard=shard)
    n = 0
    stats = ScanStats()
    for src in plan_sources(config, shard, None, stats):  # the whole tree, so the skip counts are complete
        if limit is not None and n >= limit:
            continue
        if n < 5 and not src.error:
            plan = layout.plan_outputs(src.out_rel, config, layout.split_of(src.rel, config.split))
            print(f"  {src.rel} -> " + ", ".join(o.rel for o in plan), file=out)
        n += 1
    check_found(config, stats)  # refused as the run refuses it
    skipped = f"; skipped: {stats.describe()}" if stats.describe() else ""
    print(f"dry run: {n} input(s) in '{config.input}' would go to '{config.output}' "
          f"(shard {shard[0]}/{shard[1]}){skipped}; nothing written", file=out)
    if stats.heif_note():
        print(f"dry run: {stats.heif_note()}", file=out)
    return n
