"""Model checkpoints: versioned, verified, safe with many savers on many hosts.

A model ``<model>`` is a directory ``models/checkpoints/<model>/`` holding:

- ``data/<shard>/<id>/``: one immutable directory per save, its files created under their
  final names (no reader reaches the directory before the manifest) and hashed while written
  (:mod:`efsray.store.checkpoint_files`). ``<id>`` is time-ordered (:mod:`efsray.store.ids`);
  ``<shard>`` is its first 5 characters (~9 hours),
  so no directory grows past a few thousand entries.
- a version log (``HEAD``, ``versions/``; see :class:`efsray.store.nfs.VersionLog`): version N
  is a manifest listing the files of one data directory with their sizes and digests, and the
  user's metadata. A save writes its files first and commits the manifest last, so a version
  exists only once all its files do; a saver killed at any instant leaves an unreferenced data
  directory that cleanup removes. Concurrent savers get distinct, gap-free versions.
- ``refs/``: a second version log whose manifests hold the model's aliases (``production`` ->
  7) and its retention policy. Moving an alias is a commit: two concurrent moves are ordered
  by the log, the later commit wins, and neither loses the other's change to another alias.

Loading verifies every byte against the manifest (CorruptionError names the file). Retention
(:meth:`CheckpointStore.prune`, and ``efsray cleanup``) never removes the latest version, an
aliased one, one kept by keep-last-N or keep-best-by-metric, or one that was the latest less
than a grace period ago (a reader may still be reading it).
"""

from __future__ import annotations

from efsray.store.checkpoint_load import CheckpointReads
from efsray.store.checkpoint_retention import CheckpointRetention
from efsray.store.checkpoint_save import CheckpointSaves
from efsray.store.checkpoint_types import (
    DEFAULT_GRACE_S,
    MAX_METADATA_BYTES,
    MIN_GRACE_S,
    CheckpointInfo,
    Kind,
    PruneResult,
    RetentionPolicy,
    require_safe_grace,
)
from efsray.store.nfs import lstat_or_none, remove_tree, tree_stats

# lstat_or_none, remove_tree and tree_stats moved to efsray.store.nfs; importable from here too.
__all__ = ["lstat_or_none", "remove_tree", "tree_stats"]

__all__ += ["CheckpointInfo", "CheckpointStore", "PruneResult", "RetentionPolicy"]
# The types, limits and the CLI's grace check live in efsray.store.checkpoint_types.
__all__ += ["DEFAULT_GRACE_S", "MAX_METADATA_BYTES", "MIN_GRACE_S", "Kind", "require_safe_grace"]


class CheckpointStore(CheckpointSaves, CheckpointRetention):
    """Checkpoints of every model under ``layout.checkpoints``.

    ``algorithm`` is the checksum for new saves (default "xxh3-128"; "blake3" and "sha256"
    for a cryptographic digest, see :mod:`efsray.store.hashing`);
    ``clock`` returns the current time in seconds (retention's notion of "now").
    """


# The parts: saving (checkpoint_save), aliases and retention (checkpoint_retention), and the
# store's state and reading (checkpoint_load), all with the same base.
__all__ += ["CheckpointReads", "CheckpointRetention", "CheckpointSaves"]
