"""What a conformance case runs against: a :class:`Site`, and the case registry.

A case is a plain module-level function ``case(site) -> None`` that asserts one store
behaviour through the public API. Being a plain importable function is what lets the same
case run in this process (local directory, simfs) or in another Python (a child process, a
QEMU guest with a kernel NFS client): the runner ships ``module:function`` and the site as
JSON (:mod:`tests.conformance.remote`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efsray.store import Store

__all__ = ["AREAS", "Case", "Site", "case", "cases_of"]


@dataclass(frozen=True, slots=True)
class Site:
    """One place a store lives, and what may be done there.

    ``root``: the store root on the filesystem under test (each case gets a fresh one).
    ``scratch``: a private local directory for inputs and outputs that are not the store
    (a directory to save as a checkpoint, a directory to load into).
    ``processes``: cases may start writer processes (multiprocessing) on this site.
    ``heavy``: cases may move tens of megabytes or commit hundreds of versions.
    ``kills``: how many writers a SIGKILL case kills (fewer where every operation is slow).
    ``peer``: the same store root as another client sees it (another mount of the same
    export, with its own attribute and lookup caches), or None; cases that need it are the
    ``two_clients`` ones.
    """

    name: str
    root: Path
    scratch: Path
    processes: bool = True
    heavy: bool = True
    kills: int = 200
    peer: Path | None = None

    def store(self, **options: Any) -> Store:
        """A fresh :class:`Store` on the site's root (a new reader: no cached state)."""
        return Store(self.root, **options)

    def peer_store(self, **options: Any) -> Store:
        """A fresh :class:`Store` on the same root through the other client."""
        if self.peer is None:
            raise RuntimeError(f"site {self.name!r} has no second client")
        return Store(self.peer, create=False, **options)

    def to_json(self) -> str:
        return json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        )

    @classmethod
    def from_json(cls, text: str) -> Site:
        data = json.loads(text)
        paths = {k: Path(data[k]) for k in ("root", "scratch", "peer") if data.get(k) is not None}
        return cls(**{**data, **paths})


@dataclass(frozen=True, slots=True)
class Case:
    """A registered case: its function and what it needs of a site."""

    func: Callable[[Site], None]
    area: str
    needs: frozenset[str]  # subset of {"processes", "heavy", "two_clients"}

    @property
    def name(self) -> str:
        return self.func.__name__

    @property
    def ref(self) -> str:
        """``module:function``, what a remote runner imports."""
        return f"{self.func.__module__}:{self.func.__name__}"

    def missing(self, site_caps: frozenset[str]) -> frozenset[str]:
        return self.needs - site_caps


AREAS = ("market", "checkpoints", "results", "retention", "seed", "concurrency", "clients")
_REGISTRY: dict[str, list[Case]] = {area: [] for area in AREAS}
_NEEDS = frozenset({"processes", "heavy", "two_clients"})


def case(area: str, *, needs: tuple[str, ...] = ()) -> Callable[[Callable[[Site], None]], Any]:
    """Register a case of ``area``; ``needs`` names the site capabilities it requires."""
    if area not in _REGISTRY:
        raise ValueError(f"unknown conformance area {area!r}; one of {AREAS}")
    unknown = set(needs) - _NEEDS
    if unknown:
        raise ValueError(f"unknown site capabilities {sorted(unknown)}; known: {sorted(_NEEDS)}")

    def register(func: Callable[[Site], None]) -> Callable[[Site], None]:
        _REGISTRY[area].append(Case(func, area, frozenset(needs)))
        return func

    return register


def cases_of(area: str) -> list[Case]:
    """Every case of ``area``, importing the case modules first."""
    import tests.conformance.cases  # noqa: F401  (registers every case)

    return list(_REGISTRY[area])
