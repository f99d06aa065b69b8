"""The conformance suite on a real Linux NFS v4.1 client: a QEMU guest of the guest harness
(efsray.testing.guests, tests/fixtures/guests.py) mounting one nfs-ganesha export with EFS's
options.

The guest's subset is the 44 light cases (no writer processes, no heavy data, no second
client), minus the two that need test extras the guest image does not hold (polars, DuckDB).
They run in one Python in the guest (:class:`RemoteConformance`; under TCG, starting Python
and importing pyarrow costs seconds), on directories of the NFS mount; their sources travel
with the program, so the image needs only efsray's runtime dependencies and pytest. Why not
the rest: see docs/conformance.md. Skipped, saying why, until the guest harness is present
(and where it skips: no qemu, no image, EFSRAY_GUESTS=0) or when the image lacks pytest.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conformance.base import RemoteConformance, StoreConformance
from tests.conformance.site import Case, Site


def _harness_present() -> bool:
    try:
        return importlib.util.find_spec("efsray.testing.guests") is not None
    except ModuleNotFoundError:  # no efsray.testing at all
        return False


if not _harness_present():
    pytest.skip(
        "needs the QEMU guest harness (efsray.testing.guests, issue 17 items 1-2)",
        allow_module_level=True,
    )

#: Cases that need test extras (polars, DuckDB) the guest image does not install.
NEEDS_TEST_EXTRAS = frozenset(
    {"outputs", "segment_files_are_read_directly_by_pyarrow_polars_and_duckdb"}
)


@dataclass(frozen=True)
class GuestRemote:
    guest: Any  # efsray.testing.guests.vm.Guest
    base: str  # a directory on the guest's NFS mount, relative to its cwd (the mount)

    @property
    def name(self) -> str:
        return f"the kernel NFS client of guest {self.guest.name}"

    def site(self, case: Case) -> Site:
        where = Path(self.base) / case.name
        return Site(self.name, root=where / "store", scratch=where / "scratch")

    def execute(self, program: str) -> str:
        probe = self.guest.run("import pytest", timeout=120)
        if probe.rc != 0:
            pytest.skip(
                "the guest image has no pytest (the cases use pytest.raises): add it to "
                "GUEST_REQUIREMENTS in efsray.testing.guests.image"
            )
        result = self.guest.run(program, timeout=1500)
        return str(result.stdout) + str(result.stderr)[-3000:]


class TestOnKernelNfsClient(RemoteConformance):
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        *StoreConformance.pytestmark,
        pytest.mark.timeout(1800),
    ]

    def selects(self, case: Case) -> bool:
        return super().selects(case) and case.name not in NEEDS_TEST_EXTRAS

    @pytest.fixture(scope="class")
    def remote(self, nfs_guests: Any) -> Iterator[GuestRemote]:
        guest = nfs_guests.guests[0]
        base = f"conformance-{uuid.uuid4().hex[:12]}"
        guest.run(f"import os; os.mkdir({base!r})").check()
        yield GuestRemote(guest, base)
