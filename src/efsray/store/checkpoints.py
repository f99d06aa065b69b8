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

import contextlib
import datetime as dt
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from efsray.errors import (
    CommitConflictError,
    CorruptionError,
    EfsrayError,
    InvalidDataError,
    NotFoundError,
    StorageError,
    VersionNotFoundError,
)
from efsray.store import jsonsafe
from efsray.store.checkpoint_files import (
    BYTES_NAME,
    CheckpointFile,
    check_relpath,
    copy_out,
    map_one,
    read_one,
    scan_source,
    verify_tree,
    write_bytes,
    write_tree,
)
from efsray.store.hashing import DEFAULT_ALGORITHM, new_hasher
from efsray.store.ids import new_id
from efsray.store.layout import StoreLayout
from efsray.store.names import is_valid_name, validate_name
from efsray.store.nfs import (
    ManifestCache,
    VersionLog,
    committed_time,
    create_exclusive,
    ensure_dir,
    fsync_dir,
    kind_of,
    list_dir,
    lstat_or_none,
    read_bytes,
    remove_file,
    remove_tree,
    tree_stats,
)

# lstat_or_none, remove_tree and tree_stats moved to efsray.store.nfs; importable from here too.
__all__ = ["lstat_or_none", "remove_tree", "tree_stats"]

__all__ += ["CheckpointInfo", "CheckpointStore", "PruneResult", "RetentionPolicy"]

R = TypeVar("R")
log = logging.getLogger("efsray.store")

MAX_METADATA_BYTES = 1 << 20
DEFAULT_GRACE_S = 3600.0
# The shortest grace period the CLI accepts without --force: far longer than a commit takes
# (a writer re-checks files it wrote more than _RECHECK_AFTER_S ago) and than a full read of
# a superseded version. Shorter ones can remove a writer's files between its write and its
# commit; the commit then fails cleanly, or (in the last instant) commits a version that
# names a missing file, which readers report as a CorruptionError.
MIN_GRACE_S = 600.0


def require_safe_grace(grace: float, *, force: bool, dry_run: bool = False) -> None:
    """Refuse a grace period below MIN_GRACE_S unless ``force`` (or ``dry_run``: nothing is
    removed), as Delta's VACUUM refuses a retention below 168 hours. For the CLI, where a
    person types ``--grace 0``; the library takes the grace it is given."""
    if grace < MIN_GRACE_S and not force and not dry_run:
        raise InvalidDataError(
            f"--grace {grace:g} is below the safe minimum of {MIN_GRACE_S:.0f} s: a writer "
            "or reader still working on what it would remove would fail, or commit a "
            "version that names removed files. Use --grace >= "
            f"{MIN_GRACE_S:.0f}, or add --force if no writer or reader is running"
        )


# Files written but not committed for this long are checked again before the commit, in
# case cleanup (whose grace period is far longer) took them for a crashed saver's debris.
_RECHECK_AFTER_S = 60.0
_ALIAS_RESTORE_WAIT_S = 2.0
_SHARD_CHARS = 5

