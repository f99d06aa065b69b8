"""Shared fixtures. Tests use real filesystems, real processes, real servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's own settings; each gets a private store root."""
    for var in list(os.environ):
        if var.startswith(("EFS_", "NEON_", "RAY_ADDRESS", "RAY_HEAD_", "RAY_AUTH_", "EFSRAY_")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EFS_MOUNT_PATH", str(tmp_path / "efs-data"))
    yield
