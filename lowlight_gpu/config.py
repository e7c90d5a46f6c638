"""Parse the YAML config once into a typed, validated, frozen Config."""
from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Tuple, Union

import yaml

from . import storage
from .errors import ConfigError
from .hashing import fingerprint as _hash_settings

Range = Tuple[float, float]


SPLIT_NAMES = ("train", "val", "test")
_SEED_LIMIT = 2 ** 63  # seeds feed numpy/CuPy 64-bit generators; larger ones would overflow


# ---------------------------------------------------------------- error helpers

def _show(value: Any) -> str:
    """Repr a user value, shortened so the message stays readable."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def yaml_text(value: Any) -> str:
    """A value as a user writes it in YAML (null, true, [1.5, 5.0]), for hints: never Python's None or True."""
    return json.dumps(value) if not isinstance(value, str) else value


def _type_error(key: str, what: str, value: Any) -> ConfigError:
    """Build the 'must be X, got V (type)' error."""
    return ConfigError(f"config key '{key}' must be {what}, got {_show(value)} ({type(value).__name__})")


def _unknown_key(key: str) -> ConfigError:
    """Build the unknown-key error, suggesting the nearest known key."""
    close = difflib.get_close_matches(key, _LEAVES + _SECTIONS, n=1)
    if close:
        return ConfigError(f"unknown config key '{key}'; did you mean '{close[0]}'?")
    return ConfigError(f"unknown config key '{key}'; known keys: {', '.join(DEFAULTS)}")


def _not_mapping(key: str, value: Any) -> ConfigError:
    """Build the error for a section (or split) given as a non-mapping."""
    members = SPLIT_NAMES if key == "split" else tuple(DEFAULTS[key])
    listed = ", ".join(f"{key}.{m}" for m in members)
    return ConfigError(f"config key '{key}' must be a mapping of {listed}, got {_show(value)}")


# ---------------------------------------------------------------- leaf validators

def _is_int(v: Any) -> bool:
    """True for real integers; bool is excluded because YAML `true` is not a count."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """True for finite real numbers (not bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(key: str, v: Any, lo: int, hi: Optional[int], what: str) -> int:
    """Validate an integer in [lo, hi)."""
    if not _is_int(v):
        raise _type_error(key, what, v)
    if v < lo or (hi is not None and v >= hi):
        raise ConfigError(f"config key '{key}' must be {what}, got {v}")
    return int(v)


def _bool(key: str, v: Any) -> bool:
    """Validate a real YAML boolean; 'yes' strings and 1 are too easy to mistype."""
    if not isinstance(v, bool):
        raise _type_error(key, "true or false", v)
    return v


def _enum(key: str, v: Any, choices: Tuple[str, ...]) -> str:
    """Validate one of a fixed set of strings, suggesting the closest."""
    if isinstance(v, str) and v in choices:
        return v
    msg = f"config key '{key}' must be one of {', '.join(choices)}, got {_show(v)}"
    close = difflib.get_close_matches(v.lower(), choices, n=1) if isinstance(v, str) else []
    raise ConfigError(msg + (f"; did you mean '{close[0]}'?" if close else ""))


def _path(key: str, v: Any) -> str:
    """Validate a non-empty folder path string."""
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str) or not v.strip():
        raise _type_error(key, "a folder path (quote it if it looks like a number)", v)
    return v


def _location(key: str, v: Any) -> str:
    """Validate a folder path or an object-storage URL (s3://, gs://, az://) whose filesystem is installed."""
    v = _path(key, v)
    if storage.is_url(v):
        storage.check_url(key, v)
    return v


def _optional_location(key: str, v: Any) -> Optional[str]:
    """Validate null or a folder path or URL (input_root)."""
    return None if v is None else _location(key, v)


def _column(key: str, v: Any) -> str:
    """Validate a Parquet column name."""
    if not isinstance(v, str) or not v.strip():
        raise _type_error(key, "a column name of the Parquet input list", v)
    return v