Kind = Literal["bytes", "directory"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What retention keeps of a model, besides its latest and aliased versions.

    ``keep_last``: the newest N versions. ``keep_best``: the best M versions by the numeric
    metadata value ``metric`` (``mode`` "min" or "max"); versions without it never count.
    """

    keep_last: int = 5
    keep_best: int = 0
    metric: str | None = None
    mode: Literal["min", "max"] = "max"

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_best"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidDataError(f"{name} must be an integer >= 0, got {value!r}")
        if self.keep_last < 1:
            raise InvalidDataError("keep_last must be >= 1: the latest version is always kept")
        if self.mode not in ("min", "max"):
            raise InvalidDataError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.keep_best and not self.metric:
            raise InvalidDataError("keep_best needs metric: the metadata key to rank versions by")

    def to_json(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "keep_best": self.keep_best,
                "metric": self.metric, "mode": self.mode}  # fmt: skip

    @classmethod
    def from_json(cls, value: Any) -> RetentionPolicy:
        if not isinstance(value, dict):
            return cls()
        return cls(
            keep_last=int(value.get("keep_last", 5)),
            keep_best=int(value.get("keep_best", 0)),
            metric=value.get("metric"),
            mode=value.get("mode", "max"),
        )


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One committed checkpoint version."""

    model: str
    version: int
    kind: Kind
    files: tuple[CheckpointFile, ...]
    bytes: int
    metadata: dict[str, Any]
    committed_at: str
    directory: str
    writer: str
    dirs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The stored file of a bytes checkpoint, else the checkpoint's directory."""
        return os.path.join(self.directory, BYTES_NAME) if self.kind == "bytes" else self.directory


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What retention removed (or, with dry_run, would remove) from one model."""

    model: str
    removed: tuple[int, ...]
    kept: tuple[int, ...]
    files: int
    bytes: int
    orphans: int
    dry_run: bool
    reasons: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    directory: Path
    log: VersionLog
    refs: VersionLog

    @property
    def data(self) -> Path:
        return self.directory / "data"


class CheckpointStore:
    """Checkpoints of every model under ``layout.checkpoints``.

    ``algorithm`` is the checksum for new saves (default "xxh3-128"; "blake3" and "sha256"
    for a cryptographic digest, see :mod:`efsray.store.hashing`);
    ``clock`` returns the current time in seconds (retention's notion of "now").
    """

    def __init__(
        self,
        layout: StoreLayout,
        *,
        algorithm: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.layout = layout
        self.algorithm = algorithm or DEFAULT_ALGORITHM
        new_hasher(self.algorithm)  # unknown or missing algorithm: fail now, not mid-save
        self._clock = clock
        self._manifests = ManifestCache(256)  # committed manifests never change

    # --- paths ---------------------------------------------------------------------------

    def _model(self, model: str) -> _Model:
        validate_name("model id", model)
        directory = self.layout.checkpoints / model
        return _Model(
            model,
            directory,
            VersionLog(directory, f"checkpoints of model {model}", self._manifests),
            VersionLog(directory / "refs", f"aliases of model {model}", self._manifests),
        )

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

    # --- resolving and reading -----------------------------------------------------------

    def _resolve(
        self, m: _Model, version: int | None, alias: str | None
    ) -> tuple[int, dict[str, Any]]:
        if alias is not None:
            if version is not None:
                raise InvalidDataError("give a version or an alias, not both")
            aliases = self._refs(m)[0]
            validate_name("alias", alias)
            if alias not in aliases:
                raise NotFoundError(
                    f"model {m.name} has no alias {alias!r}; it has "
                    f"{', '.join(sorted(aliases)) or 'none'} (`efsray checkpoints alias`)"
                )
            version = aliases[alias]
        if version is None:
            found = m.log.latest()
            if found is None:
                raise NotFoundError(
                    f"model {m.name} has no checkpoints in {self.layout.root}; "
                    "`efsray checkpoints ls` lists the models"
                )
            return found
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidDataError(f"version must be a positive integer, got {version!r}")
        return version, m.log.read(version)

    def _info(
        self, m: _Model, version: int, manifest: dict[str, Any], aliases: tuple[str, ...] = ()
    ) -> CheckpointInfo:
        where = f"manifest of {m.name} v{version}"
        try:
            kind = manifest["type"]
            rel = str(manifest["data"])
            entries = manifest["files"]
            dirs = manifest.get("dirs", [])
        except (KeyError, TypeError):
            raise CorruptionError(f"{where} ({m.log.path(version)}) is incomplete") from None
        if kind not in ("bytes", "directory") or not isinstance(entries, list):
            raise CorruptionError(f"{where} ({m.log.path(version)}) is malformed")
        check_relpath(rel, where)
        for d in dirs:
            check_relpath(str(d), where)
        files = tuple(CheckpointFile.from_json(e, where) for e in entries)
        writer = manifest.get("writer") or {}
        return CheckpointInfo(
            model=m.name,
            version=version,
            kind=kind,
            files=files,
            bytes=sum(f.bytes for f in files),
            metadata=jsonsafe.decode(manifest.get("metadata") or {}),
            committed_at=str(manifest.get("committed_at")),
            directory=str(m.data / rel),
            writer=f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
            dirs=tuple(str(d) for d in dirs),
            aliases=aliases,
        )

    def _with_retry(self, model: str, version: int | None, alias: str | None, run: Any) -> Any:
        # The files of the version we resolved can vanish only when the model moved on and
        # retention ran past its grace period meanwhile: resolve again and retry.
        m = self._model(model)
        for attempt in range(3):
            got, manifest = self._resolve(m, version, alias)
            info = self._info(m, got, manifest)
            try:
                return run(info)
            except FileNotFoundError as exc:
                missing = Path(exc.filename or "?").name
                if version is None and alias is None and attempt == 2:
                    raise CorruptionError(
                        f"the latest version {got} of model {model} names file {missing} "
                        f"({info.directory}), which is missing: removed by a cleanup or prune "
                        "whose grace period was shorter than a save took (--force), or by "
                        f"hand. Load an older version (`efsray checkpoints ls {model}`) or "
                        "save the model again; restore the file from a backup to keep it"
                    ) from None
                if version is not None or alias is not None or attempt == 2:
                    raise VersionNotFoundError(
                        f"version {got} of model {model} is no longer complete: its file "
                        f"{missing} was removed by retention; load another version "
                        "(`efsray checkpoints ls`)"
                    ) from None
                log.info("checkpoint files of %s v%d vanished while reading; retrying", model, got)
        raise AssertionError("unreachable")

    def info(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> CheckpointInfo:
        """The manifest of a version (latest by default), without reading the files."""
        m = self._model(model)
        got, manifest = self._resolve(m, version, alias)
        aliases = self._refs(m)[0]
        return self._info(
            m, got, manifest, tuple(sorted(a for a, v in aliases.items() if v == got))
        )

    def load_bytes(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> tuple[bytes, CheckpointInfo]:
        """The verified bytes of a bytes checkpoint, and its info."""
        return self._bytes_file(model, version, alias, read_one)

    def map_bytes(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> tuple[memoryview, CheckpointInfo]:
        """A bytes checkpoint as a read-only view of the stored file, verified, zero-copy.

        The file is mapped from the page cache and every byte hashed in place before the
        view is returned: no copy and no fresh memory, so a 1 GiB load costs what reading the
        disk costs (``load_bytes`` must also fill 1 GiB of new memory). For consumers that
        take a buffer: ``numpy.frombuffer``, ``torch.frombuffer``, ``safetensors``' load,
        ``io.BytesIO`` (which copies). The view stays valid while the version's file exists;
        retention keeps a version for its grace period after it stops being the latest. On
        NFS a page read after another host removed the file fails the process (SIGBUS), so a
        view kept for longer than the grace period should be copied: ``bytes(view)``.
        """
        return self._bytes_file(model, version, alias, map_one)

    def _bytes_file(
        self,
        model: str,
        version: int | None,
        alias: str | None,
        reader: Callable[[Path, CheckpointFile, str], R],
    ) -> tuple[R, CheckpointInfo]:
        """``reader`` (read_one or map_one) applied to a bytes checkpoint's one file."""

        def run(info: CheckpointInfo) -> tuple[R, CheckpointInfo]:
            if info.kind != "bytes":
                raise InvalidDataError(
                    f"model {model} v{info.version} is a directory checkpoint "
                    f"({len(info.files)} files); use load_directory or path"
                )
            what = f"checkpoint {model} v{info.version}"
            return reader(Path(info.directory), info.files[0], what), info

        result: tuple[R, CheckpointInfo] = self._with_retry(model, version, alias, run)
        return result

    def load_directory(
        self,
        model: str,
        dest: str | os.PathLike[str],
        version: int | None = None,
        *,
        alias: str | None = None,
    ) -> CheckpointInfo:
        """Copy a version's files into ``dest`` (new or empty), verifying every byte.

        ``dest`` appears complete or not at all. A bytes checkpoint becomes
        ``dest/checkpoint.bin``.
        """
        dest = Path(dest)

        def run(info: CheckpointInfo) -> CheckpointInfo:
            copy_out(Path(info.directory), info.files, info.dirs, dest,
                     f"checkpoint {model} v{info.version}")  # fmt: skip
            return info

        result: CheckpointInfo = self._with_retry(model, version, alias, run)
        return result

    def verify(
        self, model: str, version: int | None = None, *, alias: str | None = None
    ) -> CheckpointInfo:
        """Read every file of a version and check it; CorruptionError names a damaged file."""

        def run(info: CheckpointInfo) -> CheckpointInfo:
            verify_tree(Path(info.directory), info.files, f"checkpoint {model} v{info.version}")
            return info

        result: CheckpointInfo = self._with_retry(model, version, alias, run)
        return result

    def path(
        self,
        model: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        verify: bool = True,
    ) -> Path:
        """The version's directory inside the store (read-only files), verified by default.

        Zero-copy for readers on the shared volume (a Ray Train restore on every node). The
        directory stays as long as retention protects the version (latest, aliased, kept,
        or superseded less than the grace period ago); pin it with an alias for long reads.
        """
        info = (
            self.verify(model, version, alias=alias)
            if verify
            else self.info(model, version, alias=alias)
        )
        return Path(info.directory)

    def to_ray(
        self,
        model: str,
        version: int | None = None,
        *,
        alias: str | None = None,
        copy_to: str | os.PathLike[str] | None = None,
        verify: bool = True,
    ) -> Any:
        """A ``ray.train.Checkpoint`` of a version: the verified store directory itself, or a
        verified copy in ``copy_to``. Needs Ray (``pip install 'efsray[ray]'``)."""
        checkpoint_cls = _ray_checkpoint_class()
        if copy_to is not None:
            self.load_directory(model, copy_to, version, alias=alias)
            return checkpoint_cls.from_directory(os.fspath(copy_to))
        return checkpoint_cls.from_directory(
            str(self.path(model, version, alias=alias, verify=verify))
        )

    # --- listing -------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Every model with checkpoints (a listing: may lag other hosts by ~a minute)."""
        out = []
        for name in list_dir(self.layout.checkpoints):
            if is_valid_name(name) and VersionLog(self.layout.checkpoints / name, "").has_history():
                out.append(name)
        return sorted(out)

    def list(self, model: str) -> list[CheckpointInfo]:
        """Every version of ``model`` retention has kept, oldest first, with its aliases."""
        m = self._model(model)
        _, versions = m.log.known_versions()
        manifests = m.log.read_present(versions)
        aliases = self._refs(m)[0]
        by_version: dict[int, list[str]] = {}
        for name, v in aliases.items():
            by_version.setdefault(v, []).append(name)
        return [
            self._info(m, v, man, tuple(sorted(by_version.get(v, ()))))
            for v, man in sorted(manifests.items())
        ]

    def latest_version(self, model: str) -> int | None:
        found = self._model(model).log.latest()
        return found[0] if found else None

    # --- aliases and policy (the refs log) -----------------------------------------------

    def _refs(self, m: _Model) -> tuple[dict[str, int], RetentionPolicy | None, int]:
        found = m.refs.latest()
        if found is None:
            return {}, None, 0
        version, manifest = found
        aliases = {str(k): int(v) for k, v in (manifest.get("aliases") or {}).items()}
        policy = manifest.get("retention")
        return aliases, RetentionPolicy.from_json(policy) if policy else None, version

    def aliases(self, model: str) -> dict[str, int]:
        """alias -> version for ``model``."""
        return self._refs(self._model(model))[0]

    def set_alias(
        self, model: str, alias: str, version: int, *, expect: int | Literal["any"] | None = "any"
    ) -> int | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before.

        ``expect`` makes the move conditional (compare-and-set): it happens only if the
        alias points at ``expect`` (None: the alias must not exist), else CommitConflictError.
        Of two concurrent unconditional moves, the one committed last wins.
        """
        m = self._model(model)
        validate_name("alias", alias)
        m.log.read(version)  # VersionNotFoundError if it does not exist (any more)
        previous = self._move_alias(m, alias, version, expect)
        if not self._manifest_present(m, version):
            # Retention removes a manifest first and then re-reads the aliases: if it saw our
            # move, it puts the manifest back at once. If it does not come back, it did not.
            deadline = time.monotonic() + _ALIAS_RESTORE_WAIT_S
            while time.monotonic() < deadline and not self._manifest_present(m, version):
                time.sleep(0.05)
            if not self._manifest_present(m, version):
                try:
                    self._move_alias(m, alias, previous, version)
                except CommitConflictError:
                    log.warning("alias %s of %s moved again meanwhile; left as is", alias, model)
                raise VersionNotFoundError(
                    f"version {version} of model {model} was removed by retention while "
                    f"alias {alias!r} was being set; the alias was left at {previous}"
                )
        return previous

    def remove_alias(self, model: str, alias: str) -> int | None:
        """Delete ``alias``; returns the version it pointed at (None if it did not exist)."""
        m = self._model(model)
        validate_name("alias", alias)
        return self._move_alias(m, alias, None, "any")

    def _manifest_present(self, m: _Model, version: int) -> bool:
        try:
            m.log.read(version)
        except VersionNotFoundError:
            return False
        return True

    def _move_alias(
        self, m: _Model, alias: str, version: int | None, expect: int | str | None
    ) -> int | None:
        before: list[int | None] = []

        def build(base_version: int, base: dict[str, Any] | None) -> dict[str, Any] | None:
            aliases = dict((base or {}).get("aliases") or {})
            current = aliases.get(alias)
            if expect != "any" and current != expect:
                raise CommitConflictError(
                    f"alias {alias!r} of model {m.name} points at {current}, not {expect}: "
                    "someone moved it meanwhile; look again and retry"
                )
            before[:] = [current]
            if current == version:
                return None
            if version is None:
                aliases.pop(alias, None)
            else:
                aliases[alias] = version
            return {
                "format": 1,
                "kind": "checkpoint-refs",
                "model": m.name,
                "aliases": aliases,
                "retention": (base or {}).get("retention"),
                "operation": f"alias {alias} -> {version}",
            }

        m.refs.commit(build)
        return before[0] if before else None

    def retention(self, model: str) -> RetentionPolicy:
        """The model's stored retention policy (the default one if none was set)."""
        return self._refs(self._model(model))[1] or RetentionPolicy()

    def set_retention(self, model: str, policy: RetentionPolicy) -> None:
        """Store ``policy`` for ``model``; ``efsray cleanup`` applies it."""
        m = self._model(model)
        if not isinstance(policy, RetentionPolicy):
            raise InvalidDataError(f"policy must be a RetentionPolicy, got {type(policy).__name__}")

        def build(base_version: int, base: dict[str, Any] | None) -> dict[str, Any] | None:
            if base and base.get("retention") == policy.to_json():
                return None
            return {
                "format": 1,
                "kind": "checkpoint-refs",
                "model": m.name,
                "aliases": dict((base or {}).get("aliases") or {}),
                "retention": policy.to_json(),
                "operation": "retention",
            }

        m.refs.commit(build)

    # --- retention -----------------------------------------------------------------------

    def prune(
        self,
        model: str,
        *,
        policy: RetentionPolicy | None = None,
        older_than: dt.datetime | None = None,
        grace: float = DEFAULT_GRACE_S,
        dry_run: bool = False,
        now: float | None = None,
    ) -> PruneResult:
        """Remove versions that nothing protects, and the debris of crashed saves.

        Kept: the latest version; aliased versions (and versions an alias pointed at less
        than ``grace`` seconds ago); ``policy`` (default: the stored one) keep-last-N and
        keep-best-M; versions committed or superseded less than ``grace`` seconds ago; with
        ``older_than``, versions committed at or after it. Data directories no manifest
        references (crashed or raced saves) go once they are ``grace`` seconds old.
        """
        m = self._model(model)
        now = self._clock() if now is None else now
        grace_cutoff = now - max(0.0, grace)
        aliases, stored, _ = self._refs(m)
        policy = policy or stored or RetentionPolicy()
        latest, versions = m.log.known_versions()
        manifests = m.log.read_present(versions)
        present = sorted(manifests)
        reasons: dict[int, str] = {}

        def keep(v: int, why: str) -> None:
            reasons.setdefault(v, why)

        if latest:
            keep(latest, "latest")
        for name, v in aliases.items():
            keep(v, f"alias {name}")
        for v in self._recent_alias_targets(m, grace_cutoff):
            keep(v, "alias moved within the grace period")
        for v in present[-policy.keep_last :]:
            keep(v, f"keep-last-{policy.keep_last}")
        if policy.keep_best and policy.metric:
            for v in _best(manifests, policy):
                keep(v, f"keep-best-{policy.keep_best} by {policy.metric}")
        for i, v in enumerate(present):
            committed = committed_time(manifests[v])
            successor = committed_time(manifests[present[i + 1]]) if i + 1 < len(present) else now
            if (
                committed is None
                or committed >= grace_cutoff
                or successor is None
                or successor >= grace_cutoff
            ):
                keep(v, "within the grace period")
            elif older_than is not None and committed >= older_than.timestamp():
                keep(v, "newer than the cutoff")
        doomed = [v for v in present if v not in reasons]
        files = nbytes = 0
        removed = []
        for v in doomed:
            manifest = manifests[v]
            if dry_run or self._remove_version(m, v, manifest):
                removed.append(v)
                files += 1 + len(manifest.get("files", []))
                nbytes += int(manifest.get("bytes", 0))
        # Every manifest we read (removed ones too: in a dry run their data is still there and
        # is counted above, and a restored one keeps its data).
        referenced = {str(man.get("data")) for man in manifests.values()}
        orphans, orphan_files, orphan_bytes = self._remove_orphans(
            m, referenced, grace_cutoff, dry_run
        )
        return PruneResult(
            model=model,
            removed=tuple(removed),
            kept=tuple(v for v in present if v not in removed),
            files=files + orphan_files,
            bytes=nbytes + orphan_bytes,
            orphans=orphans,
            dry_run=dry_run,
            reasons={v: r for v, r in reasons.items() if v in manifests},
        )

    def _recent_alias_targets(self, m: _Model, cutoff: float) -> set[int]:
        """Versions named by alias commits made after ``cutoff`` (a reader may use them)."""
        found = m.refs.latest()
        out: set[int] = set()
        if found is None:
            return out
        version, manifest = found
        while True:
            out.update(int(v) for v in (manifest.get("aliases") or {}).values())
            when = committed_time(manifest)
            if (when is not None and when < cutoff) or version <= 1:
                return out
            version -= 1
            try:
                manifest = m.refs.read(version)
            except VersionNotFoundError:
                return out

    def _remove_version(self, m: _Model, version: int, manifest: dict[str, Any]) -> bool:
        """Unpublish then delete one version. False if an alias claimed it meanwhile."""
        path = m.log.path(version)
        try:
            raw = read_bytes(path)
        except FileNotFoundError:
            return False  # another cleanup got there first
        if not remove_file(path):
            return False
        m.log.forget(version)
        # An alias set between our reading the aliases and the unlink must win: look again.
        if version in self._refs(m)[0].values():
            with contextlib.suppress(FileExistsError):
                create_exclusive(path, raw)
            log.info("kept %s v%d: an alias was set on it during cleanup", m.name, version)
            return False
        data = m.data / str(manifest.get("data"))
        remove_tree(data, [str(f["path"]) for f in manifest.get("files", [])])
        return True

    def _remove_orphans(
        self, m: _Model, referenced: set[str], cutoff: float, dry_run: bool
    ) -> tuple[int, int, int]:
        count = files = nbytes = 0
        for rel, path in _data_dirs(m.data):
            if rel in referenced:
                continue
            newest, n, size = tree_stats(path)
            if newest is None or newest >= cutoff:
                continue  # a save in progress, or too recent to tell
            count += 1
            files += n
            nbytes += size
            if not dry_run:
                remove_tree(path, None)
                log.info("removed unreferenced checkpoint data %s", path)
        return count, files, nbytes


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


def _best(manifests: dict[int, dict[str, Any]], policy: RetentionPolicy) -> list[int]:
    scored = []
    for v, man in manifests.items():
        value = jsonsafe.decode((man.get("metadata") or {}).get(policy.metric))
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            scored.append((value if policy.mode == "min" else -value, -v, v))
    return [v for _, _, v in sorted(scored)[: policy.keep_best]]


def _data_dirs(data: Path) -> Iterator[tuple[str, Path]]:
    for shard in list_dir(data):
        for name in list_dir(data / shard):
            yield f"{shard}/{name}", data / shard / name


def _ray_checkpoint_class() -> Any:
    try:
        from ray.train import Checkpoint
    except ImportError as exc:
        raise EfsrayError(
            f"Ray Train is not installed ({exc}); `pip install 'efsray[ray]'` to hand "
            "checkpoints to Ray"
        ) from None
    return Checkpoint
