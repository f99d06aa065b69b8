"""The conformance suite on a local directory: every case, the reference backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conformance.base import StoreConformance
from tests.conformance.site import Site


class TestOnLocalDirectory(StoreConformance):
    @pytest.fixture
    def site(self, tmp_path: Path) -> Site:
        (tmp_path / "scratch").mkdir()
        return Site(
            "local directory",
            root=tmp_path / "store",
            scratch=tmp_path / "scratch",
            kills=int(os.environ.get("EFSRAY_TEST_KILLS", "200")),
            peer=tmp_path / "store",  # one kernel, one cache: the trivial second client
        )
