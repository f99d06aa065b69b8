"""The remote seam, exercised here: a backend whose cases run in another Python where the
repository's ``tests`` package is not installed, the way the QEMU guests run them.

:class:`TestInAChildProcess` is a :class:`RemoteConformance`: one ``python -c`` program
(:func:`tests.conformance.remote.snippet`: the test modules' sources, the cases, the sites)
runs its subset in a child with only efsray on its path, and every test reports its case's
answer. A guest backend (tests/conformance/test_guests.py) differs only in its ``Remote``:
paths inside the guest, and the guest agent as the transport.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import efsray
from tests.conformance import remote
from tests.conformance.base import RemoteConformance
from tests.conformance.site import Case, Site

SRC = str(Path(efsray.__file__).resolve().parents[1])  # efsray's parent, and nothing else


@dataclass(frozen=True)
class ChildRemote:
    base: Path
    name: str = "a child Python without the tests package"

    def site(self, case: Case) -> Site:
        where = self.base / case.name
        return Site(self.name, root=where / "store", scratch=where / "scratch")

    def execute(self, program: str) -> str:
        env = {**os.environ, "PYTHONPATH": SRC}
        done = subprocess.run(
            [sys.executable, "-c", program],
            cwd=self.base,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        return done.stdout + done.stderr[-3000:]


class TestInAChildProcess(RemoteConformance):
    """Every case without processes, heavy data or a second client: the guests' subset,
    so a case that cannot run shipped (a module-level import the guest lacks, a path
    computed from ``__file__``) fails here first."""

    @pytest.fixture(scope="class")
    def remote(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildRemote]:
        yield ChildRemote(tmp_path_factory.mktemp("remote"))


def test_the_child_really_lacks_the_tests_package(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import tests.conformance"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr


def test_a_failing_case_fails_with_the_remote_traceback(tmp_path: Path) -> None:
    """The seam cannot pass by accident: a case that fails over there fails here, with the
    assertion from over there; a program that crashes gives no answers."""
    site = Site("here", root=tmp_path / "missing-parent" / "store", scratch=tmp_path / "s")
    answer = remote.run_case("tests.conformance.test_child:_failing_case", site.to_json())
    assert answer["ok"] is False and "AssertionError: the store root" in answer["error"]
    with pytest.raises(pytest.fail.Exception, match="AssertionError: the store root"):
        remote.raise_for(answer, "here")
    assert remote.run_case("tests.conformance.test_child:_passing_case", site.to_json()) == {
        "ok": True
    }
    assert remote.parse("Traceback (most recent call last):\n  ...\nMemoryError\n") == {}


def _failing_case(site: Site) -> None:
    assert site.root.exists(), "the store root does not exist"


def _passing_case(site: Site) -> None:
    assert site.name == "here"
