"""Command line: argparse, exit codes, one-line errors.

Exit codes: 0 every input done; 2 bad usage or config, or an untrusted dataset (nothing written);
3 the run finished but some inputs failed (listed in errors.jsonl);
4 stopped by the environment (the output's disk full, over quota, failing or read-only; re-run to resume);
5 another run is using this output (or this shard of it); 1 --verify found a difference (or a tool found a
damaged LMDB); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): finished pairs are kept, re-run to resume.
"""

import argparse
import errno
import os
import re
import sys
import threading

from . import __version__

EXIT_OK, EXIT_USAGE, EXIT_FAILED_INPUTS, EXIT_STOPPED, EXIT_LOCKED = 0, 2, 3, 4, 5
EXIT_DAMAGED = 1  # a tool (--verify, --preview, --report) met a damaged LMDB database
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
DEFAULT_CONFIG = "config.yaml"

DESCRIPTION = """\
Generate a synthetic low-light pair dataset: every image under `input` becomes
high/<name>.png (the upright 8-bit source) and low/<name>.png, darkened as
beta * (alpha * x) ** gamma (Lv et al.) with exact Poisson-Gaussian sensor
noise, plus manifest.jsonl (one row of params and seed per pair), errors.jsonl
and dataset.json.  Every random value derives from `seed` and the source's
relative path, so any pair can be rebuilt exactly.
"""

EPILOG = """\
examples:
  python generate.py                                   # ./config.yaml as is (or the built-in defaults)
  python generate.py --set input=photos --set output=lol_synth --set seed=7
  python generate.py --set darken.gamma=[2,3] --set noise.model=none
  python generate.py --set progressive.enabled=true --set progressive.save=all
  python generate.py --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT   # then: --merge
  python generate.py --verify 100                      # replay 100 rows, compare with the files
  python generate.py --repair                          # redo every pair whose stored bytes changed
  python generate.py calibrate --help                  # a noise.camera preset from your own camera's raw frames

exit codes: 0 all inputs done, 2 bad usage or config, or an output folder that names
              paths outside itself (nothing written; one line names the file and row),
            3 finished but some inputs failed (see OUTPUT/errors.jsonl; re-run to retry),
            4 stopped by the environment: the output's disk is full, over quota, failing or
              read-only (finished pairs are kept; fix it and re-run to resume),
            5 another run is using this output (its pid and host are named),
            1 --verify found a file that differs from its replay (each one is named),
              or a tool found a damaged LMDB database (named; re-running the generation rebuilds it),
            130 interrupted (Ctrl-C), 143 terminated (SIGTERM): the finished pairs are kept;
              re-run the same command to resume
"""


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 0/4), got '{text}'")
    return int(m.group(1)), int(m.group(2))


def non_negative_int(text):
    """An int >= 0 for --limit."""
    if not re.fullmatch(r"\d+", text or ""):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got '{text}'")
    return int(text)


def positive_int(text):
    """An int >= 1 for --verify N (verifying 0 rows would pass without checking anything)."""
    if not re.fullmatch(r"\d+", text or "") or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows >= 1 (or no number for all rows), got '{text}'")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, not a usage dump."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser():
    """The argument parser of generate.py and the lowlight-gpu command."""
    p = _Parser(prog="lowlight-gpu", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, metavar="PATH",
                   help="YAML config file (default: ./config.yaml, or the built-in defaults that the project's "
                        "config.yaml documents when there is none here)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with a YAML value, e.g. --set darken.gamma=[2,3]; repeatable")
    p.add_argument("--limit", type=non_negative_int, metavar="N",
                   help="process only the first N inputs (in sorted order)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config, scan the input and print the plan; write nothing")
    p.add_argument("--shard", type=parse_shard, metavar="I/N",
                   help="process only shard I of N (stable hash of each source path); merge with --merge")
    p.add_argument("--merge", action="store_true",
                   help="combine finished shard parts into manifest.jsonl, errors.jsonl and dataset.json")
    p.add_argument("--verify", nargs="?", const=-1, type=positive_int, metavar="N",
                   help="replay N manifest rows (all if N is left out) and compare them with the files")
    p.add_argument("--repair", action="store_true",
                   help="run, checking the checksum of every stored image (not only its size) before reusing it: "
                        "whatever --verify found damaged is made again, byte for byte")
    p.add_argument("--preview", action="store_true", help="write OUTPUT/preview.png, a contact sheet")
    p.add_argument("--report", action="store_true", help="write OUTPUT/report.png and report.md")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list-cameras", nargs="*", default=None, metavar="PRESET.json",
                   help="print the camera presets of noise.model physics (noise.camera), one per line, then each "
                        "preset file given (from lowlight-gpu calibrate) with its content hash, and exit")
    p.add_argument("--version", action="version", version=f"lowlight_gpu {__version__}")
    return p


