"""Model checkpoints, aliases and retention: the refs log (aliases, the stored retention
policy) and pruning versions nothing protects (part of
:class:`efsray.store.checkpoints.CheckpointStore`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from efsray.errors import CommitConflictError, InvalidDataError, VersionNotFoundError
from efsray.store import jsonsafe
from efsray.store.checkpoint_load import CheckpointReads
from efsray.store.checkpoint_types import (
    _ALIAS_RESTORE_WAIT_S,
    DEFAULT_GRACE_S,
    PruneResult,
    RetentionPolicy,
    _Model,
)
from efsray.store.names import validate_name
from efsray.store.nfs import (
    committed_time,
    create_exclusive,
    list_dir,
    read_bytes,
    remove_file,
    remove_tree,
    tree_stats,
)

log = logging.getLogger("efsray.store")


class CheckpointRetention(CheckpointReads):
    """Aliases, retention policies and pruning (part of
    :class:`efsray.store.checkpoints.CheckpointStore`)."""

    # --- aliases and policy (the refs log) -----------------------------------------------

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
