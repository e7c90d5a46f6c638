"""Output containers (save.container): loose files, WebDataset tar shards, BasicSR LMDBs.

Workers encode a pair's images; where the bytes go depends on the container:

* ``files``: each worker writes its own PNGs (pipeline.write_pngs), in parallel, as always.
* ``webdataset`` and ``lmdb``: the worker returns the encoded bytes (pipeline.encode_pngs) with its row
  (plain, picklable data), and one writer in the main process (a Store, below) stores them in manifest
  order, so the result does not depend on the workers.

Names.  A pair's **key** is its output name without ``.png`` with every character outside
``[A-Za-z0-9_/-]`` written as ``%XX`` (UTF-8 bytes): no dots (WebDataset splits a member name at its first
dot, BasicSR a meta_info line at its first dot), ASCII only (BasicSR encodes LMDB keys as ASCII), stable and
collision-free (the escaping is reversible and output names are already distinct).  An LMDB key holds at
most 511 bytes (LMDB's limit): a longer one becomes its first bytes, ``~`` and 32 hex digits of the SHA-256 of
the whole key (lmdb_key), and its row then records ``name``, the output name (out_rel_of_row).  ``~`` never
appears in an escaped key, so such a key names one source only, and every key of 511 bytes or fewer stays
as it was.  Each image has a
**tag**: ``high``, ``low``, ``low_clean``, ``tNN`` (progressive step NN), ``low_clean_tNN``; an extra payload
(save.raw's mosaics) brings its own tag, e.g. ``raw_low``.

* webdataset: member ``KEY.TAG.EXT`` of ``shards/{split}-NNNNNN.tar`` (split ``data`` without a split);
  the row names ``shard`` and ``key``, and its image fields (``high``, ``low``, ``steps[].path``, ...) hold
  member names.
* lmdb: key ``KEY`` of the database ``FOLDER.lmdb``, where FOLDER is the image's folder in the files
  layout (``high.lmdb``, ``low.lmdb``, ``low/t01.lmdb``, ``train/high.lmdb``, ``train_lowlight.lmdb``); the
  row names ``key``, and its image fields hold database names.

Resume state.  A stored row's private ``_state`` has ``members`` (``[[member, size, crc32, database or
null], ...]`` in write order) and ``at``: ``[file, offset]`` of the sample in a tar (a job's staging
segment or a final shard), or null for bytes already in the final LMDBs.
"""

import os

from .naming import (  # noqa: F401 - the package's public names
    CONTAINERS, SHARDS, NO_SPLIT, LMDB_MISSING, PAYLOAD, LMDB_MAX_KEY, HASHED_KEY_MARK, sample_key,
    out_rel_of, lmdb_key, out_rel_of_row, image_tag, member_name, database_of, split_prefix, needs_writer,
    check_available, attach, as_bytes, public, image_refs, container_of, planned_refs,
)


def open_store(config, shard, engine=None, workers=1):
    """The main-process writer of a run of one shard (index, count); engine: the run's Dask engine, or None."""
    container = config.save.container
    if container == "files":
        return FilesStore()
    from . import lmdbs, tars

    if container == "lmdb" and shard[1] == 1:
        return lmdbs.LmdbStore(config.output)
    # A shard job of an LMDB run stages its samples in tar segments: one LMDB must have one writer, so
    # --merge puts them into the databases.  A webdataset run always stages: see tars.py.
    remote = None
    if container == "webdataset" and _cluster(engine):
        # The cluster's workers staged the samples: each final tar is built by a task there too.
        def remote(calls):
            return engine.run(calls, workers)
    return tars.TarStaging(config.output, shard, config.save.shard_pairs,
                           with_json=container == "webdataset", job_tars=job_tars(config, shard), remote=remote)


def _cluster(engine):
    """Whether engine is a Dask engine on a scheduler given by address, whose workers may be other machines.

    A LocalCluster started for the run (no address) works on this machine: its workers send the bytes here,
    and the tars are made here, exactly as without Dask (staging tars linked, not copied).
    """
    return engine is not None and getattr(engine, "address", None) is not None


