"""Command line: argparse, exit codes, one-line errors.

Exit codes: 0 every input done; 2 bad usage or config (nothing written);
3 the run finished but some inputs failed (listed in errors.jsonl).
"""

import argparse
import os
import re
import sys

from . import __version__

EXIT_OK, EXIT_USAGE, EXIT_FAILED_INPUTS = 0, 2, 3
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

exit codes: 0 all inputs done, 2 bad usage or config (nothing written),
            3 finished but some inputs failed (see OUTPUT/errors.jsonl; re-run to retry),
            1 --verify found a file that differs from its replay (each one is named)
"""


def parse_shard(text):
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"--shard expects I/N with 0 <= I < N, got '{text}'")
    return int(m.group(1)), int(m.group(2))


def non_negative_int(text):
    """An int >= 0 for --limit and --verify."""
    if not re.fullmatch(r"\d+", text or ""):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got '{text}'")
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
    p.add_argument("--verify", nargs="?", const=-1, type=non_negative_int, metavar="N",
                   help="replay N manifest rows (all if N is left out) and compare them with the files")
    p.add_argument("--preview", action="store_true", help="write OUTPUT/preview.png, a contact sheet")
    p.add_argument("--report", action="store_true", help="write OUTPUT/report.png and report.md")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list-cameras", action="store_true",
                   help="print the camera presets of noise.model physics (noise.camera), one per line, and exit")
    p.add_argument("--version", action="version", version=f"lowlight_gpu {__version__}")
    return p


def main(argv=None):
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.list_cameras:
        from .synth.cameras import listing

        print("\n".join(listing()))
        return EXIT_OK
    try:
        return _main(args)
    except KeyboardInterrupt:
        print("lowlight-gpu: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


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
    from . import pipeline
    from .config import ConfigError, load_config
    from .manifest import MergeError
    from .synth import BackendUnavailable

    try:
        config = load_config(config_path(args.config), args.overrides, check_paths=not (args.merge or args.verify is not None
                                                                            or args.preview or args.report))
    except ConfigError as exc:
        return _fail(exc)
    actions = [a for a in ("merge", "preview", "report") if getattr(args, a)] + \
        (["verify"] if args.verify is not None else [])
    if args.dry_run:
        pipeline.dry_run(config, args.shard or (0, 1), args.limit)
        return EXIT_OK
    if actions:
        try:
            return _tool_actions(args, config)
        except (MergeError, ConfigError) as exc:
            return _fail(exc)
    try:
        engine = _engine(config)
        with _progress(args) as progress:
            result = pipeline.run(config, shard=args.shard or (0, 1), limit=args.limit,
                                  progress=progress, engine=engine)
    except (ConfigError, BackendUnavailable) as exc:
        return _fail(exc)
    except OSError as exc:  # the output folder itself (not one pair) cannot be written: say so in one line
        where = exc.filename or config.output
        return _fail(f"output: cannot write '{where}': {exc.strerror or exc}; "
                     "check the folder's permissions and free space, then re-run to resume")
    _summary(config, args, result)
    if result.pairs and (args.shard is None or args.shard[1] == 1):  # a shard's rows are not merged yet
        _end_report(config)
    return EXIT_FAILED_INPUTS if result.errors else EXIT_OK


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
        counts = pipeline.merge(config)
        print(f"lowlight-gpu: merged {counts['shards']} shard(s): {counts['pairs']} pairs, "
              f"{counts['errors']} errors -> {config.output}")
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
    """A tqdm bar on a terminal (and nothing otherwise), as a progress callback."""

    def __init__(self, args):
        self.enabled = not args.quiet and sys.stderr.isatty()
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from tqdm import tqdm

        self.bar = tqdm(unit="pair", dynamic_ncols=True, file=sys.stderr)
        return self

    def __call__(self, kind, row):
        self.bar.update(1)
        if kind == "error":
            self.bar.set_postfix_str(f"last error: {row['source']}", refresh=False)

    def __exit__(self, *exc):
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


def _summary(config, args, result):
    """The closing line: pairs, errors, pairs/s."""
    reused = f" ({result.skipped} already done)" if result.skipped else ""
    where = f"shard {args.shard[0]}/{args.shard[1]} of " if args.shard else ""
    print(f"lowlight-gpu: {where}{result.pairs} pairs{reused}, {result.errors} errors, "
          f"{result.pairs_per_second:.1f} pairs/s -> {config.output}")
    if result.errors:
        print(f"lowlight-gpu: failed inputs are listed in {config.output}/errors.jsonl; "
              "re-run the same command to retry them", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
