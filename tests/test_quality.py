"""The code base stays ruff-clean: a lint failure fails the suite like any other bug."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install ruff)")
def test_ruff_clean() -> None:
    proc = subprocess.run(
        ["ruff", "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("RAY_HEAD_PORT=10001\n")
    proc = subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", "config", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "RAY_HEAD_PORT" in proc.stderr


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy is not installed (pip install mypy)")
def test_mypy_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "src/efsray"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
