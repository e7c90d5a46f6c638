"""The Config dataclasses are declared in config.py for readers and IDEs; FIELDS stays the one table they must match."""

import pickle
import typing
from dataclasses import MISSING, fields, is_dataclass

from lowlight_gpu import config
from lowlight_gpu.config import FIELDS, SECTION_CLASSES, Config, config_from_dict


def declared():
    """[(key, type, default)] of every leaf field of Config, in declaration order ('noise.peak', ...)."""
    out = []
    hints = typing.get_type_hints(Config)
    for f in fields(Config):
        if is_dataclass(hints[f.name]):
            section = hints[f.name]
            inner = typing.get_type_hints(section)
            out += [(f"{f.name}.{g.name}", inner[g.name], g.default) for g in fields(section)]
        else:
            out.append((f.name, hints[f.name], f.default))
    return out


def test_the_classes_declare_the_tables_keys_in_its_order_with_its_types():
    assert [(key, typ) for key, typ, _ in declared()] == [(f.key, f.type) for f in FIELDS]


def test_each_declared_default_is_the_tables_default_as_validated():
    for key, _, default in declared():
        field = next(f for f in FIELDS if f.key == key)
        assert default is not MISSING, key
        assert default == field.check(key, field.default), key
    assert Config() == config_from_dict({})
    assert Config().fingerprint() == config_from_dict({}).fingerprint()


def test_every_section_has_its_class_and_instances_pickle():
    sections = list(dict.fromkeys(f.key.partition(".")[0] for f in FIELDS if "." in f.key))
    assert list(SECTION_CLASSES) == sections
    hints = typing.get_type_hints(Config)
    assert all(hints[s] is SECTION_CLASSES[s] for s in sections)
    cfg = config_from_dict({"noise": {"peak": [200, 300]}, "progressive": {"enabled": True, "save": "all"}})
    assert isinstance(cfg.noise, config.NoiseConfig) and cfg.noise.peak == (200.0, 300.0)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg.progressive.saved_steps() == tuple(range(1, 11))
