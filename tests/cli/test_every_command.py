"""Every command and subcommand, enumerated from the Typer app itself, with bad input.

New commands are covered automatically: an unknown option, a missing argument, and a bad
value of each typed option (ints, floats incl. inf/nan, choices). Each must answer with a
short message on stderr, no traceback, and the documented exit code (usage errors: 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

import efsray
from efsray.cli.app import EXIT_CODES, main, root_command

USAGE = 2
DOCUMENTED = set(EXIT_CODES)
HUGE_INT = str(10**30)
ANY_ERROR = frozenset(DOCUMENTED - {0, 70})
# Numeric options that may stay unbounded, with the reason.
UNBOUNDED: dict[tuple[str, ...], str] = {}

# A valid value for each required argument, by parameter name, so that one bad option at a
# time is what fails (the command body is never reached: typed values fail at parsing).
ARG_VALUES = {
    "symbol": "AAPL",
    "timeframe": "1m",
    "model": "m1",
    "alias": "best",
    "version": "1",
    "run_id": "r1",
    "error": "EIO",
    "mountpoint": "/nonexistent/mnt",
    "path": "/nonexistent/p",
    "paths": "/nonexistent/p",
    "file": "/nonexistent/f.csv",
    "files": "/nonexistent/c.yml",
    "legacy_root": "/nonexistent/legacy",
    "query": "SELECT 1",
}


@dataclass(frozen=True)
class Invocation:
    argv: tuple[str, ...]
    expect: frozenset[int] = field(default=frozenset({USAGE}))

    def __str__(self) -> str:
        return "efsray " + " ".join(self.argv)


def _leaves(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        for name in sorted(subs):
            yield from _leaves(subs[name], (*path, name))
    else:
        yield path, cmd


def _groups(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        if path:
            yield path
        for name in sorted(subs):
            yield from _groups(subs[name], (*path, name))


def _annotation(param: Any) -> Any:
    ann = param.type_descriptor.annotation
    if typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return ann


def _is_numeric(param: Any) -> bool:
    return _annotation(param) in (int, float) and not getattr(param, "is_flag", False)


def _bad_values(param: Any) -> list[tuple[str, frozenset[int]]]:
    """Bad values of a typed option and the exit codes each may give."""
    ann = _annotation(param)
    usage = frozenset({USAGE})
    # A value in range for the type but out of the option's range is a usage error only if
    # the option declares a range (test_numeric_options_are_bounded says which do not).
    bounded = usage if param.type_descriptor.parameter_info.max is not None else ANY_ERROR
    if ann is int:
        return [("abc", usage), ("1.5", usage), (HUGE_INT, bounded)]
    if ann is float:
        return [
            ("abc", usage),
            ("inf", bounded),
            ("nan", bounded),
            ("-inf", bounded),
            ("1e999", bounded),
        ]
    if (isinstance(ann, type) and issubclass(ann, Enum)) or typing.get_origin(
        ann
    ) is typing.Literal:
        return [("no-such-choice", usage)]
    return []


def _required_args(cmd: Any) -> list[str]:
    out: list[str] = []
    for p in cmd.params:
        if p.param_type_name == "argument" and p.required:
            out.append(ARG_VALUES.get(p.name, "x"))  # a new command's argument: any text
    return out


def invocations() -> list[Invocation]:
    root = root_command()
    found = [
        Invocation(("no-such-command",)),
        Invocation(("--no-such-option",)),
    ]
    for group in _groups(root):
        found.append(Invocation((*group, "no-such-subcommand")))
    for path, cmd in _leaves(root):
        required = _required_args(cmd)
        found.append(Invocation((*path, *required, "--no-such-option")))
        missing = [p for p in cmd.params if p.required]
        if missing:
            found.append(Invocation(path))
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            for bad, expect in _bad_values(p):
                found.append(Invocation((*path, *required, p.opts[0], bad), expect))
    return found


ALL = invocations()


def test_every_command_is_covered() -> None:
    """The enumeration sees every command group (a sanity check of the walk itself)."""
    argv0 = {inv.argv[0] for inv in ALL}
    for name in ("data", "checkpoints", "results", "simfs", "health", "backtest", "cleanup"):
        assert name in argv0
    assert len(ALL) > 200


def test_numeric_options_are_bounded() -> None:
    """inf, nan and 10**30 must fail at parsing, before a command starts Ray or a server."""
    unbounded = []
    for path, cmd in _leaves(root_command()):
        for p in cmd.params:
            if p.param_type_name == "option" and _is_numeric(p):
                info = p.type_descriptor.parameter_info
                key = (*path, p.opts[0])
                if (info.min is None or info.max is None) and key not in UNBOUNDED:
                    unbounded.append(" ".join(key))
    assert not unbounded, unbounded


@pytest.mark.parametrize("inv", ALL, ids=str)
def test_bad_invocation(inv: Invocation, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(list(inv.argv))
    captured = capsys.readouterr()
    assert code in inv.expect, (code, captured.err)
    assert "Traceback" not in captured.err
    assert captured.err.strip(), "an error must say something on stderr"
    assert len(captured.err.strip().splitlines()) <= 12, captured.err


def _run_script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("efsray")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "efsray.cli.app"]
    return subprocess.run(
        [*cmd, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("no-such-command",),
        ("data", "show"),
        ("data", "show", "X", "1m", "--version", "0"),
        ("health", "--timeout", "abc"),
        ("health", "--timeout", "inf"),
        ("cleanup", "--days", "nan"),
        ("version", "--bogus"),
    ],
    ids=" ".join,
)
def test_console_script(argv: tuple[str, ...]) -> None:
    """The real console script, in a subprocess: short stderr, no traceback, exit 2."""
    res = _run_script(*argv)
    assert res.returncode == USAGE, res.stderr
    assert "Traceback" not in res.stderr
    assert 0 < len(res.stderr.strip().splitlines()) <= 12


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--debug (or EFSRAY_DEBUG=1) shows where an error came from; without it, one line."""
    missing = tmp_path / "nope"
    plain = _run_script("data", "ls", "--root", str(missing / "x"), "--env-file", str(missing))
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    debug = _run_script(
        "--debug", "data", "ls", "--root", str(missing / "x"), "--env-file", str(missing)
    )
    assert debug.returncode == plain.returncode and "Traceback" in debug.stderr
    env = _run_script(
        "data",
        "ls",
        "--root",
        str(missing / "x"),
        "--env-file",
        str(missing),
        env={"EFSRAY_DEBUG": "1"},
    )
    assert env.returncode == plain.returncode and "Traceback" in env.stderr


def test_help_documents_exit_codes() -> None:
    res = _run_script("--help")
    assert res.returncode == 0
    for code in EXIT_CODES:
        assert f"{code} " in res.stdout or f"{code}:" in res.stdout


def test_version_reports_json(cli: Any) -> None:
    """Every command that reports has --json, `version` included (the issue's example)."""
    res = cli("version", "--json")
    assert res.code == 0 and res.json() == {"version": efsray.__version__}