def worker_staging(config, shard, engine):
    """What a Dask worker needs to stage a webdataset sample itself (stage_on_worker): (job tag, run id), or None
    when the bytes go back to the run's writer (no cluster of its own, or another container)."""
    if not _cluster(engine) or config.save.container != "webdataset":
        return None
    import uuid

    from .. import manifest

    return (manifest.shard_tag(*shard), uuid.uuid4().hex)


def stage_on_worker(config, stage, row):
    """On a Dask worker: write a new row's sample into the worker's own staging tar; returns the row (no bytes)."""
    from . import tars

    tag, run_id = stage
    return tars.stage_on_worker(config.output, tag, run_id, row)


class FilesStore:
    """The files container: workers wrote the files; rows pass straight to the journal."""

    def check(self, row, from_journal):
        """Files are checked by manifest.row_is_intact on the worker."""
        return True

    def put(self, row, reused=False):
        """Rows ready for the journal: this one."""
        return [row]

    def finish(self):
        """Nothing is pending."""
        return []

    def salvage(self):
        """After an interrupt: nothing is pending."""
        return []

    def publish(self, part_path):
        """The files are final where the workers wrote them."""

    def cleanup(self):
        """Nothing is staged."""

    def abandon(self):
        """Nothing to close."""


def boundaries_record(config):
    """{"tar_boundaries": ...} that run.json and the done-markers record for a webdataset run; {} otherwise."""
    return {"tar_boundaries": config.save.tar_boundaries} if config.save.container == "webdataset" else {}


def boundaries_refusal(recorded, config, where):
    """Why config must not add to an output whose record (run.json, a done-marker) says other tar boundaries.

    One line naming both values, or None.  A record without the key (from before it existed) made
    global-style staging segments, which a job run's merge refuses on its own (tars.describe_jobs).
    """
    was, now = (recorded or {}).get("tar_boundaries"), boundaries_record(config).get("tar_boundaries")
    if was is None or now is None or was == now:
        return None
    return (f"save.tar_boundaries: {where} was written with tar_boundaries {was}, this config has {now}; "
            f"set save.tar_boundaries: {was} as the other jobs had it, or choose a new output folder")


def job_tars(config, shard):
    """Whether shard (index, count) of config assembles its own final tars (a webdataset job of N > 1 jobs)."""
    return config.save.container == "webdataset" and config.save.tar_boundaries == "job" and shard[1] > 1


def assemble(config, part_paths, remote=None, stored=None):
    """After every shard is done, before the manifest is merged: build the final containers from the parts.

    Returns the container's entry for dataset.json.  remote: build the tars on the Dask cluster (open_store).
    stored: the set of tar names on object storage (the jobs' tars are there, not in the work folder).
    """
    container = config.save.container
    info = {"type": container}
    if container == "webdataset":
        from . import tars

        count = len(part_paths)
        if count > 1:  # a whole run's tars are the same under both values: nothing to compare
            _check_boundaries(config, part_paths)
        if job_tars(config, (0, count)):  # each job built its own tars: describe them, copy nothing
            info.update(tars.describe_jobs(config.output, part_paths, config.save.shard_pairs, stored))
        else:
            info.update(tars.merge_assemble(config.output, part_paths, config.save.shard_pairs, remote))
    elif container == "lmdb":
        from . import lmdbs

        check_available(container)
        info.update(lmdbs.assemble(config.output, part_paths))
    return info


def _check_boundaries(config, part_paths):
    """ConfigError (before anything is assembled) when a job's done-marker records other tar boundaries."""
    import json

    from ..errors import ConfigError

    for part in part_paths:
        done = part[: -len(".jsonl")] + ".done"
        try:
            with open(done, encoding="utf-8") as f:
                marker = json.loads(f.read())
        except (OSError, ValueError):
            continue  # merging.merge has read every done-marker already; it says what is wrong with one
        refused = boundaries_refusal(marker if isinstance(marker, dict) else {}, config,
                                     f"parts/{os.path.basename(done)}")
        if refused:
            raise ConfigError(refused.replace("this config has", "this merge has"))


def write_meta_info(config):
    """BasicSR's meta_info.txt for the merged manifest (files: one per split; lmdb: one per database)."""
    from . import metainfo

    return metainfo.write(config)
