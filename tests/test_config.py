"""Tests for lowlight_gpu.config: defaults, overrides, validation errors, round-trip, fingerprint."""
import dataclasses
import json

import pytest

from lowlight_gpu.config import (
    DEFAULTS, Config, ConfigError, ProgressiveConfig, apply_override, config_from_dict, load_config,
)


def err(raw=None, overrides=()):
    """Return the ConfigError message for raw + overrides (fails if none raised)."""
    d = dict(raw or {})
    with pytest.raises(ConfigError) as info:
        for item in overrides:
            apply_override(d, item)
        config_from_dict(d)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def write(tmp_path, text, name="c.yaml"):
    """Write a config file and return its path."""
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- defaults and loading

def test_defaults_load_without_file():
    c = load_config(None, check_paths=False)
    assert c.input == "samples" and c.output == "out" and c.seed == 0
    assert c.backend == "auto" and c.workers == "auto" and c.layout == "lol" and c.split is None
    assert c.max_pixels == 89478485
    assert c.darken.alpha == (0.9, 1.0) and c.darken.gamma == (1.5, 5.0)
    assert c.progressive == ProgressiveConfig(enabled=False, steps=10, save="last")
    assert c.noise.model == "poisson-gaussian" and c.noise.peak == (100.0, 1000.0)
    assert c.save.compress_level == 1 and c.save.format == "png" and c.save.clean_low is False
    assert c.distributed.engine == "none" and c.distributed.address is None
    assert c.gpu.batch_megapixels == 48.0 and c.gpu.memory_limit_gb is None


def test_dataclass_fields_match_defaults():
    c = load_config(None, check_paths=False)
    assert [f.name for f in dataclasses.fields(Config)] == list(DEFAULTS)
    for section, value in DEFAULTS.items():
        if isinstance(value, dict):
            assert [f.name for f in dataclasses.fields(getattr(c, section))] == list(value)


def test_config_is_frozen():
    c = load_config(None, check_paths=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.darken.gamma = (1.0, 1.0)


def test_defaults_dict_not_mutated_by_loading():
    before = json.dumps(DEFAULTS, sort_keys=True)
    load_config(None, ["darken.gamma=2", "split={train: 1}"], check_paths=False)
    assert json.dumps(DEFAULTS, sort_keys=True) == before


def test_empty_file_gives_defaults(tmp_path):
    p = write(tmp_path, "# only a comment\n")
    assert load_config(p, check_paths=False) == load_config(None, check_paths=False)


def test_empty_section_means_defaults(tmp_path):
    p = write(tmp_path, "darken:\n  # alpha: 1\n")
    assert load_config(p, check_paths=False).darken.alpha == (0.9, 1.0)


def test_file_then_overrides_in_order(tmp_path):
    p = write(tmp_path, "seed: 5\nworkers: 2\ndarken:\n  gamma: [2, 3]\n")
    c = load_config(p, ["seed=7", "seed=9", "darken.alpha=0.95"], check_paths=False)
    assert c.seed == 9                       # last --set wins over file and earlier --set
    assert c.workers == 2                    # file value kept
    assert c.darken.gamma == (2.0, 3.0)      # file value kept
    assert c.darken.alpha == (0.95, 0.95)    # override merges into the file's section
    assert c.darken.beta == (0.5, 1.0)       # untouched keys keep defaults


def test_paths_checked_when_asked(tmp_path):
    (tmp_path / "imgs").mkdir()
    p = write(tmp_path, f"input: {tmp_path / 'imgs'}\noutput: {tmp_path / 'o'}\n")
    c = load_config(p)
    assert c.input == str(tmp_path / "imgs") and isinstance(c.input, str)


def test_missing_input_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"input: folder '.*nope' does not exist; set input"):
        load_config(None, [f"input={tmp_path / 'nope'}"])


def test_input_is_a_file(tmp_path):
    # A .txt/.lst/.parquet file is an input list (input_lists.py); any other file is refused as before.
    f = write(tmp_path, "x", name="file.jpg")
    with pytest.raises(ConfigError, match=r"^input: .*is a file"):
        load_config(None, [f"input={f}"])


def test_output_is_a_file(tmp_path):
    f = write(tmp_path, "x", name="file.txt")
    with pytest.raises(ConfigError, match=r"^output: .*is a file"):
        load_config(None, [f"input={tmp_path}", f"output={f}"])


def test_check_paths_false_skips_checks(tmp_path):
    assert load_config(None, [f"input={tmp_path / 'nope'}"], check_paths=False).input.endswith("nope")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*x\.yaml' not found; pass --config PATH"):
        load_config(tmp_path / "x.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "seed: 1\nworkers: 2\nnoise: model: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(p, check_paths=False)
    msg = str(info.value)
    assert "c.yaml" in msg and "not valid YAML" in msg and "line 3" in msg and "column" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "just a string\n"])