def _options(key: str, v: Any) -> dict:
    """Validate storage_options: a mapping of fsspec filesystem options (never recorded anywhere)."""
    if v is None or v == {}:
        return None
    if not isinstance(v, Mapping):
        raise _type_error(key, "a mapping of fsspec options (e.g. endpoint_url: http://host:8333)", v)
    return copy.deepcopy(dict(v))


def _workers(key: str, v: Any) -> Union[int, str]:
    """Validate an int >= 1 or 'auto'."""
    if v == "auto" and isinstance(v, str):
        return v
    if not _is_int(v) or v < 1:
        raise _type_error(key, "an integer >= 1 or 'auto'", v)
    return int(v)


def _positive(key: str, v: Any, optional: bool = False) -> Optional[float]:
    """Validate a finite number > 0 (or null when optional)."""
    if v is None and optional:
        return None
    if not _is_number(v) or v <= 0:
        raise _type_error(key, "a number > 0" + (" or null" if optional else ""), v)
    return float(v)


def _address(key: str, v: Any) -> Optional[str]:
    """Validate null or a non-empty scheduler address."""
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _type_error(key, "null or a scheduler address like 'tcp://host:8786'", v)
    return v


def _range(key: str, v: Any, bounds: Tuple[float, bool, float, bool, str]) -> Range:
    """Validate a [lo, hi] pair or a single number (a fixed value) inside bounds = (lo, lo inclusive, hi, hi inclusive,
    the interval as shown to the user)."""
    pair = [v, v] if _is_number(v) else v
    if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(map(_is_number, pair)):
        raise _type_error(key, "a number or a [lo, hi] list of two finite numbers", v)
    lo_b, lo_in, hi_b, hi_in, text = bounds
    inside = lambda x: (x >= lo_b if lo_in else x > lo_b) and (x <= hi_b if hi_in else x < hi_b)
    if not all(map(inside, pair)):
        example = f"{key}: {yaml_text(DEFAULTS[key.split('.')[0]][key.split('.')[1]])}"
        raise ConfigError(f"config key '{key}' must lie in {text}, got {_show(v)}; e.g. {example}")
    lo, hi = pair
    if lo > hi:
        raise ConfigError(f"config key '{key}' has lo > hi in {_show(v)}; write it as [{hi}, {lo}]")
    return (float(lo), float(hi))


def _optional_range(key: str, v: Any, bounds: Tuple[float, bool, float, bool, str]) -> Optional[Range]:
    """Validate null or a range (see _range)."""
    return None if v is None else _range(key, v, bounds)


NOISE_MODELS = ("none", "poisson-gaussian", "poisson", "gaussian", "brooks", "physics")
NOISE_COMPONENTS = "ptgrqc"  # ELD/LED letters: shot, Tukey read, Gaussian read, row, quantisation, colour bias


def _components(key: str, v: Any) -> str:
    """Validate a string of distinct physics-noise letters from NOISE_COMPONENTS ('' for none)."""
    if v is None:  # null could mean "the default" (as for noise.gain) or "none": a user must say which
        raise ConfigError(f"config key '{key}' is null; write {DEFAULTS['noise']['components']} for the default "
                          "components, or '' for no sensor noise (the bare ISP round trip)")
    if not isinstance(v, str):
        raise _type_error(key, f"a string of letters from '{NOISE_COMPONENTS}' (e.g. ptrqc), or ''", v)
    bad = sorted(set(v) - set(NOISE_COMPONENTS))
    if bad:
        raise ConfigError(f"config key '{key}' has unknown component(s) {''.join(bad)!r} in {_show(v)}; "
                          f"use letters of '{NOISE_COMPONENTS}': p shot, t Tukey-lambda read, g Gaussian read, "
                          "r row, q quantisation, c colour bias")
    if len(set(v)) != len(v):
        raise ConfigError(f"config key '{key}' lists a component twice in {_show(v)}; list each once")
    if "t" in v and "g" in v:
        raise ConfigError(f"config key '{key}' has both t and g in {_show(v)}; the read noise is either "
                          "Tukey-lambda (t) or Gaussian (g)")
    return v


