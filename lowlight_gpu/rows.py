"""A pair's manifest row, built in one place: the row of a made pair, its raw mosaics' fields, an errors row.

A row is plain data (it crosses to the main process and into manifest.jsonl).  Its fields, per configuration:

* always: source, high, low, seed, params, width, height, backend (what rendered), decoder (what decoded);
* progressive: steps (and clean_steps with clean_low, raw_steps with save.raw), each step {t, path} (raw: {t, role,
  path}); clean_low: clean_low; save.raw: raw_clean and raw_low (the last step's); an RGBA source: alpha; a split:
  split;
* private, for resume: _state {source: [size, mtime_ns], files: {rel: [size, crc32]}}; a container adds key (and
  shard, or a shortened key's name) and its own _state fields (containers.attach).

tests/test_rows.py pins these keys for each configuration family.
"""

import os

from . import manifest


def build_row(src, decoded, params, plan, split_name, backend, files):
    """The manifest row of one pair (plus private resume state); plan is its layout.Output list, files its
    {rel: [size, digest]} (empty when a container's writer stores the bytes)."""
    lows = [(o.t, o.rel) for o in plan if o.role == "low"]
    cleans = [(o.t, o.rel) for o in plan if o.role == "clean_low"]
    row = {
        "source": src.rel,
        "high": plan[0].rel,
        "low": lows[-1][1],
        "seed": params["seed"],
        "params": params,
        "width": int(decoded.rgb.shape[1]),
        "height": int(decoded.rgb.shape[0]),
        "backend": backend,
        "decoder": getattr(decoded, "decoder", "pillow"),  # decode_gpu.GpuDecoded says 'nvimgcodec'
    }
    if "progressive" in params:
        row["steps"] = [{"t": t, "path": rel} for t, rel in lows]
    if cleans:
        row["clean_low"] = cleans[-1][1]
        if "progressive" in params:
            row["clean_steps"] = [{"t": t, "path": rel} for t, rel in cleans]
    if decoded.alpha is not None:
        row["alpha"] = True
    if split_name is not None:
        row["split"] = split_name
    if src.stat is not None:  # known from the scan (an object listing) or fetched with the bytes (a listed URL)
        stat = [src.stat[0], src.stat[1]]
    else:
        st = os.stat(src.path)
        stat = [st.st_size, st.st_mtime_ns]
    row[manifest.STATE] = {"source": stat, "files": files}
    return row


def with_raw(row, raw_plan):
    """The row with its raw mosaics' paths (raw_plan: layout.RawOutput list): raw_clean and raw_low of the last
    step, and raw_steps when progressive."""
    if raw_plan:
        last = raw_plan[-1].t
        row.update({raw.role: raw.rel for raw in raw_plan if raw.t == last})
        if "progressive" in row["params"]:
            row["raw_steps"] = [{"t": raw.t, "role": raw.role, "path": raw.rel} for raw in raw_plan]
    return row


def error_row(source, error):
    """The errors.jsonl row of a source that gave no pair."""
    return {"source": source, "error": error}