def test_non_mapping_top_level(tmp_path, text):
    with pytest.raises(ConfigError, match=r"config file '.*c\.yaml' must hold a mapping"):
        load_config(write(tmp_path, text), check_paths=False)


def test_config_from_dict_rejects_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict([1, 2])


# ---------------------------------------------------------------- --set parsing

@pytest.mark.parametrize("item, getter, expected", [
    ("darken.gamma=[2,3]", lambda c: c.darken.gamma, (2.0, 3.0)),
    ("noise.model=none", lambda c: c.noise.model, "none"),
    ("gpu.memory_limit_gb=null", lambda c: c.gpu.memory_limit_gb, None),
    ("gpu.memory_limit_gb=~", lambda c: c.gpu.memory_limit_gb, None),
    ("progressive.enabled=true", lambda c: c.progressive.enabled, True),
    ("save.clean_low=false", lambda c: c.save.clean_low, False),
    ("workers=4", lambda c: c.workers, 4),
    ("distributed.address=tcp://h:8786", lambda c: c.distributed.address, "tcp://h:8786"),
    ("split={train: 0.8, test: 0.2}", lambda c: c.split, (("train", 0.8), ("test", 0.2))),
    ("split.val=1", lambda c: c.split, (("val", 1.0),)),
    ("darken={gamma: 2}", lambda c: c.darken.gamma, (2.0, 2.0)),
])
def test_set_parses_yaml(item, getter, expected):
    assert getter(load_config(None, [item], check_paths=False)) == expected


def test_apply_override_sets_nested_raw_values():
    raw = {"seed": 1}
    apply_override(raw, "darken.gamma=[2, 3]")
    apply_override(raw, "noise.model=null")
    assert raw == {"seed": 1, "darken": {"gamma": [2, 3]}, "noise": {"model": None}}


def test_null_noise_model_is_not_none_string():
    assert "got None" in err(overrides=["noise.model=null"])


@pytest.mark.parametrize("item", ["foo", "=3", ".x=1", "darken..gamma=2"])
def test_set_without_key_value(item):
    assert err(overrides=[item]) == f"--set expects KEY=VALUE, got '{item}'"


@pytest.mark.parametrize("item, suggestion", [
    ("darken.gama=3", "did you mean 'darken.gamma'?"),
    ("seed.x=3", "unknown config key 'seed.x'"),
    ("darken.gamma.lo=3", "unknown config key 'darken.gamma.lo'"),
    ("zzz=1", "known keys: input, output"),
])
def test_set_unknown_key(item, suggestion):
    assert suggestion in err(overrides=[item])


def test_set_below_non_mapping_section():
    assert err({"darken": 3}, ["darken.gamma=2"]).startswith("config key 'darken' must be a mapping")


def test_set_bad_yaml_value():
    assert err(overrides=["darken.gamma=[1, 2"]).startswith("--set darken.gamma")


# ---------------------------------------------------------------- error families

def test_unknown_key_with_suggestion():
    assert err({"darken": {"gama": 3}}) == "unknown config key 'darken.gama'; did you mean 'darken.gamma'?"
    assert "did you mean 'seed'?" in err({"seeds": 1})


def test_unknown_key_without_suggestion_lists_top_level():
    msg = err({"zzzzzz": 1})
    assert msg.startswith("unknown config key 'zzzzzz'; known keys: input, output, seed")
    assert "darken.alpha" not in msg


def test_section_not_a_mapping():
    assert err({"darken": 3}) == (
        "config key 'darken' must be a mapping of darken.alpha, darken.beta, darken.gamma, got 3")


def test_wrong_type():
    assert err({"workers": "lots"}) == "config key 'workers' must be an integer >= 1 or 'auto', got 'lots' (str)"
    assert "config key 'workers'" in err({"workers": 0})


def test_out_of_range():
    assert err({"darken": {"alpha": [0.5, 1.2]}}) == (
        "config key 'darken.alpha' must lie in (0, 1], got [0.5, 1.2]; e.g. darken.alpha: [0.9, 1.0]")
    assert "config key 'darken.beta' must lie in (0, 1]" in err({"darken": {"beta": 0}})
    assert "config key 'darken.gamma' must lie in" in err({"darken": {"gamma": -1}})
    assert "config key 'noise.peak'" in err({"noise": {"peak": [0, 10]}})
    assert "config key 'noise.peak'" in err({"noise": {"peak": 2e9}})
    assert "config key 'noise.read_sigma'" in err({"noise": {"read_sigma": [0, 1.5]}})
    assert "config key 'noise.sigma'" in err({"noise": {"sigma": -0.1}})


