"""The conformance suite through FUSE on the simulated EFS (efsray.simfs).

Two backends, one mount each for the whole class (each test gets a fresh store directory on
it), and after every case the mount's counters must show that the store never opened a file
with O_APPEND and never asked for a renameat2 flag (both unsafe or refused on NFS):

- ``none``: no latency, no attribute cache (every lookup reaches the "server"): NFS-like
  rename/link/unlink semantics under every case, the multi-process and SIGKILL cases
  included (40 kills, ``EFSRAY_SIMFS_KILLS``).
- ``efs-gp`` with a 3 s attribute, entry and negative-lookup cache (an EFS client's acregmin):
  every case that neither starts writer processes nor moves tens of megabytes. Each operation
  sleeps an EFS round trip in a single Python server, so the heavy cases would cost minutes
  and the process cases measure the simulator's serialization, not the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from efsray.simfs import SimFSConfig, SimFSProcess
from tests.conformance.base import StoreConformance
from tests.conformance.site import Case, Site
from tests.fixtures.simfs import require_fuse

SIMFS_KILLS = int(os.environ.get("EFSRAY_SIMFS_KILLS", "40"))
EFS_ATTR_CACHE = 3.0  # seconds: acregmin of an EFS mount


def _mount(factory: pytest.TempPathFactory, **config: object) -> Iterator[SimFSProcess]:
    require_fuse()
    base = factory.mktemp("conformance-simfs")
    (base / "mnt").mkdir()
    (base / "backing").mkdir()
    with SimFSProcess.start(
        SimFSConfig(mountpoint=base / "mnt", backing=base / "backing", **config)  # type: ignore[arg-type]
    ) as handle:
        yield handle


class _OnSimfs(StoreConformance):
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        *StoreConformance.pytestmark,
        pytest.mark.fuse,
    ]
    kills: ClassVar[int] = SIMFS_KILLS

    @pytest.fixture
    def site(self, mount: SimFSProcess, tmp_path: Path) -> Site:
        (tmp_path / "scratch").mkdir()
        return Site(
            f"simfs {mount.config.profile}",
            root=mount.path / tmp_path.name / "store",
            scratch=tmp_path / "scratch",
            processes="processes" in self.capabilities,
            heavy="heavy" in self.capabilities,
            kills=self.kills,
        )

    @pytest.fixture(autouse=True)
    def _nfs_safe(self, mount: SimFSProcess) -> Iterator[None]:
        mount.control.reset()
        yield
        counts = mount.control.counters()
        assert counts.open_append == 0, "the store opened a file with O_APPEND"
        assert counts.renames_rejected == 0, "the store asked for a renameat2 flag"

    def run_case(self, case: Case, site: Site) -> None:
        site.root.parent.mkdir()
        case.func(site)


class TestOnSimfs(_OnSimfs):
    @pytest.fixture(scope="class")
    def mount(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFSProcess]:
        yield from _mount(tmp_path_factory, profile="none")


class TestOnSimfsEfsLatencyAndAttributeCache(_OnSimfs):
    capabilities = frozenset()

    @pytest.fixture(scope="class")
    def mount(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFSProcess]:
        yield from _mount(tmp_path_factory, profile="efs-gp", attr_timeout=EFS_ATTR_CACHE)