def _name(key: str, v: Any) -> str:
    """Validate a non-empty name string."""
    if not isinstance(v, str) or not v.strip():
        raise _type_error(key, "a non-empty name", v)
    return v


def _camera(key: str, v: Any) -> Union[str, dict]:
    """Validate a physics camera: a preset's name (cameras.py; lowlight-gpu --list-cameras), a path to a JSON
    preset (lowlight-gpu calibrate), or a preset mapping (as dataset.json records one).

    A file becomes its content (a mapping): the dataset's identity is the preset, not where the file lies.
    """
    from . import cameras

    if isinstance(v, Mapping):
        try:
            return cameras.load_mapping(dict(v))
        except ValueError as exc:
            raise ConfigError(f"config key '{key}' holds a camera preset that is not valid: {exc}") from None
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    name = _name(key, v)
    if name in cameras.PRESETS:
        return name
    if name.lower().endswith(".json") or os.sep in name or os.path.isfile(name):
        return _camera_file(key, name)
    close = difflib.get_close_matches(name, list(cameras.PRESETS), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"config key '{key}' has unknown camera {_show(v)}; {hint}"
                      f"choose one of {', '.join(cameras.PRESETS)} (lowlight-gpu --list-cameras), "
                      "or give the path of a .json preset (lowlight-gpu calibrate)")


