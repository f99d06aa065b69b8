"""The remote seam, exercised here: three cases (market, checkpoints, results), each in a
fresh child Python through ``efsray.deadline.run_in_child`` and
:func:`tests.conformance.remote.run_case`.

This is the shape of a backend whose filesystem lives in another machine (the kernel NFS
clients of the QEMU guests, tests/guests/): the case travels as ``module:function``, the
site as JSON with the paths the other side sees, and the answer (a traceback on failure)
comes back as JSON. A guest backend is the same subclass with its own ``site`` (a directory
in the guest's NFS mount, a guest-local scratch directory) and a ``run_case`` that hands
``remote.run_cases`` to a Python in the guest, where one interpreter runs the whole subset
(starting Python and importing pyarrow under TCG costs seconds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

from efsray.deadline import run_in_child
from tests.conformance import remote
from tests.conformance.base import StoreConformance
from tests.conformance.site import Case, Site

REPO = Path(__file__).resolve().parents[2]


class TestInAChildProcess(StoreConformance):
    capabilities: ClassVar[frozenset[str]] = frozenset()
    only: ClassVar[frozenset[str] | None] = frozenset(
        {
            "versions_history_and_as_of",
            "directory_round_trip",
            "a_chosen_run_id_saves_once",
        }
    )

    @pytest.fixture
    def site(self, tmp_path: Path) -> Site:
        (tmp_path / "scratch").mkdir()
        return Site("child process", root=tmp_path / "store", scratch=tmp_path / "scratch")

    def run_case(self, case: Case, site: Site) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        answer = run_in_child(
            "tests.conformance.remote:run_case",
            {"case": case.ref, "site": site.to_json()},
            timeout=300,
            env=env,
        )
        remote.raise_for(answer, f"a child process ({case.ref})")


def test_a_failing_case_fails_with_the_remote_traceback(tmp_path: Path) -> None:
    """The seam cannot pass by accident: a case that fails over there fails here, with the
    assertion from over there."""
    site = Site("child process", root=tmp_path / "missing-parent" / "store", scratch=tmp_path)
    answer = remote.run_case("tests.conformance.test_child:_failing_case", site.to_json())
    assert answer["ok"] is False and "AssertionError: the store root" in answer["error"]
    with pytest.raises(pytest.fail.Exception, match="AssertionError: the store root"):
        remote.raise_for(answer, "here")
    assert remote.run_case("tests.conformance.test_child:_passing_case", site.to_json()) == {
        "ok": True
    }


def _failing_case(site: Site) -> None:
    assert site.root.exists(), "the store root does not exist"


def _passing_case(site: Site) -> None:
    assert site.name == "child process"
