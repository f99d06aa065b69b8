"""Model checkpoints, saving: a version's files written under their final names and hashed
while written, then its manifest committed (part of
:class:`efsray.store.checkpoints.CheckpointStore`)."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from efsray.errors import InvalidDataError, StorageError
from efsray.store import jsonsafe
from efsray.store.checkpoint_files import CheckpointFile, scan_source, write_bytes, write_tree
from efsray.store.checkpoint_load import CheckpointReads
from efsray.store.checkpoint_types import (
    _RECHECK_AFTER_S,
    _SHARD_CHARS,
    MAX_METADATA_BYTES,
    MIN_GRACE_S,
    CheckpointInfo,
    Kind,
)
from efsray.store.ids import new_id
from efsray.store.nfs import ensure_dir, fsync_dir, kind_of

log = logging.getLogger("efsray.store")


class CheckpointSaves(CheckpointReads):
    """Saving checkpoints (part of :class:`efsray.store.checkpoints.CheckpointStore`)."""

    # --- saving --------------------------------------------------------------------------

    def save(
        self,
        model: str,
        data: bytes | bytearray | memoryview,
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Save ``data`` (opaque bytes, never unpickled) as the next version of ``model``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidDataError(
                f"checkpoint data must be bytes, got {type(data).__name__}; serialize the "
                "model yourself (torch.save to a BytesIO, ...) or use save_directory"
            )
        return self._save(
            model, "bytes", lambda target: (write_bytes(target, data, self.algorithm), []), metadata
        )

    def save_directory(
        self, model: str, source: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
    ) -> CheckpointInfo:
        """Save every file under ``source`` (a Ray Train checkpoint directory, ...)."""
        source = Path(source)
        files, dirs = scan_source(source)

        def write(target: Path) -> tuple[list[CheckpointFile], list[str]]:
            return write_tree(target, files, dirs, self.algorithm), dirs

        return self._save(model, "directory", write, metadata)

    def _save(
        self, model: str, kind: Kind, write: Any, metadata: Mapping[str, Any] | None
    ) -> CheckpointInfo:
        m = self._model(model)
        meta = _encode_metadata(metadata)

        def write_data() -> tuple[str, list[CheckpointFile], list[str], float]:
            data_id = new_id()
            rel = f"{data_id[:_SHARD_CHARS]}/{data_id}"
            target = m.data / rel
            ensure_dir(target, fresh=True)
            files, dirs = write(target)
            fsync_dir(target.parent)  # the new directory's entry, before a manifest names it
            return rel, files, dirs, time.monotonic()

        written = [write_data()]

        def build(base_version: int, base: dict[str, Any] | None) -> dict[str, Any]:
            rel, files, dirs, when = written[-1]
            if time.monotonic() - when > _RECHECK_AFTER_S and not _all_present(m.data / rel, files):
                log.warning("files of an uncommitted save of %s vanished; writing again", model)
                written.append(write_data())
                rel, files, dirs, _ = written[-1]
            return {
                "format": 1,
                "kind": "checkpoint",
                "model": model,
                "type": kind,
                "data": rel,
                "files": [f.to_json() for f in files],
                "dirs": dirs,
                "bytes": sum(f.bytes for f in files),
                "metadata": meta,
            }

        def before_publish() -> None:
            # The last look before the version appears: a cleanup run with a grace period
            # shorter than this save took (``--force``) may have taken its files for a
            # crashed save's debris. Then nothing is committed.
            rel, files, _, _ = written[-1]
            if not _all_present(m.data / rel, files):
                raise StorageError(
                    errno.ENOENT,
                    f"the files of this save of {model} ({m.data / rel}) were removed before "
                    "its commit, by a cleanup or prune whose grace period was shorter than the "
                    "save took (--grace with --force); nothing was committed: save again, and "
                    f"keep --grace >= {MIN_GRACE_S:.0f} s while writers run",
                    str(m.data / rel),
                )

        committed = m.log.commit(build, before_publish=before_publish)
        assert committed is not None
        version, manifest = committed
        info = self._info(m, version, manifest)
        log.info("saved %s checkpoint %s v%d (%d bytes)", kind, model, version, info.bytes)
        return info

    def save_ray(
        self, model: str, checkpoint: Any, metadata: Mapping[str, Any] | None = None
    ) -> CheckpointInfo:
        """Save a ``ray.train.Checkpoint`` (or the path of a Ray checkpoint directory)."""
        if not hasattr(checkpoint, "as_directory"):  # a path (Checkpoint refuses __fspath__)
            if isinstance(checkpoint, str | os.PathLike):
                return self.save_directory(model, checkpoint, metadata)
            raise InvalidDataError(
                "expected a ray.train.Checkpoint or a directory path, got "
                f"{type(checkpoint).__name__}"
            )
        path = getattr(checkpoint, "path", None)
        filesystem = getattr(checkpoint, "filesystem", None)
        if type(filesystem).__name__ == "LocalFileSystem" and path and kind_of(path) == "dir":
            return self.save_directory(model, path, metadata)
        with checkpoint.as_directory() as local:  # downloads a remote checkpoint first
            return self.save_directory(model, local, metadata)


# --- helpers -----------------------------------------------------------------------------


def _encode_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidDataError(f"metadata must be a dict, got {type(metadata).__name__}")
    encoded: dict[str, Any] = jsonsafe.encode(metadata, "metadata")
    size = len(jsonsafe.dumps(encoded))
    if size > MAX_METADATA_BYTES:
        raise InvalidDataError(
            f"metadata is {size} bytes as JSON, more than {MAX_METADATA_BYTES}; store large "
            "data as checkpoint files (save_directory) instead"
        )
    return encoded


def _all_present(directory: Path, files: Sequence[CheckpointFile]) -> bool:
    return all(kind_of(directory / f.path) == "file" for f in files)
