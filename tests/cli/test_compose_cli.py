"""`efsray compose lint | render | token | rules`, through the real command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from efsray.cli import compose as compose_cli
from efsray.compose import PARSE_RULES, RULES, efs_volumes
from efsray.errors import ComposeError
from tests.fixtures.deploy import DEPLOY, SEED

DNS = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"


def _efsray(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    compose_cli.register(app)
    return app


def test_lint_seed_exits_1_with_rule_why_and_fix() -> None:
    proc = _efsray("compose", "lint", str(SEED / "docker-compose.cloud.yml"))
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "RAY001" in out and "worker-joins-client-port" in out
    assert "[ray-worker-cloud]" in out
    assert "why:" in out and "fix:" in out
    assert "Traceback" not in out + proc.stderr


def test_lint_json_on_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "docker-compose.yml"
    garbage.write_text("services: [\n  {{{\n")
    proc = _efsray("compose", "lint", "--json", str(garbage), str(tmp_path / "nope.yml"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False
    rules = [[f["rule"] for f in file["findings"]] for file in result["files"]]
    assert rules == [["YAML001"], ["FILE001"]]
    finding = result["files"][0]["findings"][0]
    assert finding["severity"] == "error" and finding["line"] >= 1
    assert finding["why"] and finding["fix"]


def test_lint_shipped_files_json_ok(cli: typer.Typer) -> None:
    # docker-compose.multihost.yml is an override of the production stack: it is linted
    # merged with it (tests/deploy/test_multihost.py), not alone
    files = [
        str(p) for p in sorted(DEPLOY.glob("docker-compose*.yml")) if "multihost" not in p.name
    ]
    result = CliRunner().invoke(cli, ["compose", "lint", "--json", "--strict", *files])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and len(data["files"]) == 5


def test_strict_makes_warnings_fail(cli: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "compose.yml"
    f.write_text("version: '3.8'\nservices:\n  web:\n    image: nginx:1.27\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["compose", "lint", str(f)]).exit_code == 0
    result = runner.invoke(cli, ["compose", "lint", "--strict", str(f)])
    assert result.exit_code == 1 and "CMP001" in result.output


def test_lint_interpolates_with_an_env_file(cli: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "compose.yml"
    f.write_text(
        "services:\n"
        "  head:\n"
        "    image: rayproject/ray:2.60.0-py311-cpu\n"
        "    command: [ray, start, --head, --block]\n"
        '    ports: ["${BIND:-127.0.0.1}:8265:8265"]\n'
    )
    env = tmp_path / "bind.env"
    env.write_text("BIND=0.0.0.0\n")
    runner = CliRunner()
    plain = runner.invoke(cli, ["compose", "lint", "--json", str(f)])
    assert "RAY003" not in plain.output
    bound = runner.invoke(cli, ["compose", "lint", "--json", "--env-file", str(env), str(f)])
    assert "RAY003" in bound.output


def test_render_from_env_file(cli: typer.Typer, tmp_path: Path) -> None:
    env = tmp_path / ".env.cloud"
    env.write_text(f"EFS_DNS_NAME={DNS}\n")
    runner = CliRunner()
    text = runner.invoke(cli, ["compose", "render", "--env-file", str(env)])
    assert text.exit_code == 0, text.output
    assert yaml.safe_load(text.output)["volumes"] == efs_volumes(DNS)
    as_json = runner.invoke(cli, ["compose", "render", "--env-file", str(env), "--json"])
    assert json.loads(as_json.output)["volumes"] == efs_volumes(DNS)
    # EFSMountConfig's settings apply: the mount target IP is the server, version overridden
    env.write_text(f"EFS_DNS_NAME={DNS}\nEFS_MOUNT_TARGET_IP=10.0.1.100\nEFS_NFS_VERSION=4.0\n")
    by_ip = runner.invoke(cli, ["compose", "render", "--env-file", str(env), "--root-dir", "/x"])
    volumes = yaml.safe_load(by_ip.stdout)["volumes"]
    assert "warning:" in by_ip.stderr and "4.0" in by_ip.stderr  # EFSMountConfig's advice
    assert volumes["efs-logs"]["driver_opts"]["o"].startswith("addr=10.0.1.100,nfsvers=4.0,")
    assert volumes["efs-logs"]["driver_opts"]["device"] == ":/x/logs"


def test_render_placeholder_is_what_the_stacks_ship(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["compose", "render", "--placeholder"])
    rendered = yaml.safe_load(result.output)["volumes"]
    shipped = yaml.safe_load((DEPLOY / "docker-compose.production.yml").read_text())["volumes"]
    assert all(shipped[name] == spec for name, spec in rendered.items())


def test_render_errors_are_messages(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("AWS_REGION=us-east-1\n")
    proc = _efsray("compose", "render", "--env-file", str(empty))
    assert proc.returncode == 2
    assert "EFS_DNS_NAME is not set" in proc.stderr and "Traceback" not in proc.stderr
    tls = tmp_path / ".env.tls"
    tls.write_text(f"EFS_DNS_NAME={DNS}\nEFS_MOUNT_TYPE=efs\nEFS_TLS=true\n")
    proc = _efsray("compose", "render", "--env-file", str(tls))
    assert proc.returncode == 2
    assert "cannot do tls" in proc.stderr and "Traceback" not in proc.stderr
    proc = _efsray("compose", "render", "--root-dir", "../etc", env={"EFS_DNS_NAME": DNS})
    assert proc.returncode == 2
    assert "root directory" in proc.stderr and "Traceback" not in proc.stderr


def test_token_is_private_new_and_never_printed(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "ray_auth_token"
    runner = CliRunner()
    result = runner.invoke(cli, ["compose", "token", str(path)])
    assert result.exit_code == 0, result.output
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert token not in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = runner.invoke(cli, ["compose", "token", str(path)])
    assert isinstance(again.exception, ComposeError)
    assert path.read_text() == token  # not replaced


def test_rules_lists_every_rule_once(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["compose", "rules", "--json"])
    ids = [r["id"] for r in json.loads(result.output)]
    assert len(ids) == len(set(ids)) == len(RULES) + len(PARSE_RULES)
    for rule in json.loads(result.output):
        assert rule["why"] and rule["fix"] and rule["severity"] in ("error", "warning", "info")