def test_lo_greater_than_hi():
    assert err({"darken": {"gamma": [5, 2]}}) == "config key 'darken.gamma' has lo > hi in [5, 2]; write it as [2, 5]"


@pytest.mark.parametrize("value", [[1], [1, 2, 3], "2", True, [True, 2], float("nan"),
                                   [1, float("inf")], None, {"lo": 1}])
def test_range_bad_shape_or_type(value):
    assert err({"darken": {"gamma": value}}).startswith("config key 'darken.gamma' must be a number or a [lo, hi]")


def test_enum_with_and_without_suggestion():
    assert err({"backend": "gpu"}) == "config key 'backend' must be one of auto, numpy, cupy, got 'gpu'"
    assert err({"backend": "numpi"}).endswith("; did you mean 'numpy'?")
    assert "did you mean 'poisson-gaussian'?" in err({"noise": {"model": "poisson_gaussian"}})
    for key, sub in [("layout", None), ("noise", "order"), ("noise", "space"), ("save", "format"),
                     ("distributed", "engine")]:
        raw = {key: "bogus"} if sub is None else {key: {sub: "bogus"}}
        assert err(raw).startswith(f"config key '{key if sub is None else key + '.' + sub}' must be one of")


@pytest.mark.parametrize("raw, key", [
    ({"seed": True}, "seed"),
    ({"workers": True}, "workers"),
    ({"max_pixels": True}, "max_pixels"),
    ({"progressive": {"steps": True}}, "progressive.steps"),
    ({"save": {"compress_level": False}}, "save.compress_level"),
])
def test_bool_is_not_an_int(raw, key):
    msg = err(raw)
    assert msg.startswith(f"config key '{key}' must be") and "(bool)" in msg


@pytest.mark.parametrize("raw, key", [
    ({"progressive": {"enabled": "yes"}}, "progressive.enabled"),
    ({"progressive": {"enabled": 1}}, "progressive.enabled"),
    ({"save": {"clean_low": "true"}}, "save.clean_low"),
])
def test_bool_keys_reject_non_bools(raw, key):
    assert err(raw).startswith(f"config key '{key}' must be true or false")


@pytest.mark.parametrize("raw, key", [
    ({"seed": -1}, "seed"),
    ({"seed": 2 ** 63}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"max_pixels": 0}, "max_pixels"),
    ({"progressive": {"steps": 0}}, "progressive.steps"),
    ({"save": {"compress_level": 10}}, "save.compress_level"),
    ({"gpu": {"batch_megapixels": 0}}, "gpu.batch_megapixels"),
    ({"gpu": {"memory_limit_gb": -2}}, "gpu.memory_limit_gb"),
    ({"distributed": {"address": ""}}, "distributed.address"),
    ({"distributed": {"address": 5}}, "distributed.address"),
    ({"input": 2024}, "input"),
    ({"output": None}, "output"),
])
def test_scalar_keys_reject_bad_values(raw, key):
    assert err(raw).startswith(f"config key '{key}' must be")


def test_scalar_edges_accepted():
    c = config_from_dict({"seed": 2 ** 63 - 1, "save": {"compress_level": 9},
                          "gpu": {"memory_limit_gb": 8}, "distributed": {"engine": "dask"}})
    assert c.seed == 2 ** 63 - 1 and c.save.compress_level == 9 and c.gpu.memory_limit_gb == 8.0
    assert c.distributed.engine == "dask"


# ---------------------------------------------------------------- ranges, progressive, split

def test_single_number_is_fixed_range():
    c = config_from_dict({"darken": {"gamma": 2}, "noise": {"peak": 500, "read_sigma": 0}})
    assert c.darken.gamma == (2.0, 2.0) and isinstance(c.darken.gamma[0], float)
    assert c.noise.peak == (500.0, 500.0) and c.noise.read_sigma == (0.0, 0.0)


def test_range_edges_accepted():
    c = config_from_dict({"darken": {"alpha": [1, 1]}, "noise": {"peak": [1, 1e9], "sigma": [0, 1]}})
    assert c.darken.alpha == (1.0, 1.0) and c.noise.peak == (1.0, 1e9) and c.noise.sigma == (0.0, 1.0)


@pytest.mark.parametrize("save, steps, stored, saved", [
    ("all", 3, "all", (1, 2, 3)),
    ("last", 4, "last", (4,)),
    ([3, 1], 5, (1, 3), (1, 3)),
    (2, 5, (2,), (2,)),
])
def test_progressive_save_variants(save, steps, stored, saved):
    c = config_from_dict({"progressive": {"save": save, "steps": steps}})
    assert c.progressive.save == stored
    assert c.progressive.saved_steps() == saved