def _camera_file(key: str, path: str) -> dict:
    """The content of the JSON camera preset at path; ConfigError naming the file and the problem otherwise."""
    from . import cameras

    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "not found"
        raise ConfigError(f"config key '{key}': camera preset file '{path}' {what}; give a camera name "
                          "(lowlight-gpu --list-cameras) or the path of a .json preset (lowlight-gpu calibrate)")
    try:
        return cameras.load(path)
    except OSError as exc:
        raise ConfigError(f"config key '{key}': camera preset file '{path}' cannot be read "
                          f"({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"config key '{key}': camera preset file '{path}' is not a valid preset: {exc}") from None


def _split(key: str, v: Any) -> Optional[Tuple[Tuple[str, float], ...]]:
    """Validate null or {train/val/test: ratio} summing to 1; keep train, val, test order."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise _not_mapping(key, v)
    for name, ratio in v.items():
        if name not in SPLIT_NAMES:
            raise ConfigError(f"config key 'split' has unknown part '{name}'; use train, val, test")
        if not _is_number(ratio) or not 0 <= ratio <= 1:
            raise _type_error(f"split.{name}", "a number in [0, 1]", ratio)
    total = sum(v.values())
    if abs(total - 1) > 1e-6:
        raise ConfigError(f"config key 'split' ratios must sum to 1, got sum {total:g} in {_show(dict(v))}")
    return tuple((n, float(v[n])) for n in SPLIT_NAMES if n in v)


def _save_steps(key: str, v: Any, steps: int) -> Union[str, Tuple[int, ...]]:
    """Validate 'all', 'last' or distinct step numbers in [1, steps] (a bare int means [n])."""
    if isinstance(v, str):
        return _enum(key, v, ("all", "last"))
    what = f"'all', 'last' or a non-empty list of step numbers in [1, {steps}]"
    items = [v] if _is_int(v) else v
    if not isinstance(items, (list, tuple)) or not items or not all(_is_int(s) for s in items):
        raise _type_error(key, what, v)
    if not all(1 <= s <= steps for s in items):
        raise ConfigError(f"config key '{key}' must be {what} (progressive.steps), got {_show(v)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"config key '{key}' lists a step twice in {_show(v)}; list each once")
    return tuple(sorted(int(s) for s in items))


# ---------------------------------------------------------------- the field table

@dataclass(frozen=True)
class Field:
    """One config key: its default, its type, its check, and whether it shapes the generated bytes."""
    key: str  # "seed", or "section.name"
    default: Any
    type: Any
    check: Callable[[str, Any], Any]
    fingerprinted: bool = True  # False: it only says where or how fast the run works


def _one_of(*choices: str) -> Callable[[str, Any], str]:
    """Check for one of a fixed set of strings."""
    return partial(_enum, choices=choices)


def _int_in(lo: int, hi: Optional[int], what: str) -> Callable[[str, Any], int]:
    """Check for an integer in [lo, hi)."""
    return partial(_int, lo=lo, hi=hi, what=what)


def _in(lo: float, lo_in: bool, hi: float, hi_in: bool, text: str, optional: bool = False) -> Callable[[str, Any], Any]:
    """Check for a range inside an interval (lo, hi with their inclusiveness, and how the user reads it)."""
    return partial(_optional_range if optional else _range, bounds=(lo, lo_in, hi, hi_in, text))


def _after_steps(key: str, v: Any) -> Any:
    """progressive.save: checked by config_from_dict once progressive.steps is known."""
    return v


_AT_LEAST_1 = "an integer >= 1"

# The one declaration of the schema: DEFAULTS, validation and the fingerprint derive from it, and the Config
# dataclasses below declare the same fields, types and defaults (tests/test_config_classes.py checks that).
# The order is the order of config.yaml, of Config's fields and of validation (the first bad key is reported).
FIELDS = (
    Field("input", "samples", str, _location, fingerprinted=False),
    Field("output", "out", str, _location, fingerprinted=False),
    Field("seed", 0, int, _int_in(0, _SEED_LIMIT, "an integer in [0, 2**63)")),
    Field("backend", "auto", str, _one_of("auto", "numpy", "cupy"), fingerprinted=False),
    Field("workers", "auto", Union[int, str], _workers, fingerprinted=False),
    Field("layout", "lol", str, _one_of("lol", "mbllen")),
    Field("split", None, Optional[Tuple[Tuple[str, float], ...]], _split),
    Field("max_pixels", 89478485, int, _int_in(1, None, _AT_LEAST_1)),
    Field("follow_symlinks", True, bool, _bool),
    Field("storage_options", None, Optional[dict], _options, fingerprinted=False),
    Field("input_root", None, Optional[str], _optional_location, fingerprinted=False),
    Field("input_column", "path", str, _column, fingerprinted=False),
    Field("decode.device", "cpu", str, _one_of("cpu", "gpu")),
    Field("decode.color", "convert", str, _one_of("convert", "ignore")),
    Field("darken.alpha", [0.9, 1.0], Range, _in(0.0, False, 1.0, True, "(0, 1]")),
    Field("darken.beta", [0.5, 1.0], Range, _in(0.0, False, 1.0, True, "(0, 1]")),
    Field("darken.gamma", [1.5, 5.0], Range, _in(0.0, False, math.inf, False, "(0, inf)")),
    Field("progressive.enabled", False, bool, _bool),
    Field("progressive.steps", 10, int, _int_in(1, None, _AT_LEAST_1)),
    Field("progressive.save", "last", Union[str, Tuple[int, ...]], _after_steps),
    Field("noise.model", "poisson-gaussian", str, _one_of(*NOISE_MODELS)),
    Field("noise.peak", [100, 1000], Range, _in(0.0, False, 1e9, True, "(0, 1e9]")),
    Field("noise.read_sigma", [0.002, 0.01], Range, _in(0.0, True, 1.0, True, "[0, 1]")),
    Field("noise.sigma", [0.01, 0.05], Range, _in(0.0, True, 1.0, True, "[0, 1]")),
    Field("noise.order", "after", str, _one_of("after", "before")),
    Field("noise.space", "srgb", str, _one_of("srgb", "linear")),
    Field("noise.camera", "virtual", Union[str, dict], _camera),
    Field("noise.components", "ptrqc", str, _components),
    Field("noise.gain", None, Optional[Range], _in(0.0, False, 1e6, True, "(0, 1e6]", optional=True)),
    Field("save.format", "png", str, _one_of("png")),  # png only: the writers know no other format (config.yaml)
    Field("save.compress_level", 1, int, _int_in(0, 10, "an integer in 0..9")),
    Field("save.clean_low", False, bool, _bool),
    Field("save.encoder", "auto", str, _one_of("auto", "fpng", "pillow")),
    Field("save.container", "files", str, _one_of("files", "webdataset", "lmdb")),
    Field("save.shard_pairs", 1000, int, _int_in(1, None, _AT_LEAST_1)),
    # Where a sharded webdataset run's tars end: each job's own (job) or one sequence over the dataset (global).
    # No sample's bytes or row depends on it, so it is not fingerprinted; run.json records it (run_record).
    Field("save.tar_boundaries", "job", str, _one_of("job", "global"), fingerprinted=False),
    Field("save.raw", False, bool, _bool),
    Field("distributed.engine", "none", str, _one_of("none", "dask"), fingerprinted=False),
    Field("distributed.address", None, Optional[str], _address, fingerprinted=False),
    Field("gpu.batch_megapixels", 48, float, _positive, fingerprinted=False),
    Field("gpu.memory_limit_gb", None, Optional[float], partial(_positive, optional=True), fingerprinted=False),
)


def _defaults() -> dict:
    """The nested dict of every key's default, in table order."""
    out: dict = {}
    for f in FIELDS:
        section, _, sub = f.key.partition(".")
        if sub:
            out.setdefault(section, {})[sub] = f.default
        else:
            out[section] = f.default
    return out


DEFAULTS: dict = _defaults()
_LEAVES = tuple(f.key for f in FIELDS)
_SECTIONS = tuple(dict.fromkeys(f.key.partition(".")[0] for f in FIELDS if "." in f.key))
_CHECKS: dict[str, Callable[[str, Any], Any]] = {f.key: f.check for f in FIELDS}
_TYPES = {f.key: f.type for f in FIELDS}
_FINGERPRINTED = frozenset(f.key for f in FIELDS if f.fingerprinted)


# ---------------------------------------------------------------- frozen config objects
# Declared here so a reader and an IDE see every field; FIELDS stays the one table: the field names, their
# order, their types and their defaults (FIELDS' defaults as validated) must equal it, which
# tests/test_config_classes.py checks.  The classes are frozen and live in this module, so instances pickle.


@dataclass(frozen=True)
class DecodeConfig:
    """How sources are decoded: on which device, and whether embedded ICC profiles are honoured."""
    device: str = "cpu"
    color: str = "convert"


@dataclass(frozen=True)
class DarkenConfig:
    """Per-image darkening ranges, each (lo, hi) sampled uniformly."""
    alpha: Range = (0.9, 1.0)
    beta: Range = (0.5, 1.0)
    gamma: Range = (1.5, 5.0)


@dataclass(frozen=True)
class ProgressiveConfig:
    """Progressive darkening: how many steps and which of them to save."""
    enabled: bool = False
    steps: int = 10
    save: Union[str, Tuple[int, ...]] = "last"

    def saved_steps(self) -> Tuple[int, ...]:
        """Return the 1-based step numbers to write, in increasing order."""
        if self.save == "all":
            return tuple(range(1, self.steps + 1))
        if self.save == "last":
            return (self.steps,)
        return tuple(self.save)


@dataclass(frozen=True)
class NoiseConfig:
    """Sensor noise model and its sampled parameter ranges."""
    model: str = "poisson-gaussian"
    peak: Range = (100.0, 1000.0)
    read_sigma: Range = (0.002, 0.01)
    sigma: Range = (0.01, 0.05)
    order: str = "after"
    space: str = "srgb"
    camera: Union[str, dict] = "virtual"
    components: str = "ptrqc"
    gain: Optional[Range] = None


@dataclass(frozen=True)
class SaveConfig:
    """How output images are encoded and stored."""
    format: str = "png"
    compress_level: int = 1
    clean_low: bool = False
    encoder: str = "auto"
    container: str = "files"
    shard_pairs: int = 1000
    tar_boundaries: str = "job"
    raw: bool = False


@dataclass(frozen=True)
class DistributedConfig:
    """Optional multi-machine execution."""
    engine: str = "none"
    address: Optional[str] = None


@dataclass(frozen=True)
class GpuConfig:
    """GPU batching and memory-pool limits."""
    batch_megapixels: float = 48.0
    memory_limit_gb: Optional[float] = None


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""
    input: str = "samples"
    output: str = "out"
    seed: int = 0
    backend: str = "auto"
    workers: Union[int, str] = "auto"
    layout: str = "lol"
    split: Optional[Tuple[Tuple[str, float], ...]] = None
    max_pixels: int = 89478485
    follow_symlinks: bool = True
    storage_options: Optional[dict] = field(default=None, hash=False, compare=False, repr=False)  # may hold secrets
    input_root: Optional[str] = None
    input_column: str = "path"
    decode: DecodeConfig = DecodeConfig()
    darken: DarkenConfig = DarkenConfig()
    progressive: ProgressiveConfig = ProgressiveConfig()
    noise: NoiseConfig = NoiseConfig()
    save: SaveConfig = SaveConfig()
    distributed: DistributedConfig = DistributedConfig()
    gpu: GpuConfig = GpuConfig()

    def to_dict(self) -> dict:
        """Return a plain, JSON-serialisable nested dict that config_from_dict accepts."""
        out = _plain(self)
        out["split"] = dict(self.split) if self.split is not None else None
        return out

    def output_settings(self) -> dict:
        """The settings that shape the generated bytes: all but where and how fast the run works."""
        out = {}
        for key, value in self.to_dict().items():
            if key in _SECTIONS:
                kept = {sub: v for sub, v in value.items() if f"{key}.{sub}" in _FINGERPRINTED}
                if kept:
                    out[key] = kept
            elif key in _FINGERPRINTED:
                out[key] = value
        return out

    def fingerprint(self) -> str:
        """Return a 16-hex-char hash of every setting that changes generated bytes."""
        return _hash_settings(json.dumps(self.output_settings(), sort_keys=True, separators=(",", ":")).encode())


SECTION_CLASSES = {"decode": DecodeConfig, "darken": DarkenConfig, "progressive": ProgressiveConfig,
                   "noise": NoiseConfig, "save": SaveConfig, "distributed": DistributedConfig, "gpu": GpuConfig}


def _plain(obj: Any) -> Any:
    """Turn dataclasses into dicts and tuples into lists, recursively."""
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- merging and loading

def _merge(raw: Mapping) -> dict:
    """Return DEFAULTS with raw laid over it, rejecting unknown keys and non-mapping sections."""
    merged = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise _unknown_key(str(key))
        if key not in _SECTIONS:
            merged[key] = value
        elif value is not None:  # `darken:` with everything commented out means "defaults"
            if not isinstance(value, Mapping):
                raise _not_mapping(key, value)
            for sub, subvalue in value.items():
                if sub not in DEFAULTS[key]:
                    raise _unknown_key(f"{key}.{sub}")
                merged[key][sub] = subvalue
    return merged


# A YAML 1.2 number with an exponent but no dot ('1e6', '2E-3'): PyYAML follows YAML 1.1 and leaves it a string.
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+")
_TEXT_TYPES = (str, bool, Optional[str])  # keys whose values are never numbers: their text stays text


def as_number(value: Any) -> Any:
    """value with each '1e6'-style string read as YAML 1.2 reads it (lists and mappings too); the rest unchanged.

    An integral value becomes an int (1e3 -> 1000, so a count may be written so), any other a float.
    """
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        number = Decimal(value.strip())
        return int(number) if number == number.to_integral_value() and abs(number) < _SEED_LIMIT else float(number)
    if isinstance(value, list):
        return [as_number(v) for v in value]
    if isinstance(value, Mapping):
        return {k: as_number(v) for k, v in value.items()}
    return value


LIST_SUFFIXES = (".txt", ".lst", ".parquet")  # an input with one of these names is a list of inputs (input_lists)


def is_input_list(path: str) -> bool:
    """Whether input names a list of paths or URLs (a .txt, .lst or .parquet file) rather than a folder."""
    return str(path).rstrip("/").lower().endswith(LIST_SUFFIXES)


def _check_list(cfg: Config) -> None:
    """Fail early on an input list that cannot work: missing, a folder, Parquet without pyarrow, a bad input_root."""
    if cfg.input.lower().endswith(".parquet"):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError(f"input: '{cfg.input}' is a Parquet list, which needs pyarrow; "
                              "pip install 'lowlight-gpu[parquet]'") from None
    if not storage.is_url(cfg.input):
        if os.path.isdir(cfg.input):
            raise ConfigError(f"input: '{cfg.input}' is a folder named like a list file; rename it, or list its "
                              "files in a .txt file")
        if not os.path.isfile(cfg.input):
            raise ConfigError(f"input: list '{cfg.input}' does not exist; set input to a list file or a folder")
    root = cfg.input_root
    if root is not None and not storage.is_url(root) and not os.path.isdir(root):
        raise ConfigError(f"input_root: '{root}' is not a folder; set it to the folder the listed paths are "
                          "relative to (or null: the list's own folder)")


def _check_paths(cfg: Config) -> None:
    """Fail early on input/output folders that cannot work, before any image is touched."""
    if is_input_list(cfg.input):
        _check_list(cfg)
        if storage.is_url(cfg.output):
            return
        out = Path(cfg.output)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output: '{cfg.output}' is a file, not a folder; set output to a folder path")
        return
    if storage.is_url(cfg.output) and storage.is_url(cfg.input) and \
            storage.strip(cfg.output) == storage.strip(cfg.input) and \
            storage.scheme(cfg.output) == storage.scheme(cfg.input):
        raise ConfigError(f"output: '{cfg.output}' is the input folder; set output to another folder")
    if storage.is_url(cfg.input) or storage.is_url(cfg.output):
        return  # a bucket is checked by the run's first request (one line, exit 4), not here
    inp, out = Path(cfg.input), Path(cfg.output)
    if inp.exists() and not inp.is_dir():
        raise ConfigError(f"input: '{cfg.input}' is a file, not a folder; set input to a folder of images")
    if not inp.is_dir():
        raise ConfigError(f"input: folder '{cfg.input}' does not exist; set input to a folder of images")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output: '{cfg.output}' is a file, not a folder; set output to a folder path")
    ancestor = out.absolute().parent
    while not ancestor.exists():  # the filesystem root always exists
        ancestor = ancestor.parent
    if not out.exists() and not ancestor.is_dir():
        raise ConfigError(f"output: '{cfg.output}' cannot be created because '{ancestor}' is a file; "
                          "set output to a folder path")
    if out.exists() and out.resolve() == inp.resolve():  # the outputs would be scanned as inputs next run
        raise ConfigError(f"output: '{cfg.output}' is the input folder; set output to another folder")


def config_from_dict(raw: Mapping, *, check_paths: bool = False) -> Config:
    """Merge raw over DEFAULTS, validate every key and build the frozen Config."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config must be a mapping of keys (e.g. seed: 0), got {_show(raw)}")
    merged = _merge(raw)
    flat = {}
    for leaf in _LEAVES:
        section, _, sub = leaf.partition(".")
        value = merged[section][sub] if sub else merged[section]
        if _TYPES[leaf] not in _TEXT_TYPES:
            value = as_number(value)
        flat[leaf] = _CHECKS[leaf](leaf, value)
    steps = flat["progressive.steps"]
    flat["progressive.save"] = _save_steps("progressive.save", flat["progressive.save"], steps)
    if flat["save.raw"] and flat["noise.model"] != "physics":
        raise ConfigError(f"config key 'save.raw' writes the raw mosaics of noise.model physics, but noise.model is "
                          f"{flat['noise.model']!r}; set noise.model: physics, or save.raw: false")
    _refuse_keys_that_do_not_apply(flat)
    top = {k: v for k, v in flat.items() if "." not in k}
    for section, cls in SECTION_CLASSES.items():
        top[section] = cls(**{f.name: flat[f"{section}.{f.name}"] for f in fields(cls)})
    cfg = Config(**top)
    if check_paths:
        _check_paths(cfg)
    return cfg


PHYSICS_ONLY = ("noise.camera", "noise.components", "noise.gain")  # (and save.raw, refused above)
NOT_FOR_PHYSICS = ("noise.order", "noise.space")  # physics makes its noise in raw space, inside the ISP


def _refuse_keys_that_do_not_apply(flat: dict) -> None:
    """ConfigError for a key set away from its default where noise.model ignores it (the rule of save.raw).

    A key at its default is fine (config.yaml lists every key), so a run that works keeps its fingerprint.
    """
    if not is_input_list(flat["input"]):
        for key, default in (("input_root", None), ("input_column", "path")):
            if flat[key] != default:
                raise ConfigError(f"config key '{key}' applies to an input list only (input: a .txt, .lst or "
                                  f".parquet file), but input is the folder '{flat['input']}'; leave {key} at "
                                  f"{yaml_text(default)}, or set input to a list")
    model = flat["noise.model"]
    for key in NOT_FOR_PHYSICS if model == "physics" else PHYSICS_ONLY:
        section, _, sub = key.partition(".")
        default = DEFAULTS[section][sub]
        if flat[key] == _CHECKS[key](key, default):
            continue
        if model == "physics":
            raise ConfigError(f"config key '{key}' does not apply to noise.model physics (its noise is made in raw "
                              f"space, inside the ISP), got {_show(flat[key])}; leave {key} at "
                              f"{yaml_text(default)}, or pick another noise.model")
        raise ConfigError(f"config key '{key}' applies to noise.model physics only, but noise.model is {model!r}; "
                          f"set noise.model: physics, or leave {key} at {yaml_text(default)}")


def apply_override(raw: dict, item: str) -> None:
    """Apply one --set 'a.b=VALUE' to raw in place; VALUE is parsed as YAML."""
    key, eq, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not eq or not all(parts):
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    # Only paths that name a known key (or a split part) are accepted, so typos fail here.
    # split.NAME names a split; storage_options.a.b any fsspec option (the filesystem checks its names).
    if key not in _LEAVES and key not in _SECTIONS and not (parts[0] == "split" and len(parts) == 2) \
            and not (parts[0] == "storage_options" and len(parts) > 1):
        raise _unknown_key(key)
    try:
        value = parse_yaml(text)
    except yaml.YAMLError as exc:
        fix = "" if isinstance(exc, DuplicateKey) else "; quote it"
        raise ConfigError(f"--set {key}: value '{text}' is not valid YAML ({_problem(exc)}){fix}") from None
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            raise _not_mapping(part, node[part])
        node = node[part]
    node[parts[-1]] = value


class DuplicateKey(yaml.MarkedYAMLError):
    """A mapping names one key twice: YAML says keys are unique, and PyYAML would keep the last silently."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        """The mapping of node; DuplicateKey (with its line and column) when a key repeats."""
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' merges: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise DuplicateKey(problem=f"key '{key}' is given twice; keep one",
                                       problem_mark=key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """YAML text as data (safe types only); a duplicate key is an error, as YAML requires."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _problem(exc: yaml.YAMLError) -> str:
    """Describe a YAML error as 'line L, column C: problem' (1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _read_yaml(path: Union[str, os.PathLike]) -> dict:
    """Read the config file into a dict; an empty file is an empty dict."""
    name = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file '{name}' not found; pass --config PATH")
    if not p.is_file():
        raise ConfigError(f"config file '{name}' is not a file; pass --config PATH to a YAML file")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{name}' is not valid YAML ({_problem(exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{name}' cannot be read ({exc}); check it is UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{name}' must hold a mapping of keys (e.g. seed: 0), "
                          f"got {type(data).__name__}")
    return data


def load_config(path: Union[str, os.PathLike, None], overrides: Iterable[str] = (), *,
                check_paths: bool = True) -> Config:
    """Load DEFAULTS <- file <- --set overrides (in order), then validate."""
    raw = {} if path is None else _read_yaml(path)
    for item in overrides:
        apply_override(raw, item)
    return config_from_dict(raw, check_paths=check_paths)
