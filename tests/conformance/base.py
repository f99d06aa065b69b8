"""The store conformance suite: every store behaviour, written once, run on every backend.

Modelled on zarr-python's ``zarr/testing/store.py``: :class:`StoreConformance` holds the tests;
a backend is one small subclass that provides the ``site`` fixture (a fresh store root on its
filesystem for each test) and says what the backend can do::

    class TestOnMyFilesystem(StoreConformance):
        capabilities = frozenset({"processes"})   # no "heavy" cases here

        @pytest.fixture
        def site(self, tmp_path): return Site("myfs", root=..., scratch=tmp_path)

Each test method covers one area (market data, checkpoints, results, retention, the seed's
``EFSDataManager`` face, multi-process concurrency, two clients) and is parametrized with
the area's cases (``tests/conformance/cases/``) that the backend's capabilities allow, so a
test id reads ``TestOnLocalDirectory::test_market[tail]`` and ``-k tail`` selects one
behaviour everywhere.

Hooks a subclass may override:

- ``capabilities``: which of ``{"processes", "heavy", "two_clients"}`` the backend
  supports; a case that needs more is not collected there (each subclass says why).
- ``only``: a set of case names: the backend's subset (None: every case its capabilities
  allow). ``known_failures``: ``{case name: reason}``, collected as non-strict xfail.
- ``run_case(case, site)``: how a case runs; the default calls it in this process.

A backend whose filesystem lives elsewhere (a QEMU guest's kernel NFS client) subclasses
:class:`RemoteConformance` instead: its cases run in one Python there and each test reports
the answer (tests/conformance/test_child.py, test_guests.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from tests.conformance import remote as _remote
from tests.conformance.site import AREAS, Case, Site, cases_of

__all__ = ["RemoteConformance", "StoreConformance"]


def _area(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.conformance_area = name  # type: ignore[attr-defined]
        return func

    return mark


class StoreConformance:
    """Subclass per backend and provide a ``site`` fixture (see the module docstring)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.conformance]
    capabilities: ClassVar[frozenset[str]] = frozenset({"processes", "heavy", "two_clients"})
    only: ClassVar[frozenset[str] | None] = None
    known_failures: ClassVar[dict[str, str]] = {}

    # --- selection -----------------------------------------------------------------------
    def selects(self, case: Case) -> bool:
        if case.missing(self.capabilities):
            return False
        return self.only is None or case.name in self.only

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        area = getattr(metafunc.function, "conformance_area", None)
        if area is None or "case" not in metafunc.fixturenames:
            return
        params = []
        for c in cases_of(area):
            if not self.selects(c):
                continue
            marks = []
            if c.name in self.known_failures:
                marks.append(pytest.mark.xfail(reason=self.known_failures[c.name], strict=False))
            params.append(pytest.param(c, id=c.name, marks=marks))
        if not params:  # say why, rather than pytest's bare "got empty parameter set"
            subset = "every case" if self.only is None else f"a subset of {len(self.only)}"
            reason = (
                f"{type(self).__name__} runs no {area} case (capabilities "
                f"{sorted(self.capabilities)}, {subset})"
            )
            params.append(pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason)))
        metafunc.parametrize("case", params)

    # --- running -------------------------------------------------------------------------
    def run_case(self, case: Case, site: Site) -> None:
        case.func(site)

    # --- the areas -----------------------------------------------------------------------
    @_area("market")
    def test_market(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("checkpoints")
    def test_checkpoints(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("results")
    def test_results(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("retention")
    def test_retention(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("seed")
    def test_seed_face(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("concurrency")
    def test_concurrency(self, site: Site, case: Case) -> None:
        self.run_case(case, site)

    @_area("clients")
    def test_two_clients(self, site: Site, case: Case) -> None:
        self.run_case(case, site)


class RemoteConformance(StoreConformance):
    """A backend whose filesystem is somewhere else: the class's cases all run in one Python
    there (:func:`tests.conformance.remote.snippet`, which carries the test modules' sources),
    once per class, and each test reports its case's answer.

    Subclasses provide a class-scoped ``remote`` fixture, a
    :class:`~tests.conformance.remote.Remote`: ``name``, ``site(case)``,
    ``execute(program) -> stdout``.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()

    @pytest.fixture(scope="class")
    def remote_answers(self, remote: _remote.Remote) -> dict[str, Any]:
        selected = [c for area in AREAS for c in cases_of(area) if self.selects(c)]
        sites = [remote.site(c).to_json() for c in selected]
        stdout = remote.execute(_remote.snippet([c.ref for c in selected], sites))
        return {"answers": _remote.parse(stdout), "stdout": stdout, "where": remote.name}

    @pytest.fixture
    def site(self, remote: _remote.Remote, case: Case) -> Site:
        return remote.site(case)

    @pytest.fixture(autouse=True)
    def _answers(self, remote_answers: dict[str, Any]) -> None:
        self.remote_answers = remote_answers

    def run_case(self, case: Case, site: Site) -> None:
        batch = self.remote_answers
        answer = batch["answers"].get(case.ref)
        if answer is None:
            pytest.fail(
                f"{batch['where']} gave no answer for {case.ref}; its output ended with:\n"
                f"{batch['stdout'][-3000:]}",
                pytrace=False,
            )
        _remote.raise_for(answer, f"{batch['where']} ({case.ref})")
