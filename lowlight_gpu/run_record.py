"""A run's identity and compatibility: what run.json and dataset.json record, and the checks before a run writes.

An output folder holds one dataset: one config (its fingerprint), one revision of the model (FORMAT_VERSION),
one input, one encoder and one decoder (and, for webdataset, one save.tar_boundaries).  A run records them in parts/run.json before it writes (record_run)
and refuses a folder that recorded others (check_output), naming the difference; preflight makes every
check a run makes before its first write, and --dry-run makes the same.
"""

import dataclasses
import json
import os
from dataclasses import dataclass

from . import __version__, containers, encode, input_lists, layout, manifest, merging, storage, synth
from .errors import BackendUnavailable, ConfigError
from .synth.spec import FORMAT_VERSION


def dataset_info(config):
    """The body of dataset.json, without counts."""
    # Only the settings that shape the bytes (the fingerprinted ones): where the run read and wrote, and on
    # how many threads or which cluster, must not make a sharded or Dask run differ from a local one.
    settings = config.output_settings()
    return {
        "name": "lowlight_gpu dataset",
        "version": __version__,
        "fingerprint": config.fingerprint(),
        "format_version": FORMAT_VERSION,  # which revision of the model made the bytes (synth/spec.py)
        "config": settings,
        "layout": describe_layout(config),
    }


def describe_layout(config):
    """A short map of where each image of a pair lives, for readers of dataset.json."""
    split_name = "SPLIT" if config.split else None
    plan = layout.plan_outputs("NAME.png", config, split_name) + layout.plan_raw("NAME.png", config, split_name)
    return {o.role + (f"@t{o.t}" if o.t is not None else ""): o.rel for o in plan}


def resolve_codecs(config):
    """(encoder, {"encoder": ..., "decoder": ...}) this machine uses for config; ConfigError when one is missing."""
    try:
        encoder = encode.resolve(config.save.encoder, config.save.compress_level)
    except encode.EncoderUnavailable as exc:
        raise ConfigError(str(exc)) from None
    return encoder, {"encoder": {"name": encoder.name, "version": encoder.version}, "decoder": describe_decoder(config)}


def describe_decoder(config):
    """The decoder record of dataset.json, run.json and done-markers: name and version (GPU: its CPU fallback too)."""
    if config.decode.device == "gpu":
        from . import decode_gpu

        try:
            return decode_gpu.describe()
        except decode_gpu.GpuDecoderUnavailable as exc:
            raise ConfigError(str(exc)) from None
    from PIL import Image

    return {"name": "pillow", "version": Image.__version__}


def check_output(config, codecs=None):
    """Refuse (ConfigError, before writing) an output folder made with a different config or other codecs."""
    _check_recorded(config, read_recorded(config), codecs)


def record_run(config, codecs=None):
    """Claim parts/run.json for this config (the first of several starting jobs wins); refuse another config's."""
    body = {"fingerprint": config.fingerprint(), "version": __version__, "input": config.input,
            "config": config.output_settings(), "format_version": FORMAT_VERSION}
    if input_lists.is_list(config.input):  # the folder a list's ids are relative to is part of the input
        body["input_root"] = input_lists.root_of(config)
    if codecs is not None:
        body.update(codecs)
    body.update(containers.boundaries_record(config))
    try:
        recorded = manifest.claim_run(config.output, body)
    except ValueError:
        recorded = read_recorded(config)  # raises the one-line error
    _check_recorded(config, recorded, codecs)


def read_recorded(config):
    """parts/run.json of config.output, or None; ConfigError when it is unreadable."""
    try:
        return manifest.read_run(config.output)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"output: '{os.path.join(config.output, manifest.PARTS, manifest.RUN_FILE)}' is "
                          f"unreadable ({exc}); delete it to reuse this folder") from None


