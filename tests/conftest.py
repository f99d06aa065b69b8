"""Shared fixtures. Tests use real filesystems, real processes, real servers.

Fixtures for one concern (FUSE, PostgreSQL, Ray, ...) live in their own module under
tests/fixtures/ and are loaded here automatically.
"""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import tests.fixtures

# Property tests assert what holds, not how fast: a per-example deadline only measures how
# busy this 2-core machine is (the Docker engine, QEMU guests and Ray run in the same suite).
settings.register_profile("efsray", deadline=None)
settings.load_profile("efsray")

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules(tests.fixtures.__path__)
    if not m.name.startswith("_")
]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's own settings; each gets a private store root."""
    for var in list(os.environ):
        if var.startswith(("EFS_", "NEON_", "RAY_ADDRESS", "RAY_HEAD_", "RAY_AUTH_", "EFSRAY_")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("EFS_MOUNT_PATH", str(tmp_path / "efs-data"))
    yield
