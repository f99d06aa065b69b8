"""The shipped Ray commands and health checks, run for real (no Docker here, so on the host).

The head and worker commands, their environment (token auth from a secret file) and the
healthcheck are taken from deploy/docker-compose.yml; only what a container would isolate is
remapped: ports (free ones, so parallel test runs do not collide), the dashboard bind address
(127.0.0.1 on this shared machine), the secret's path, HOME and RAY_TMPDIR. Every process is
started in its own session and killed by process group, never with `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from efsray.compose import write_token
from efsray.compose.model import Service
from tests.fixtures.deploy import DEPLOY, free_port

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(shutil.which("ray") is None, reason="the `ray` command is not installed"),
]

DEADLINE = 90.0


def _service(name: str) -> Service:
    data = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return Service(name, data["services"][name])


def _command(svc: Service, replace: dict[str, str], add: list[str]) -> list[str]:
    words = [svc.text(w) or "" for w in svc.get("command")]
    out = []
    for word in words:
        key = word.split("=", 1)[0]
        out.append(replace.pop(key, word))
    assert not replace, f"the shipped command lacks {sorted(replace)}"
    return out + add


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Ray's AF_UNIX socket paths must stay under 108 bytes: pytest's tmp_path is too deep."""
    path = Path(tempfile.mkdtemp(prefix="efsr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _environment(svc: Service, token: Path, home: Path, tmpdir: Path) -> dict[str, str]:
    env = {k: svc.text(v) or "" for k, v in svc.environment().items() if v is not None}
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
    env["RAY_AUTH_TOKEN_PATH"] = str(token)
    env["EFS_MOUNT_PATH"] = str(home / "efs")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**base, **env, "HOME": str(home), "RAY_TMPDIR": str(tmpdir)}


def _health_parts(svc: Service, agent_port: int) -> list[str]:
    script = svc.healthcheck_script()
    assert script is not None and "127.0.0.1:52365" in script
    return [p.strip() for p in script.replace(":52365/", f":{agent_port}/").split("&&")]


def _efsray_health_available() -> bool:
    """The healthcheck's second half runs `efsray health` (mount subsystem) once it exists."""
    if shutil.which("efsray") is None:
        return False
    proc = subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", "health", "--help"],
        capture_output=True,
        timeout=60,
    )
    return proc.returncode == 0


def _run_check(parts: list[str], env: dict[str, str], with_efs: bool) -> int:
    for part in parts:
        if part.startswith("efsray health") and not with_efs:
            continue
        proc = subprocess.run(["sh", "-c", part], env=env, capture_output=True, timeout=30)
        if proc.returncode != 0:
            return proc.returncode
    return 0


def _wait_healthy(
    proc: subprocess.Popen[bytes], parts: list[str], env: dict[str, str], with_efs: bool
) -> float:
    """Run the healthcheck the way Docker does during start_period: until it passes, the
    process dies, or the deadline expires. Polls with the Ray probe (cheap), then runs the
    whole check once."""
    assert proc.stdout is not None
    start = time.monotonic()
    output = bytearray()
    while time.monotonic() - start < DEADLINE:
        if _run_check(parts[:1], env, with_efs=False) == 0:
            assert _run_check(parts, env, with_efs) == 0, "Ray is up but the healthcheck fails"
            return time.monotonic() - start
        # Until the next try, wait on the node itself: its output (drained) or its exit end
        # the wait at once; otherwise it lasts the healthcheck's interval while starting.
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready and not (chunk := os.read(proc.stdout.fileno(), 1 << 16)):
            proc.wait(timeout=30)  # end of its output: the node exited
            out = output.decode(errors="replace")
            pytest.fail(f"the node exited with {proc.returncode}:\n{out[-3000:]}")
        if ready:
            output += chunk
    pytest.fail(f"not healthy within {DEADLINE}s")