@pytest.mark.parametrize("save, fragment", [
    ([], "non-empty list"),
    ([0], "[1, 10]"),
    ([11], "[1, 10]"),
    ([2, 2], "lists a step twice"),
    (["1"], "(list)"),
    ([True], "(list)"),
    ("al", "did you mean 'all'?"),
    (None, "(NoneType)"),
])
def test_progressive_save_errors(save, fragment):
    msg = err({"progressive": {"save": save}})
    assert msg.startswith("config key 'progressive.save'") and fragment in msg


def test_split_valid_order_and_subset():
    c = config_from_dict({"split": {"test": 0.1, "train": 0.7, "val": 0.2}})
    assert c.split == (("train", 0.7), ("val", 0.2), ("test", 0.1))
    assert config_from_dict({"split": {"train": 1}}).split == (("train", 1.0),)


@pytest.mark.parametrize("split, fragment", [
    ({"train": 0.5, "val": 0.4}, "sum 0.9"),
    ({"train": 0.8, "validation": 0.2}, "unknown part 'validation'"),
    ({"train": 1.5, "val": -0.5}, "config key 'split.train'"),
    ({"train": "0.5", "val": 0.5}, "config key 'split.train'"),
    ({"train": True}, "config key 'split.train'"),
    ({}, "sum 0"),
    ([0.8, 0.2], "config key 'split' must be a mapping"),
])
def test_split_errors(split, fragment):
    assert fragment in err({"split": split})


# ---------------------------------------------------------------- round-trip and fingerprint

def test_to_dict_round_trips_and_is_json():
    c = config_from_dict({"seed": 3, "workers": 2, "split": {"train": 0.9, "val": 0.1},
                          "progressive": {"enabled": True, "steps": 4, "save": [4, 2]},
                          "darken": {"gamma": 2.5}, "gpu": {"memory_limit_gb": 4}})
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["darken"]["gamma"] == [2.5, 2.5] and d["split"] == {"train": 0.9, "val": 0.1}
    assert d["progressive"]["save"] == [2, 4]
    assert config_from_dict(d) == c
    assert config_from_dict(load_config(None, check_paths=False).to_dict()) == load_config(None, check_paths=False)


def test_fingerprint_stable_and_sensitive():
    base = config_from_dict({})
    fp = base.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert config_from_dict({}).fingerprint() == fp
    assert config_from_dict({"darken": {"gamma": [1.5, 4.0]}}).fingerprint() != fp
    assert config_from_dict({"seed": 1}).fingerprint() != fp
    assert config_from_dict({"noise": {"model": "poisson"}}).fingerprint() != fp


@pytest.mark.parametrize("raw", [
    {"workers": 8}, {"backend": "numpy"}, {"input": "elsewhere"}, {"output": "o2"},
    {"distributed": {"engine": "dask"}}, {"gpu": {"batch_megapixels": 8}},
])
def test_fingerprint_ignores_execution_settings(raw):
    assert config_from_dict(raw).fingerprint() == config_from_dict({}).fingerprint()


# ---------------------------------------------------------------- the field table: pins and config.yaml

@pytest.mark.parametrize("raw, pinned", [
    ({}, "0bd0dddd3cd5c9bf"),
    ({"noise": {"model": "physics", "camera": "virtual", "gain": [1, 2]}, "save": {"raw": True}}, "40f9bde191e2479b"),
    ({"progressive": {"enabled": True, "steps": 4, "save": [1, 3]}}, "0a0b8ff9a83d3a52"),
])
def test_fingerprint_values_are_pinned(raw, pinned):
    # Datasets record this value; a change would make every existing dataset refuse to resume or merge.
    assert config_from_dict(raw).fingerprint() == pinned


def test_output_settings_keys_are_pinned():
    settings = config_from_dict({}).output_settings()
    assert list(settings) == ["seed", "layout", "split", "max_pixels", "follow_symlinks", "decode", "darken",
                              "progressive", "noise", "save"]
    assert list(settings["save"]) == ["format", "compress_level", "clean_low", "encoder", "container",
                                      "shard_pairs", "raw"]
    assert list(settings["noise"]) == ["model", "peak", "read_sigma", "sigma", "order", "space", "camera",
                                       "components", "gain"]


def _leaves(tree, prefix=""):
    """{'section.key': value} of a nested config mapping (split stays one leaf)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "split":
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_yaml_lists_every_key_of_the_table_with_its_default():
    import pathlib

    import yaml

    from lowlight_gpu.config import FIELDS

    shipped = _leaves(yaml.safe_load((pathlib.Path(__file__).parents[1] / "config.yaml").read_text()))
    table = {f.key: f.default for f in FIELDS}
    assert list(shipped) == list(table)  # the same keys, in the same order
    assert shipped == table