def _check_recorded(config, recorded, codecs=None):
    """ConfigError unless the recorded run.json body is absent or has this config's fingerprint and codecs."""
    if recorded is None:
        return
    was_input = recorded.get("input")
    if was_input is not None and not isinstance(was_input, str):
        raise ConfigError(f"output: '{os.path.join(config.output, manifest.PARTS, manifest.RUN_FILE)}' is "
                          "unreadable (its input is not a path); delete it to reuse this folder")
    if was_input is not None and _absolute(was_input) != _absolute(config.input):
        # A dataset's identity includes its input: rows of two input folders must never mix.
        raise ConfigError(
            f"input: folder '{config.output}' holds a dataset made from input '{was_input}', not "
            f"'{_absolute(config.input)}'; keep input as it was, or start a new dataset with "
            "--set output=NEW_FOLDER")
    was_root = recorded.get("input_root")
    if was_root is not None and input_lists.is_list(config.input) and was_root != input_lists.root_of(config):
        raise ConfigError(
            f"input_root: folder '{config.output}' holds a dataset whose listed ids are relative to '{was_root}', "
            f"not '{input_lists.root_of(config)}'; keep input_root as it was, or start a new dataset with "
            "--set output=NEW_FOLDER")
    made_by = recorded.get("format_version", 1 if "fingerprint" in recorded else FORMAT_VERSION)
    if made_by != FORMAT_VERSION:
        # Another revision of the model renders other bytes (synth/spec.py): one dataset never mixes two.
        raise ConfigError(
            f"output: folder '{config.output}' holds a dataset made by format version {made_by} of the model, "
            f"this is version {FORMAT_VERSION}, whose images differ; choose a new output folder (or finish it "
            "with the release that started it)")
    if recorded.get("fingerprint") != config.fingerprint():
        raise ConfigError(
            f"output: folder '{config.output}' holds a dataset made with a different config "
            f"({config_difference(recorded, config)}); choose a new output folder or delete it")
    for role, key in (("encoder", "save.encoder"), ("decoder", "decode.device")):
        # Pixels are the contract, bytes belong to one encoder: one dataset never mixes two (nor two decoders).
        # A run.json from before codecs were recorded has none to compare.
        was, now = recorded.get(role), (codecs or {}).get(role)
        if was is not None and now is not None and was != now:
            raise ConfigError(
                f"{key}: folder '{config.output}' was written with {role} {_codec_label(was)}, this run would use "
                f"{_codec_label(now)}; install {_codec_label(was)} here (the pixels would match, the bytes not), "
                "or choose a new output folder")
    refused = containers.boundaries_refusal(recorded, config, f"folder '{config.output}'")
    if refused:
        raise ConfigError(refused)


def _codec_label(record):
    """'fpng 0.1.0' for a codec record."""
    if not isinstance(record, dict):
        return repr(record)
    return " ".join(str(record[k]) for k in ("name", "version") if k in record)


def config_difference(recorded, config):
    """'seed was 0, now 5; darken.gamma was [1.5, 5.0], now [2.0, 3.0]' between a recorded run.json and config."""
    was = recorded.get("config")
    if not isinstance(was, dict):  # a run.json from before settings were recorded
        return f"fingerprint {recorded.get('fingerprint')}, now {config.fingerprint()}"
    old, new = _flatten(was), _flatten(config.output_settings())
    diffs = [f"{k} was {_show(old.get(k))}, now {_show(new.get(k))}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    return "; ".join(diffs) or f"fingerprint {recorded.get('fingerprint')}, now {config.fingerprint()}"


def _flatten(settings, prefix=""):
    """{dotted key: value} of a nested settings dict."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and key != "split":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _show(value):
    """A settings value as YAML-ish text."""
    return json.dumps(value) if not isinstance(value, str) else value


def absolute_paths(config):
    """config with absolute input and output, so a work item means the same file on any machine's cwd."""
    root = None if config.input_root is None else _absolute(config.input_root)
    return dataclasses.replace(config, input=_absolute(config.input), output=_absolute(config.output), input_root=root)


def _absolute(path):
    """A local path made absolute; a URL (storage.is_url) as it is."""
    return path if storage.is_url(path) else os.path.abspath(path)


@dataclass(frozen=True)
class Preflight:
    """What the checks before a run resolved: the config with absolute paths, the codecs and the backend."""

    config: object
    encoder: encode.Encoder
    codecs: dict
    backend: str


def preflight(config, backend=None, quiet=False, shard=(0, 1)):
    """Every check a run makes before it writes anything (a dry run makes the same); returns a Preflight.

    ConfigError (exit 2): a codec, container package or Dask missing, an output made with another config or
    holding finished shards of another shard count.  BackendUnavailable (exit 2): backend cupy without a
    working GPU.  (An input without a single image is found by the scan itself: check_found.)
    """
    check_model_library()
    config = absolute_paths(config)
    if os.path.isdir(config.output):
        manifest.check_folders(config.output)  # UntrustedDataset: parts/ or shards/ linked out, before they are read
    encoder, codecs = resolve_codecs(config)  # save.encoder, decode.device
    check_output(config, codecs)
    mixed = merging.other_count_refusal(config.output, *shard)
    if mixed:
        raise ConfigError(mixed)
    # An explicit numpy needs no probe, and worker processes import the backend themselves.
    backend = backend or ("numpy" if config.backend == "numpy" else synth.select(config.backend, quiet=quiet).NAME)
    containers.check_available(config.save.container)
    if config.distributed.engine == "dask":
        from .distributed import import_distributed

        import_distributed()
    return Preflight(config, encoder, codecs, backend)


def check_model_library():
    """BackendUnavailable (exit 2) when the model's C library is not built: every pair's params need it."""
    from .synth import native

    try:
        native.lib()
    except native.NativeUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
