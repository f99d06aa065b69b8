"""Compose stacks as the tests drive them: a copy of deploy/ with its own secrets, a unique
project name, free loopback ports, `up -d --wait`, and `down -v` however the test ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.compose import write_token
from efsray.compose.token import CONTAINER_GID, CONTAINER_UID
from efsray.compose.yamlio import load_yaml
from tests import _wait
from tests.fixtures.deploy import DEPLOY, ROOT, free_port

HERE = Path(__file__).resolve().parent
FAST_HEALTH = "fast-health.yml"


def _fast_health(deploy: Path, files: Sequence[str]) -> str:
    """The tests' only override of the shipped files: every healthcheck runs every 3 s instead
    of 30 s (the same test commands), so stacks come up, and turn unhealthy, in seconds. The
    start period is long: on a CPU-starved machine a raylet can still abort at startup (its
    agents slower than RAY_agent_register_timeout_ms, which the stacks raise to 120 s) and
    `restart: unless-stopped` retries it without the container being marked unhealthy."""
    lines = ["services:"]
    for name in files:
        data = load_yaml((deploy / name).read_text()).data
        for service, spec in (data.get("services") or {}).items():
            if not isinstance(spec, dict) or "healthcheck" not in spec:
                continue
            lines += [f"  {service}:", "    healthcheck:"]
            lines += ["      interval: 3s", "      start_period: 600s", "      retries: 3"]
    (deploy / FAST_HEALTH).write_text("\n".join(lines) + "\n")
    return FAST_HEALTH


@dataclass(frozen=True, slots=True)
class Engine:
    """A Docker engine that answers, the compose v2 binary, and the images to run."""

    host: str
    compose: str
    images: Mapping[str, str]
    started_here: bool = False

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, **self.images}

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        docker = shutil.which("docker") or "/usr/bin/docker"
        proc = subprocess.run(
            [docker, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def wait_for(what: str, condition: Callable[[], Any], *, timeout: float, every: float = 1.0) -> Any:
    """:func:`tests._wait.wait_for` for a stack: a container, an API or a scrape that errors
    while it starts counts as not ready yet."""
    return _wait.wait_for(what, condition, timeout=timeout, every=every, tolerate=(Exception,))


@dataclass
class Stack:
    """One compose project made from the shipped files, in its own copy of deploy/."""

    engine: Engine
    workdir: Path
    files: list[str]
    project: str
    env: dict[str, str] = field(default_factory=dict)
    up_seconds: float = 0.0
    head: str = "ray-head"  # the Ray services' names (the cloud stack's are ray-*-cloud)
    worker: str = "ray-worker"

    @classmethod
    def create(
        cls,
        engine: Engine,
        workdir: Path,
        files: Sequence[str],
        project: str,
        env: Mapping[str, str] | None = None,
        token: Path | None = None,
        head: str = "ray-head",
        worker: str = "ray-worker",
    ) -> Stack:
        deploy = workdir / "deploy"
        shutil.copytree(DEPLOY, deploy, ignore=shutil.ignore_patterns("wheelhouse", "secrets"))
        (deploy / "secrets").mkdir()
        # The token exactly as a user makes it (root here: chowned to the containers' uid).
        if token is None:
            write_token(deploy / "secrets" / "ray_auth_token")
        else:  # the head's token, copied to another "host" and given to the containers' user
            shutil.copy2(token, deploy / "secrets" / "ray_auth_token")
            os.chown(deploy / "secrets" / "ray_auth_token", CONTAINER_UID, CONTAINER_GID)
        write_token(deploy / "secrets" / "grafana_admin_password")
        shutil.copy2(ROOT / "pyproject.toml", workdir / "pyproject.toml")
        values = {
            "COMPOSE_PROJECT_NAME": project,
            "RAY_DASHBOARD_PORT": str(free_port()),
            "PROMETHEUS_PORT": str(free_port()),
            "GRAFANA_PORT": str(free_port()),
            "RAY_SHM_SIZE": "512mb",
            **(env or {}),
        }
        files = [*files, _fast_health(deploy, files)]
        return cls(engine, workdir, files, project, values, head=head, worker=worker)

    @property
    def deploy(self) -> Path:
        return self.workdir / "deploy"

    @property
    def token(self) -> str:
        return (self.deploy / "secrets" / "ray_auth_token").read_text()

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True, profiles: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.engine.compose, "--project-name", self.project]
        for f in self.files:
            cmd += ["-f", f]
        for p in profiles:
            cmd += ["--profile", p]
        proc = subprocess.run(
            [*cmd, *args],
            cwd=self.deploy,
            env={**self.engine.env(), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stderr[-4000:]}\n{self.logs()}"
            )
        return proc

    def up(
        self,
        *services: str,
        profiles: Sequence[str] = (),
        workers: Mapping[str, int] | None = None,
        staged: bool = True,
        timeout: float = 600,
    ) -> float:
        """`up -d --wait` (every container running and healthy); returns the seconds it took.

        ``workers`` (service -> replicas) come up one at a time after the rest: on this
        loaded 2-core machine Ray nodes starting together miss Ray's startup deadlines."""
        started = time.monotonic()
        top = max((workers or {}).values(), default=0)
        steps = range(1, top + 1) if staged and top else [top]
        for n in steps:
            scale = [f"--scale={w}={min(n, count)}" for w, count in (workers or {}).items()]
            proc = self.compose(
                "up", "-d", "--wait", "--wait-timeout", str(int(timeout)), "--no-build",
                *scale, *services, profiles=profiles, timeout=timeout + 60, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                # `--wait` gives up on the first unhealthy container, but a raylet that missed
                # Ray's startup deadline is restarted by `restart: unless-stopped`: wait for
                # every container to be running and healthy, within the same deadline.
                left = timeout - (time.monotonic() - started)
                try:
                    wait_for("every container healthy", self._all_healthy, timeout=left, every=3)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{proc.stderr[-3000:]}\n{self.logs()}") from None
        self.up_seconds = time.monotonic() - started
        return self.up_seconds

    def _all_healthy(self) -> bool:
        rows = self.containers("")
        return bool(rows) and all(
            r.get("State") == "running" and r.get("Health", "healthy") in ("healthy", "")
            for r in rows
        )

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180,
                     check=False, profiles=("neon", "monitoring"))  # fmt: skip

    def logs(self, tail: int = 40) -> str:
        try:
            proc = self.compose("logs", "--no-color", "--tail", str(tail), check=False,
                                timeout=60, profiles=("neon", "monitoring"))  # fmt: skip
        except subprocess.TimeoutExpired:
            return "(no logs: compose logs timed out)"
        return proc.stdout[-8000:]

    def exec(self, service: str, *cmd: str, timeout: float = 120, index: int = 1) -> str:
        return self.compose(
            "exec", "-T", "--index", str(index), service, *cmd, timeout=timeout
        ).stdout

    def containers(self, service: str) -> list[dict[str, Any]]:
        args = ["ps", "--format", "json", "--all", *([service] if service else [])]
        out = self.compose(*args, timeout=60).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [r for row in rows for r in (row if isinstance(row, list) else [row])]

    def inspect(self, container: str) -> dict[str, Any]:
        data = json.loads(self.engine.docker("inspect", container))
        assert isinstance(data, list) and data
        return dict(data[0])

    # --- the Ray Jobs API, as a user submits work (with the token) ----------------------
    def jobs_api(self, method: str, path: str, body: Any = None) -> Any:
        port = self.env["RAY_DASHBOARD_PORT"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def submit(self, entrypoint: str) -> str:
        answer = self.jobs_api("POST", "/api/jobs/", {"entrypoint": entrypoint})
        return str(answer["submission_id"])

    def job_status(self, job: str) -> str:
        return str(self.jobs_api("GET", f"/api/jobs/{job}")["status"])

    def wait_job(self, job: str, timeout: float = 600) -> str:
        status = wait_for(
            f"job {job}",
            lambda: (s := self.job_status(job)) in ("SUCCEEDED", "FAILED", "STOPPED") and s,
            timeout=timeout,
            every=2,
        )
        if status != "SUCCEEDED":
            logs = self.jobs_api("GET", f"/api/jobs/{job}/logs").get("logs", "")
            raise AssertionError(f"job {job} {status}:\n{logs[-4000:]}")
        return str(status)

    def alive_nodes(self) -> list[dict[str, Any]]:
        summary = self.jobs_api("GET", "/nodes?view=summary")["data"]["summary"]
        return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
