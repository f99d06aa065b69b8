"""The conformance suite through FUSE on the simulated EFS (efsray.simfs).

Two backends, each with two mounts of one backing directory for the whole class (two
clients of one server; each test gets a fresh store directory). After every case both
mounts' counters must show that the store never opened a file with O_APPEND and never asked
for a renameat2 flag (both unsafe or refused on NFS):

- ``none``: no latency, no attribute cache (every lookup reaches the "server"): NFS-like
  rename/link/unlink semantics under every case, the multi-process and SIGKILL cases
  included (40 kills, ``EFSRAY_SIMFS_KILLS``).
- ``efs-gp`` with a 3 s attribute, entry and negative-lookup cache on each client (an EFS
  client's acregmin): every case that neither starts writer processes nor moves tens of
  megabytes, and the two-client cases (the second mount's caches go stale). Each operation
  sleeps an EFS round trip in a single Python server, so the heavy cases would cost minutes
  and the process cases measure the simulator's serialization, not the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from efsray.simfs import SimFSConfig, SimFSProcess
from tests.conformance.base import StoreConformance
from tests.conformance.site import Case, Site
from tests.fixtures.simfs import require_fuse

SIMFS_KILLS = int(os.environ.get("EFSRAY_SIMFS_KILLS", "40"))
EFS_ATTR_CACHE = 3.0  # seconds: acregmin of an EFS mount


def _mounts(factory: pytest.TempPathFactory, **config: object) -> Iterator[_Clients]:
    """Two mounts of one backing directory: two clients of one server, each with its own
    kernel caches (the second is the ``peer`` of the two-client cases)."""
    require_fuse()
    base = factory.mktemp("conformance-simfs")
    for d in ("mnt", "peer", "backing"):
        (base / d).mkdir()
    with (
        SimFSProcess.start(
            SimFSConfig(mountpoint=base / "mnt", backing=base / "backing", **config)  # type: ignore[arg-type]
        ) as mount,
        SimFSProcess.start(
            SimFSConfig(mountpoint=base / "peer", backing=base / "backing", **config)  # type: ignore[arg-type]
        ) as peer,
    ):
        yield _Clients(mount, peer)


@dataclass(frozen=True)
class _Clients:
    mount: SimFSProcess
    peer: SimFSProcess

    def __iter__(self) -> Iterator[SimFSProcess]:
        return iter((self.mount, self.peer))


class _OnSimfs(StoreConformance):
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        *StoreConformance.pytestmark,
        pytest.mark.fuse,
    ]
    kills: ClassVar[int] = SIMFS_KILLS

    @pytest.fixture
    def site(self, clients: _Clients, tmp_path: Path) -> Site:
        (tmp_path / "scratch").mkdir()
        config = clients.mount.config
        return Site(
            f"simfs {config.profile} (attribute cache {config.attr_timeout:g} s)",
            root=clients.mount.path / tmp_path.name / "store",
            scratch=tmp_path / "scratch",
            processes="processes" in self.capabilities,
            heavy="heavy" in self.capabilities,
            kills=self.kills,
            peer=clients.peer.path / tmp_path.name / "store",
        )

    @pytest.fixture(autouse=True)
    def _nfs_safe(self, clients: _Clients) -> Iterator[None]:
        for fs in clients:
            fs.control.reset()
        yield
        for fs in clients:
            counts = fs.control.counters()
            assert counts.open_append == 0, "the store opened a file with O_APPEND"
            assert counts.renames_rejected == 0, "the store asked for a renameat2 flag"

    def run_case(self, case: Case, site: Site) -> None:
        site.root.parent.mkdir()
        case.func(site)


class TestOnSimfs(_OnSimfs):
    @pytest.fixture(scope="class")
    def clients(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Clients]:
        yield from _mounts(tmp_path_factory, profile="none")


class TestOnSimfsEfsLatencyAndAttributeCache(_OnSimfs):
    capabilities: ClassVar[frozenset[str]] = frozenset({"two_clients"})

    @pytest.fixture(scope="class")
    def clients(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Clients]:
        yield from _mounts(tmp_path_factory, profile="efs-gp", attr_timeout=EFS_ATTR_CACHE)
