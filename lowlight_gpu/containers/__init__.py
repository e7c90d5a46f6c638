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

from .naming import (  # noqa: F401 - the package's public names
    CONTAINERS, SHARDS, NO_SPLIT, LMDB_MISSING, PAYLOAD, LMDB_MAX_KEY, HASHED_KEY_MARK, sample_key,
    out_rel_of, lmdb_key, out_rel_of_row, image_tag, member_name, database_of, split_prefix, needs_writer,
    check_available, attach, as_bytes, public, image_refs, container_of, planned_refs,
)


def open_store(config, shard):
    """The main-process writer of a run of one shard (index, count)."""
    container = config.save.container
    if container == "files":
        return FilesStore()
    from . import lmdbs, tars

    if container == "lmdb" and shard[1] == 1:
        return lmdbs.LmdbStore(config.output)
    # A shard job of an LMDB run stages its samples in tar segments: one LMDB must have one writer, so
    # --merge puts them into the databases.  A webdataset run always stages: see tars.py.
    return tars.TarStaging(config.output, shard, config.save.shard_pairs,
                           with_json=container == "webdataset")


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

    def cleanup(self):
        """Nothing is staged."""

    def abandon(self):
        """Nothing to close."""


def assemble(config, part_paths):
    """After every shard is done, before the manifest is merged: build the final containers from the parts.

    Returns the container's entry for dataset.json.
    """
    container = config.save.container
    info = {"type": container}
    if container == "webdataset":
        from . import tars

        info.update(tars.assemble(config.output, part_paths, config.save.shard_pairs))
    elif container == "lmdb":
        from . import lmdbs

        check_available(container)
        info.update(lmdbs.assemble(config.output, part_paths))
    return info


def write_meta_info(config):
    """BasicSR's meta_info.txt for the merged manifest (files: one per split; lmdb: one per database)."""
    from . import metainfo

    return metainfo.write(config)
