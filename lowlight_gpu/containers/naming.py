"""Names and row plumbing shared by every container: keys, tags, member names, payloads (see the package docstring).

Below the container writers and readers: they import this module, never the package.
"""

import hashlib
import os
import string
from urllib.parse import unquote

from .. import layout

CONTAINERS = ("files", "webdataset", "lmdb")
SHARDS = "shards"
NO_SPLIT = "data"  # the shard name prefix when no split is configured
LMDB_MISSING = "save.container: lmdb needs the lmdb package: pip install -e '.[lmdb]' (or pick files or webdataset)"
PAYLOAD = "_payload"  # a row's encoded images on their way from a worker to the main process's writer
_KEY_SAFE = frozenset(string.ascii_letters + string.digits + "_-/")
LMDB_MAX_KEY = 511  # bytes: LMDB's compiled-in key limit (MDB_MAXKEYSIZE); py-lmdb's own build has it too
HASHED_KEY_MARK = "~"  # never in an escaped key (it is written %7E): marks a key shortened by lmdb_key


def sample_key(out_rel):
    """The container key of an output name ('d/a.png' -> 'd/a', 'x.jpg.png' -> 'x%2Ejpg')."""
    stem = out_rel[:-4] if out_rel.endswith(".png") else out_rel
    return "".join(c if c in _KEY_SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in stem)


def out_rel_of(key):
    """The output name a key came from (the inverse of sample_key)."""
    return unquote(key, errors="strict") + ".png"


def lmdb_key(key):
    """key when it fits LMDB's limit, else its first bytes + '~' + 32 hex digits of its SHA-256 (511 bytes in all)."""
    if len(key) <= LMDB_MAX_KEY:  # ASCII: one byte per character
        return key
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:32]
    head = key[: LMDB_MAX_KEY - len(HASHED_KEY_MARK) - len(digest)]
    if "%" in head[-2:]:  # never cut inside a %XX escape: the prefix stays a readable name
        head = head[: head.rindex("%")]
    return head + HASHED_KEY_MARK + digest


def out_rel_of_row(row):
    """The output name of a container row: its key unescaped, or the name it records when its key was shortened."""
    return row["name"] if HASHED_KEY_MARK in row["key"] else out_rel_of(row["key"])


def image_tag(role, t, config):
    """The tag of one planned image: high, low, low_clean, tNN or low_clean_tNN."""
    tag = "low" if role == "low" else role.replace("clean_low", "low_clean")
    if t is None:
        return tag
    step = layout.step_folder(t, config.progressive.steps)
    return step if role == "low" else f"{tag}_{step}"


def member_name(key, tag, rel):
    """The tar member of one image: KEY.TAG.EXT (EXT from the files-layout path)."""
    return f"{key}.{tag}{os.path.splitext(rel)[1]}"


def database_of(rel, out_rel):
    """The LMDB database of an image at files-layout path rel: its folder + '.lmdb'."""
    return rel[: -len(out_rel) - 1] + ".lmdb"


def split_prefix(split_name):
    """The shard file prefix of a split (NO_SPLIT without one)."""
    return split_name or NO_SPLIT


def needs_writer(config):
    """Whether encoded bytes go to the main process's writer (tar, LMDB) instead of being written by workers."""
    return config.save.container != "files"


def check_available(container):
    """ConfigError (one line, before anything is written) when the container's package is missing."""
    from ..errors import ConfigError

    if container == "lmdb":
        try:
            import lmdb  # noqa: F401
        except ImportError:
            raise ConfigError(LMDB_MISSING) from None


def attach(row, payload, out_rel, container):
    """Turn a files-layout row into a container row: key, member or database names, and the bytes to store.

    payload is [(tag, files-layout rel, bytes), ...] in plan order (extra payloads after the images).
    """
    key = sample_key(out_rel)
    if container == "webdataset":
        refs = {rel: member_name(key, tag, rel) for tag, rel, _ in payload}
    else:
        key = lmdb_key(key)
        refs = {rel: database_of(rel, out_rel) for _, rel, _ in payload}
    out = {"source": row["source"], "key": key}
    if HASHED_KEY_MARK in key:  # the key alone no longer gives the name (verify and the raw plan need it)
        out["name"] = out_rel
    for name, value in row.items():  # high, low, clean_low, raw_*: paths; steps, clean_steps, raw_steps: lists
        if isinstance(value, str) and value in refs:
            value = refs[value]
        elif isinstance(value, list) and value and all(isinstance(s, dict) and s.get("path") in refs for s in value):
            value = [dict(s, path=refs[s["path"]]) for s in value]
        out.setdefault(name, value)
    out[PAYLOAD] = [(member_name(key, tag, rel), as_bytes(data), refs[rel] if container == "lmdb" else None)
                    for (tag, rel, data) in payload]
    return out


def as_bytes(data):
    """bytes as they travel in a payload (a memoryview or bytearray becomes bytes)."""
    return data if isinstance(data, bytes) else bytes(data)


def public(row):
    """A row without private fields (state, payload): what manifest.jsonl and a sample's KEY.json hold."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def image_refs(row):
    """Every image reference a row records: high, low, clean_low and the steps' paths."""
    refs = [row.get("high"), row.get("low"), row.get("clean_low")]
    refs += [s.get("path") for s in row.get("steps", []) + row.get("clean_steps", [])]
    return {r for r in refs if r}


def container_of(row):
    """Which container a public manifest row lives in: webdataset (has a shard), lmdb (a key only) or files."""
    if "shard" in row:
        return "webdataset"
    return "lmdb" if "key" in row else "files"


def planned_refs(row, plan, cfg):
    """[(plan entry, reference)] of a row's pair: its files path, tar member or database for each planned image.

    plan holds layout.Output or layout.RawOutput records (role, t, rel).
    """
    container = container_of(row)
    if container == "files":
        return [(entry, entry.rel) for entry in plan]
    key = row["key"]
    out_rel = out_rel_of_row(row)
    refs = []
    for entry in plan:
        if container == "webdataset":
            refs.append((entry, member_name(key, image_tag(entry.role, entry.t, cfg), entry.rel)))
        else:
            refs.append((entry, database_of(entry.rel, out_rel)))
    return refs
