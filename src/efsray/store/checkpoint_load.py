"""Model checkpoints, the read side of :class:`efsray.store.checkpoints.CheckpointStore`: the
store's state and per-model paths, resolving a version or alias, reading and verifying a
version's files (bytes, mapped, a directory, a Ray checkpoint), and listing models and
versions."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from efsray.errors import (
    CorruptionError,
    EfsrayError,
    InvalidDataError,
    NotFoundError,
    VersionNotFoundError,
)
from efsray.store import jsonsafe
from efsray.store.checkpoint_files import (
    CheckpointFile,
    check_relpath,
    copy_out,
    map_one,
    read_one,
    verify_tree,
)
from efsray.store.checkpoint_types import CheckpointInfo, RetentionPolicy, _Model
from efsray.store.hashing import DEFAULT_ALGORITHM, new_hasher
from efsray.store.layout import StoreLayout
from efsray.store.names import is_valid_name, validate_name
from efsray.store.nfs import ManifestCache, VersionLog, list_dir

R = TypeVar("R")
log = logging.getLogger("efsray.store")


class CheckpointReads:
    """Reading checkpoints; the base of :class:`efsray.store.checkpoints.CheckpointStore`,
    which documents the arguments."""

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

    def _refs(self, m: _Model) -> tuple[dict[str, int], RetentionPolicy | None, int]:
        found = m.refs.latest()
        if found is None:
            return {}, None, 0
        version, manifest = found
        aliases = {str(k): int(v) for k, v in (manifest.get("aliases") or {}).items()}
        policy = manifest.get("retention")
        return aliases, RetentionPolicy.from_json(policy) if policy else None, version


def _ray_checkpoint_class() -> Any:
    try:
        from ray.train import Checkpoint
    except ImportError as exc:
        raise EfsrayError(
            f"Ray Train is not installed ({exc}); `pip install 'efsray[ray]'` to hand "
            "checkpoints to Ray"
        ) from None
    return Checkpoint