@contextlib.contextmanager
def _node(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The node's whole process group (ray start, gcs_server, raylet, dashboard, workers).
    # SIGTERM is what `docker stop` sends, but `ray start --block` takes tens of seconds to
    # act on it, which is what stop_grace_period covers; a test has no use for the wait.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


def _alive_nodes(dashboard: int, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{dashboard}/nodes?view=summary", headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        summary = json.load(response)["data"]["summary"]
    return sum(1 for node in summary if node.get("raylet", {}).get("state", "ALIVE") == "ALIVE")


def test_shipped_head_and_worker_commands_form_an_authenticated_cluster(
    tmp_path: Path, short_tmp: Path
) -> None:
    head, worker = _service("ray-head"), _service("ray-worker")
    token_file = write_token(tmp_path / "secrets" / "ray_auth_token").path
    token = token_file.read_text()
    gcs, client, dashboard, head_agent, head_metrics = (free_port() for _ in range(5))
    worker_agent, worker_metrics = free_port(), free_port()
    # the agents' fixed ports (6382, 6383) remapped too: two nodes share this host here
    head_env_agent, head_agent_grpc, worker_env_agent, worker_agent_grpc = (
        free_port() for _ in range(4)
    )
    (tmp_path / "efs").mkdir()

    head_cmd = _command(
        head,
        {
            "--port": f"--port={gcs}",
            "--ray-client-server-port": f"--ray-client-server-port={client}",
            "--dashboard-host": "--dashboard-host=127.0.0.1",
            "--dashboard-port": f"--dashboard-port={dashboard}",
            "--metrics-export-port": f"--metrics-export-port={head_metrics}",
            "--runtime-env-agent-port": f"--runtime-env-agent-port={head_env_agent}",
            "--dashboard-agent-grpc-port": f"--dashboard-agent-grpc-port={head_agent_grpc}",
            "--dashboard-agent-listen-port": f"--dashboard-agent-listen-port={head_agent}",
        },
        ["--node-ip-address=127.0.0.1"],
    )
    worker_cmd = _command(
        worker,
        {
            "--address": f"--address=127.0.0.1:{gcs}",
            "--metrics-export-port": f"--metrics-export-port={worker_metrics}",
            "--runtime-env-agent-port": f"--runtime-env-agent-port={worker_env_agent}",
            "--dashboard-agent-grpc-port": f"--dashboard-agent-grpc-port={worker_agent_grpc}",
            "--dashboard-agent-listen-port": f"--dashboard-agent-listen-port={worker_agent}",
        },
        ["--node-ip-address=127.0.0.1"],
    )
    assert "--block" in head_cmd and "--block" in worker_cmd
    head_env = _environment(head, token_file, tmp_path, short_tmp)
    worker_env = _environment(worker, token_file, tmp_path, short_tmp)
    with_efs = _efsray_health_available()
    head_check = _health_parts(head, head_agent)
    worker_check = _health_parts(worker, worker_agent)

    # The check really checks: nothing is listening yet, so it fails.
    assert _run_check(head_check, head_env, with_efs=False) != 0

    with _node(head_cmd, head_env) as head_proc:
        _wait_healthy(head_proc, head_check, head_env, with_efs)
        with _node(worker_cmd, worker_env) as worker_proc:
            _wait_healthy(worker_proc, worker_check, worker_env, with_efs)
            assert worker_proc.poll() is None and head_proc.poll() is None  # --block
            if with_efs:
                # Ray is fine, the shared volume is not: the same healthcheck fails.
                broken = {**head_env, "EFS_MOUNT_PATH": str(tmp_path / "not-mounted")}
                assert _run_check(head_check, broken, with_efs=True) != 0

            # Both nodes are in the cluster, and the API refuses requests without the token.
            assert _alive_nodes(dashboard, token) == 2
            with pytest.raises(urllib.error.HTTPError) as refused:
                _alive_nodes(dashboard, None)
            assert refused.value.code == 401

            # A node without the token cannot join (what rule RAY007 warns about).
            lonely = tmp_path / "no-token-home"
            lonely.mkdir()
            no_token_env = {**worker_env, "HOME": str(lonely)}
            no_token_env.pop("RAY_AUTH_TOKEN_PATH")
            no_token_cmd = [
                f"{w.split('=', 1)[0]}={free_port()}"
                if w.startswith(("--dashboard-agent", "--metrics-export", "--runtime-env-agent"))
                else w
                for w in worker_cmd
            ]  # fmt: skip
            with _node(no_token_cmd, no_token_env) as intruder:
                try:
                    intruder.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    pytest.fail("a worker without the token kept running")
                out = intruder.stdout.read().decode(errors="replace") if intruder.stdout else ""
            assert intruder.returncode != 0
            assert "token" in out.lower()
            assert _alive_nodes(dashboard, token) == 2

    # Once the head is gone, its health check fails again.
    assert _run_check(head_check, head_env, with_efs=False) != 0
