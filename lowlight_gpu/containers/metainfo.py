"""BasicSR's meta_info.txt, written from the merged manifest: ``NAME.png (h,w,c) compress_level`` per pair.

* lmdb: ``DB.lmdb/meta_info.txt`` in every database, NAME = the key (BasicSR takes the key as the text
  before the line's first dot, which is why keys hold no dots).
* files: ``OUTPUT/meta_info.txt`` (``meta_info_{split}.txt`` per split), NAME = the path under the high
  folder, which is also the path under low/, low/tNN/ and low_clean/ (BasicSR's ``meta_info_file`` option).
  BasicSR reads one name per line, up to the line's first space, and finds the low image by the name's last
  component, so a name with a folder, a space, a line break, leading white space (or no UTF-8 form) cannot
  be carried: such a pair is left out of meta_info and counted (the manifest lists every pair).  An LMDB
  key escapes every such character (containers.sample_key), so the LMDB meta_info lists every pair.
* webdataset: none (each sample carries its row as KEY.json).
"""

import os
from collections import namedtuple

from .. import layout, manifest, paths
from ..fsutil import replace_if_changed
from .naming import container_of, image_refs

MANIFEST = "manifest.jsonl"


def line(name, row, level):
    """One meta_info line: name, (h,w,c) and the PNG compression level."""
    channels = 4 if row.get("alpha") else 3
    return f"{name} ({row['height']},{row['width']},{channels}) {level}\n"


Written = namedtuple("Written", "files left_out")  # meta_info files written (relative); pairs left out of them


def basicsr_can_read(name):
    """Whether BasicSR's meta_info loader gives name back from its line and finds its low image by it.

    The loader takes ``line.strip().split(' ')[0]`` of each line and joins the low folder with the name's
    last component: a space, a line break (\\n or \\r: Python splits lines at both), leading white space
    or a folder would each name another file.
    """
    if not name or "/" in name or " " in name or "\n" in name or "\r" in name or name[0].isspace():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a file name of undecodable bytes (kept by Python as surrogates)
        return False
    return True


def targets(row, cfg):
    """[(meta_info file relative to the output, name)] that list a row's pair."""
    container = container_of(row)
    if container == "lmdb":
        return [(f"{db}/meta_info.txt", f"{row['key']}.png") for db in sorted(image_refs(row))]
    if container == "files":
        split = row.get("split")
        prefix = layout.folder(cfg.layout, "high", split) + "/"
        name = row["high"][len(prefix):] if row["high"].startswith(prefix) else row["high"]
        return [(f"meta_info_{split}.txt" if split else "meta_info.txt", name)]
    return []


def write(cfg):
    """Write the meta_info files of cfg.output's manifest; returns Written(relative paths, pairs left out)."""
    root = cfg.output
    level = cfg.save.compress_level
    files = {}
    left_out = 0
    try:
        for n, row in enumerate(manifest.read_rows(os.path.join(root, MANIFEST)), 1):
            paths.check_row(row, os.path.join(root, MANIFEST), n, public=True)  # its split and databases name files
            for rel, name in targets(row, cfg):
                f = files.get(rel)
                if f is None:  # made even if every name is left out: an empty list, never a stale one
                    path = os.path.join(root, rel)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    f = files[rel] = open(_temp(path), "w", encoding="utf-8")
                if container_of(row) == "files" and not basicsr_can_read(name):
                    left_out += 1
                    continue
                f.write(line(name, row, level))
    finally:
        for f in files.values():
            f.close()
    for rel in files:
        path = os.path.join(root, rel)
        replace_if_changed(_temp(path), path)
    return Written(sorted(files), left_out)


def _temp(path):
    """The temporary name of a meta_info file."""
    return os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
