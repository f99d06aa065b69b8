"""Run one conformance case in another Python: the seam for backends whose filesystem is not
this process's (a child process here; a QEMU guest's kernel NFS client).

``run_case("tests.conformance.cases.market:tail", site_json)`` imports the case, rebuilds the
:class:`~tests.conformance.site.Site` from JSON (paths as the other side sees them) and runs
it. It returns ``{"ok": True}`` or ``{"ok": False, "error": <traceback>}``, JSON either way,
so any transport (``efsray.deadline.run_in_child``, a file or the console of a guest) can
carry the answer back; :func:`raise_for` turns a failed answer into a test failure here.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import pytest

from tests.conformance.site import Site

__all__ = ["raise_for", "run_case"]


def run_case(case: str, site: str) -> dict[str, Any]:
    module, _, name = case.partition(":")
    func = getattr(importlib.import_module(module), name)
    try:
        func(Site.from_json(site))
    except BaseException:  # the answer carries every failure, assertion or crash
        return {"ok": False, "error": traceback.format_exc()}
    return {"ok": True}


def raise_for(answer: dict[str, Any], where: str) -> None:
    """Fail the calling test with the remote traceback when ``answer`` is a failure."""
    if not answer.get("ok"):
        pytest.fail(f"the case failed on {where}:\n{answer.get('error')}", pytrace=False)


def run_cases(cases: list[str], sites: list[str]) -> dict[str, dict[str, Any]]:
    """Run several cases, each on its own site, in one Python: for a remote side where
    starting Python and importing pyarrow/pandas costs seconds (a TCG guest), pay it once.
    Returns ``{case ref: answer}``."""
    return {ref: run_case(ref, site) for ref, site in zip(cases, sites, strict=True)}
