"""Run conformance cases in another Python: the seam for backends whose filesystem is not
this process's (a child process here; a QEMU guest's kernel NFS client).

``run_case("tests.conformance.cases.market:tail", site_json)`` imports the case, rebuilds the
:class:`~tests.conformance.site.Site` from JSON (paths as the other side sees them) and runs
it. It returns ``{"ok": True}`` or ``{"ok": False, "error": <traceback>}``, JSON either way,
so any transport (``efsray.deadline.run_in_child``, a file or the console of a guest) can
carry the answer back; :func:`raise_for` turns a failed answer into a test failure here.

Where the repository's ``tests`` package is not installed (a guest has efsray, its runtime
dependencies and pytest, nothing else), :func:`snippet` makes one self-contained Python
program that carries the sources of the test modules the cases need, runs a batch of cases
with :func:`run_cases` and prints the answers as one JSON line after :data:`ANSWER`.
"""

from __future__ import annotations

import base64
import importlib
import json
import traceback
import zlib
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.conformance.site import Case, Site

__all__ = ["ANSWER", "Remote", "parse", "raise_for", "run_case", "run_cases", "snippet"]

ANSWER = "EFSRAY-CONFORMANCE-ANSWERS "
_TESTS = Path(__file__).resolve().parents[1]  # the repository's tests/ package
#: The test modules a case may import, relative to tests/ (packages by their __init__.py).
_SHIPPED = (
    "__init__.py",
    "_wait.py",
    "conformance/__init__.py",
    "conformance/site.py",
    "conformance/remote.py",
    "conformance/cases/*.py",
    "store/__init__.py",
    "store/_bars.py",
    "store/_ckpt_workers.py",
    "store/_workers.py",
    "store/_procs.py",
    "store/_runs.py",
)


def run_case(case: str, site: str) -> dict[str, Any]:
    module, _, name = case.partition(":")
    func = getattr(importlib.import_module(module), name)
    try:
        where = Site.from_json(site)
        where.scratch.mkdir(parents=True, exist_ok=True)
        func(where)
    except BaseException:  # the answer carries every failure, assertion or crash
        return {"ok": False, "error": traceback.format_exc()}
    return {"ok": True}


def run_cases(cases: list[str], sites: list[str]) -> dict[str, dict[str, Any]]:
    """Run several cases, each on its own site, in one Python: for a remote side where
    starting Python and importing pyarrow/pandas costs seconds (a TCG guest), pay it once.
    Returns ``{case ref: answer}``."""
    return {ref: run_case(ref, site) for ref, site in zip(cases, sites, strict=True)}


def raise_for(answer: dict[str, Any], where: str) -> None:
    """Fail the calling test with the remote traceback when ``answer`` is a failure."""
    if not answer.get("ok"):
        pytest.fail(f"the case failed on {where}:\n{answer.get('error')}", pytrace=False)


def _sources() -> dict[str, tuple[str, bool]]:
    """``{module name: (source, is_package)}`` of every shipped test module."""
    out: dict[str, tuple[str, bool]] = {}
    for pattern in _SHIPPED:
        for path in sorted(_TESTS.glob(pattern)):
            parts = ("tests", *path.relative_to(_TESTS).with_suffix("").parts)
            package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if package else parts)
            out[name] = (path.read_text(), package)
    return out


_BOOT = """
import importlib.abc, importlib.util, json, sys

class _Shipped(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in SOURCES:
            return importlib.util.spec_from_loader(name, self, is_package=SOURCES[name][1])
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source, package = SOURCES[module.__name__]
        module.__file__ = "/shipped/" + module.__name__.replace(".", "/") + ".py"
        if package:
            module.__path__ = []
        exec(compile(source, "<shipped " + module.__name__ + ">", "exec"), module.__dict__)

sys.meta_path.insert(0, _Shipped())
from tests.conformance.remote import run_cases
print(ANSWER + json.dumps(run_cases(CASES, SITES)), flush=True)
"""


def snippet(cases: list[str], sites: list[str]) -> str:
    """A self-contained program that runs ``cases`` on ``sites`` (JSON, as the other side
    sees the paths) and prints ``ANSWER`` + the JSON of :func:`run_cases`."""
    # compressed: the program travels as one argv string (python3 -c), at most 128 KiB
    packed = base64.b64encode(zlib.compress(json.dumps(_sources()).encode(), 9)).decode()
    head = (
        "import base64, json, zlib\n"
        f"SOURCES = json.loads(zlib.decompress(base64.b64decode({packed!r})))\n"
        f"CASES = {list(cases)!r}\nSITES = {list(sites)!r}\nANSWER = {ANSWER!r}\n"
    )
    return head + _BOOT


def parse(stdout: str) -> dict[str, dict[str, Any]]:
    """The answers a :func:`snippet` printed; ``{}`` when it printed none (it crashed)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(ANSWER):
            answers: dict[str, dict[str, Any]] = json.loads(line[len(ANSWER) :])
            return answers
    return {}


class Remote(Protocol):
    """Where a :class:`RemoteConformance` backend runs its cases."""

    name: str

    def site(self, case: Case) -> Site:
        """A fresh site for ``case``, with the paths as the remote side sees them."""
        ...

    def execute(self, program: str) -> str:
        """Run ``program`` (Python source) there; its standard output."""
        ...