def attach_shard_value(argv):
    """argv with '--shard -1/2' written '--shard=-1/2', so parse_shard names the bad value.

    argparse takes a value that starts with '-' (and is not a plain negative number) for an option, and would
    only say that --shard "expected one argument".
    """
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--shard" and re.match(r"-\d", out[i + 1]):
            out[i:i + 2] = [f"--shard={out[i + 1]}", None]
    return [a for a in out if a is not None]


def main(argv=None):
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["calibrate"]:  # a subcommand; every other command line is the generator's
        return calibrate_main(argv[1:])
    args = build_parser().parse_args(attach_shard_value(argv))
    if args.list_cameras is not None:
        return _list_cameras(args.list_cameras)
    from . import interrupts

    try:
        with interrupts.installed():  # SIGTERM (SLURM's time-out, preemption) stops a run as Ctrl-C does
            return _main(args)
    except interrupts.Terminated:
        print("lowlight-gpu: terminated (SIGTERM); finished pairs are kept; re-run the same command to resume",
              file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("lowlight-gpu: interrupted; finished pairs are kept; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _list_cameras(files):
    """--list-cameras [PRESET.json ...]: one line per built-in preset, then per file (with its content hash)."""
    from . import cameras

    lines = cameras.listing()
    for path in files:
        try:
            data = cameras.load(path)
        except OSError as exc:
            return _fail(f"--list-cameras: cannot read '{path}' ({exc.strerror or exc})")
        except ValueError as exc:
            return _fail(f"--list-cameras: '{path}' is not a valid camera preset: {exc}")
        lines.append(f"{cameras.from_dict(data).describe()}  sha256 {cameras.preset_hash(data)[:16]}  ({path})")
    print("\n".join(lines))
    return EXIT_OK


CALIBRATE_DESCRIPTION = """\
Calibrate a camera's noise from its own raw frames into a noise.camera preset:
CAMERA.json (use it as noise.camera: path/to/CAMERA.json) and CAMERA.png beside
it (photon transfer, Tukey-lambda PPCC, log sigma vs log K fits, row noise, colour bias).

  BIAS_DIR/<setting>/*          >= 2 frames per setting (16+ is better): lens capped, shortest exposure
  FLAT_DIR/<setting>/<level>/*  >= 3 levels per setting, >= 2 frames per level: an evenly lit surface,
                                levels from about 5% to 70% of white

A setting is one ISO or gain (any folder name, the same under both folders).
Frames are camera raw files (rawpy: pip install 'lowlight-gpu[raw]') or 2-D
mosaics as .npy, .tif, .tiff (give --black and --white, and --cfa if not RGGB).
"""


def build_calibrate_parser():
    """The argument parser of the calibrate subcommand."""
    p = _Parser(prog="lowlight-gpu calibrate", description=CALIBRATE_DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bias", required=True, metavar="BIAS_DIR", help="folder of bias frames, one subfolder per setting")
    p.add_argument("--flat", required=True, metavar="FLAT_DIR",
                   help="folder of flat frames, FLAT_DIR/<setting>/<level>/")
    p.add_argument("--out", required=True, metavar="CAMERA.json", help="the preset file to write (and CAMERA.png)")
    p.add_argument("--name", help="the preset's name (default: the file name of --out without .json)")
    p.add_argument("--black", type=non_negative_int, metavar="N",
                   help="black level in DN (default: from the raw files; required for .npy/.tif frames)")
    p.add_argument("--white", type=non_negative_int, metavar="N",
                   help="white (saturation) level in DN (default: from the raw files; required for .npy/.tif frames)")
    p.add_argument("--cfa", choices=("RGGB", "BGGR", "GRBG", "GBRG"),
                   help="the 2x2 colour filter pattern (default: from the raw files, else RGGB)")
    return p


def calibrate_main(argv):
    """lowlight-gpu calibrate: write the preset and its picture; exit 2 with one line on frames it cannot use."""
    from . import calibrate
    from .errors import CalibrationError

    args = build_calibrate_parser().parse_args(argv)
    out = args.out if args.out.lower().endswith(".json") else args.out + ".json"
    name = args.name if args.name is not None else os.path.splitext(os.path.basename(out))[0]
    if not name.strip():
        return _fail("calibrate: --name must not be empty")
    try:
        preset, settings, warnings = calibrate.calibrate(
            args.bias, args.flat, name, args.black, args.white, args.cfa,
            say=lambda line: print(f"lowlight-gpu: calibrate: {line}"))
        paths = calibrate.write_outputs(preset, settings, out)
    except CalibrationError as exc:
        return _fail(f"calibrate: {exc}")
    except OSError as exc:
        return _fail(f"calibrate: {exc.strerror or exc} at '{exc.filename or out}'")
    except KeyboardInterrupt:
        print("lowlight-gpu: calibrate: interrupted", file=sys.stderr)
        return 130
    for line in warnings:
        print(f"lowlight-gpu: calibrate: warning: {line}", file=sys.stderr)
    print(f"lowlight-gpu: calibrate: wrote {paths[0]} and {paths[1]}; use it with --set noise.model=physics "
          f"--set noise.camera={paths[0]}")
    return EXIT_OK


def command(argv=None):
    """The entry point of the command line (generate.py, lowlight-gpu): main(), then a quick exit.

    At exit the interpreter collects every object it still tracks -- numpy's, matplotlib's --
    for nothing: the process is ending.  Freezing them first skips that; files are all closed by then.
    """
    sys.stdout = _PipeSafe(sys.stdout)
    try:
        code = main(argv)
        sys.stdout.flush()
    finally:
        sys.stdout = sys.stdout.stream
    import gc

    gc.freeze()
    return code


class _PipeSafe:
    """stdout that a closed reader (`generate.py | head -1`) cannot fail: once the pipe is gone, output goes nowhere.

    The run's outcome, not the reader's, decides the exit code; a traceback (and exit 1, or 120 from the
    interpreter's last flush) after a good run would say it failed.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        """Write text, or drop it once the reader has gone."""
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self):
        """Flush, or drop what is buffered once the reader has gone."""
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self):
        """Point the stream's descriptor at /dev/null, so the buffered rest (and the final flush) go nowhere."""
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture): nothing to redirect
            pass

    def __getattr__(self, name):
        return getattr(self.stream, name)


def config_path(given):
    """The config file to read: the one given, else ./config.yaml if present, else None (built-in defaults)."""
    if given is not None:
        return given  # asked for explicitly: a missing file is an error
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def _fail(message):
    """Print one line and return the usage exit code."""
    print(f"lowlight-gpu: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _main(args):
    """Load the config, then run the requested action."""
    from . import pipeline, run_record, synth, worker_pool
    from .config import load_config
    from .errors import BackendUnavailable, ConfigError, DamagedDatabase, LockHeld, MergeError, UntrustedDataset

    try:
        config = load_config(config_path(args.config), args.overrides, check_paths=not (args.merge or args.verify is not None
                                                                            or args.preview or args.report))
    except ConfigError as exc:
        return _fail(exc)
    try:
        run_record.check_model_library()  # every action replays or samples through it: one line if not built
    except BackendUnavailable as exc:
        return _fail(exc)
    actions = [a for a in ("merge", "preview", "report") if getattr(args, a)] + \
        (["verify"] if args.verify is not None else [])
    if args.dry_run:  # the checks of a real run (run_record.preflight), then the plan
        try:
            pipeline.dry_run(config, args.shard or (0, 1), args.limit, quiet=args.quiet)
        except (ConfigError, BackendUnavailable, UntrustedDataset) as exc:
            return _fail(exc)
        return EXIT_OK
    if actions:
        try:
            return _tool_actions(args, config)
        except (MergeError, ConfigError, UntrustedDataset) as exc:
            return _fail(exc)
        except LockHeld as exc:
            return _locked(exc)
        except DamagedDatabase as exc:
            print(f"lowlight-gpu: error: {exc}", file=sys.stderr)
            return EXIT_DAMAGED
        except OSError as exc:
            return _stopped(exc, config)
    if args.limit == 0:  # say so rather than run: an existing dataset stays exactly as it is
        print(f"lowlight-gpu: --limit 0: nothing to do; nothing written to {config.output}")
        return EXIT_OK
    try:
        engine = _engine(config)
        # An explicit numpy needs no probe; the worker processes import the numpy backend themselves.
        backend = "numpy" if config.backend == "numpy" else synth.select(config.backend, quiet=args.quiet).NAME
        if config.decode.device == "gpu":
            from . import decode_gpu  # only here: a CPU run never loads nvImageCodec

            decode_gpu.reset_fallbacks()  # this run logs and counts its own failed GPU decodes
        with _progress(args, config) as progress:
            result = pipeline.run(config, shard=args.shard or (0, 1), limit=args.limit,
                                  progress=progress, engine=engine, backend=backend, repair=args.repair)
    except (ConfigError, BackendUnavailable, UntrustedDataset) as exc:
        return _fail(exc)
    except LockHeld as exc:
        return _locked(exc)
    except OSError as exc:  # the output's storage (not one pair) failed: stop, in one line
        return _stopped(exc, config)
    worker_pool.release()  # the workers are done: free their memory before the report is drawn
    _summary(config, args, result)
    if result.pairs and (args.shard is None or args.shard[1] == 1):  # a shard's rows are not merged yet
        _end_report(config)
    return EXIT_FAILED_INPUTS if result.errors else EXIT_OK


def _locked(exc):
    """Print who holds the output and return its exit code."""
    print(f"lowlight-gpu: {exc}; wait for that run to end (or stop it) and re-run, or use another output",
          file=sys.stderr)
    return EXIT_LOCKED


_STORAGE_HINTS = {"ENOSPC": "free some space", "EDQUOT": "free space or raise the quota",
                  "EIO": "check the disk", "EROFS": "make the output writable",
                  "EMFILE": "raise the hard limit on open files (ulimit -Hn) or use fewer shard jobs"}


def _stopped(exc, config):
    """One line naming the cause and the path of a storage failure; returns EXIT_STOPPED."""
    name = errno.errorcode.get(exc.errno, "")
    cause = f"{exc.strerror or exc}" + (f" ({name})" if name else "")
    hint = _STORAGE_HINTS.get(name, "make the output folder writable")
    print(f"lowlight-gpu: stopped: {cause} at '{exc.filename or config.output}'; finished pairs are kept; "
          f"{hint}, then re-run the same command to resume", file=sys.stderr)
    return EXIT_STOPPED


def _engine(config):
    """The Dask engine when configured; None runs local threads (and never imports dask)."""
    if config.distributed.engine != "dask":
        return None
    from .distributed import DaskEngine

    return DaskEngine(config.distributed.address)


def _tool_actions(args, config):
    """--merge, --verify, --preview and --report, in that order; returns the exit code."""
    from . import pipeline

    code = EXIT_OK
    if args.merge:
        counts = pipeline.merge(config)  # takes the merge lock
        print(f"lowlight-gpu: merged {counts['shards']} shard(s): {counts['pairs']} pairs, "
              f"{counts['errors']} errors -> {config.output}")
        _meta_info_note(config, counts.get("meta_info_left_out", 0))
        code = EXIT_FAILED_INPUTS if counts["errors"] else EXIT_OK
        if counts["pairs"] and not args.report:  # the merged dataset gets the report a whole run gets
            _end_report(config)
    if args.verify is not None:
        from .tools import verify

        code = max(code, verify.main(config, None if args.verify < 0 else args.verify))
    if args.preview:
        from .tools import preview

        print(f"lowlight-gpu: wrote {preview.write_preview(config.output)}")
    if args.report:
        from .tools import report

        print(f"lowlight-gpu: wrote {', '.join(report.write_report(config.output))}")
    return code


class _progress:
    """A tqdm bar on a terminal (and nothing otherwise), as a progress callback.

    The bar starts with the first pair, not before: until then this process runs no thread of its own, so
    the run may fork its worker processes (worker_pool).  The total is counted by a second scan in a
    background thread: until it ends the bar says so and shows no time remaining; then it has a total and
    an estimate.
    """

    def __init__(self, args, config=None):
        self.enabled = not args.quiet and sys.stderr.isatty()
        self.bar = None
        self.config, self.shard, self.limit = config, args.shard or (0, 1), args.limit
        self.stop = threading.Event()

    def __enter__(self):
        return self if self.enabled else None

    def start(self):
        """Show the bar and start counting the inputs."""
        from tqdm import tqdm

        # No monitor thread (it only tunes refreshes for stalled loops; every pair updates the bar): it would
        # outlive the bar and keep a later run in this process from forking its workers (worker_pool).
        tqdm.monitor_interval = 0
        self.bar = tqdm(unit="pair", dynamic_ncols=True, file=sys.stderr, desc="counting inputs")
        if self.config is not None:
            threading.Thread(target=self._count, daemon=True, name="lowlight-count").start()

    def _count(self):
        """Set the bar's total to the number of inputs this run will go through."""
        from .pipeline import plan_sources

        try:
            n = 0
            for _ in plan_sources(self.config, self.shard, self.limit):
                n += 1
                if self.stop.is_set():
                    return
        except OSError:
            self.bar.set_description_str("total unknown", refresh=True)
            return
        self.bar.total = n
        self.bar.set_description_str("pairs", refresh=True)

    def __call__(self, outcome):
        """Count one pair (a pipeline.PairResult); a failed one is named beside the bar."""
        if self.bar is None:
            self.start()
        self.bar.update(1)
        if outcome.failed:
            self.bar.set_postfix_str(f"last error: {outcome.row['source']}", refresh=False)

    def __exit__(self, *exc):
        self.stop.set()
        if self.bar is not None:
            self.bar.close()
        return False


def _end_report(config):
    """report.png and report.md after a run; a failure here is one line on stderr, never the run's exit code."""
    from .tools import report

    try:
        print(f"lowlight-gpu: wrote {', '.join(report.write_report(config.output))}")
    except Exception as exc:  # noqa: BLE001 - the pairs are done; the report is a bonus
        print(f"lowlight-gpu: warning: no report ({type(exc).__name__}: {exc})", file=sys.stderr)


def _meta_info_note(config, left_out):
    """One line on stderr when meta_info.txt could not list every pair (containers/metainfo.py says why)."""
    if left_out:
        print(f"lowlight-gpu: meta_info.txt leaves out {left_out} pair(s) whose names BasicSR's meta_info loader "
              f"cannot read (a folder, a space or a line break in the name); {config.output}/manifest.jsonl "
              "lists every pair", file=sys.stderr)


def _summary(config, args, result):
    """The closing line: pairs, errors, pairs/s of the pairs made, skipped files; notes on stderr."""
    reused = f" ({result.skipped} already done)" if result.skipped else ""
    where = f"shard {args.shard[0]}/{args.shard[1]} of " if args.shard else ""
    kept = f"; {result.kept} beyond --limit kept as they were" if result.kept else ""
    skipped = f"; skipped: {result.scan.describe()}" if result.scan.describe() else ""
    # pairs/s of the pairs this run made: reused pairs cost a stat, not a render
    print(f"lowlight-gpu: {where}{result.pairs} pairs{reused}, {result.errors} errors, "
          f"{result.pairs_per_second:.1f} pairs/s -> {config.output}{kept}{skipped}")
    if result.scan.heif_note():
        print(f"lowlight-gpu: {result.scan.heif_note()}", file=sys.stderr)
    if config.decode.device == "gpu":
        from . import decode_gpu

        if decode_gpu.describe_fallbacks():
            print(f"lowlight-gpu: {decode_gpu.describe_fallbacks()}", file=sys.stderr)
    _meta_info_note(config, result.meta_info_left_out)
    if result.removed:
        print(f"lowlight-gpu: removed {result.removed} file(s) of pairs whose source is gone", file=sys.stderr)
    if result.rebuilt:
        print(f"lowlight-gpu: rebuilt damaged LMDB database(s) {', '.join(result.rebuilt)}: their pairs were made "
              "again", file=sys.stderr)
    if result.errors:
        retry = "re-run the same command to retry them"
        if result.unwritable:  # a rerun cannot give them a name the filesystem allows
            retry = (f"{result.unwritable} of them have an output name too long for the filesystem: rename those "
                     "sources" + ("; re-run the same command to retry the others" if result.unwritable < result.errors
                                  else ""))
        print(f"lowlight-gpu: failed inputs are listed in {config.output}/errors.jsonl; {retry}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(command())
