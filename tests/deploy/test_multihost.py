"""Workers on other hosts: the worker-only stack, the head host's override, the lint rules that
guard them (RAY011-RAY013) and the security group that must allow exactly their ports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from efsray.compose import lint_compose_text, lint_path
from efsray.compose.yamlio import load_yaml
from tests.fixtures.deploy import CFN_TEMPLATE, DEPLOY

WORKER = DEPLOY / "docker-compose.worker.yml"
MULTIHOST = DEPLOY / "docker-compose.multihost.yml"
WORKER_ENV = DEPLOY / ".env.worker.example"
ENV = {"RAY_HEAD_ADDRESS": "10.0.1.10", "RAY_NODE_IP": "10.0.1.11", "EFS_DNS_NAME": "fs.x"}


def _worker() -> dict[str, Any]:
    data = yaml.safe_load(WORKER.read_text())
    assert isinstance(data, dict)
    return data


def _rules(data: dict[str, Any], env: dict[str, str] | None = None) -> set[str]:
    text = yaml.safe_dump(data, sort_keys=False)
    return lint_compose_text(text, "worker", env=env if env is not None else ENV).rules()


def _command(data: dict[str, Any]) -> list[str]:
    return data["services"]["ray-worker"]["command"]


def test_worker_stack_and_its_env_example_are_lint_clean() -> None:
    assert lint_path(WORKER).findings == ()
    assert lint_path(WORKER_ENV).findings == ()
    assert lint_path(WORKER, env=ENV).findings == ()
    assert _rules(_worker()) == set()


@pytest.mark.parametrize(
    ("env", "rule"),
    [
        ({"RAY_HEAD_PORT": "10001"}, "RAY012"),  # the Ray Client port
        ({"RAY_HEAD_PORT": "8265"}, "RAY012"),  # the dashboard
        ({"RAY_HEAD_ADDRESS": "0.0.0.0"}, "RAY012"),
        ({"RAY_HEAD_ADDRESS": "127.0.0.1"}, "RAY012"),  # host network: its own loopback
        ({"RAY_NODE_IP": "0.0.0.0"}, "RAY013"),
    ],
    ids=["client-port", "dashboard-port", "all-interfaces", "loopback", "node-ip-0.0.0.0"],
)
def test_worker_stack_rules_fire_on_wrong_settings(env: dict[str, str], rule: str) -> None:
    assert rule in _rules(_worker(), {**ENV, **env})


def test_a_port_on_every_interface_or_unfixed_ports_are_found() -> None:
    published = _worker()
    service = published["services"]["ray-worker"]
    del service["network_mode"]
    service["ports"] = ["6380:6380"]
    assert "RAY003" in _rules(published)
    dashboard = _worker()
    _command(dashboard).append("--dashboard-host=0.0.0.0")
    assert "RAY013" in _rules(dashboard)
    unfixed = _worker()
    _command(unfixed)[:] = [w for w in _command(unfixed) if "--node-manager-port" not in w]
    assert "RAY011" in _rules(unfixed)


def _fixed_ports(command: list[str]) -> set[int]:
    ports: set[int] = set()
    options = dict(w[2:].split("=", 1) for w in command if w.startswith("--") and "=" in w)
    for key, value in options.items():
        if key.endswith("-port") and key not in ("dashboard-port", "ray-client-server-port"):
            ports.add(int(value.split(":-")[-1].rstrip("}")))
    low, high = int(options["min-worker-port"]), int(options["max-worker-port"])
    ports -= {low, high}
    return ports | set(range(low, high + 1))


def _ingress_ports() -> set[int]:
    from cfnlint.decode import decode

    template, _ = decode(str(CFN_TEMPLATE))
    ports: set[int] = set()
    for name, res in template["Resources"].items():
        if not isinstance(res, dict) or res.get("Type") != "AWS::EC2::SecurityGroupIngress":
            continue
        props = res["Properties"]
        assert props["GroupId"] == {"Ref": "RayNodesSecurityGroup"}, name
        assert props["SourceSecurityGroupId"] == {"Ref": "RayNodesSecurityGroup"}, name
        assert props["IpProtocol"] == "tcp", name
        ports |= set(range(int(props["FromPort"]), int(props["ToPort"]) + 1))
    return ports


def test_security_group_allows_exactly_the_fixed_ray_ports() -> None:
    pytest.importorskip("cfnlint", reason="cfn-lint is not installed")
    head = load_yaml(MULTIHOST.read_text()).data["services"]["ray-head"]["command"]
    worker = _command(_worker())
    head_ports = _fixed_ports(head) | {6379}
    # the worker joins the head's GCS port and fixes the same ports the head does
    assert "--address=${RAY_HEAD_ADDRESS:?" in " ".join(worker)
    assert _fixed_ports(worker) == head_ports - {6379}
    assert _ingress_ports() == head_ports
    assert 8265 not in _ingress_ports() and 10001 not in _ingress_ports()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="compose v2 is not installed")
def test_head_host_override_merges_into_a_lint_clean_production_stack(tmp_path: Path) -> None:
    """Compose itself merges production + multihost (with !reset); the result passes lint."""
    proc = subprocess.run(
        [
            str(shutil.which("docker-compose")),
            "-f",
            "docker-compose.production.yml",
            "-f",
            "docker-compose.multihost.yml",
            "config",
            "--no-interpolate",
        ],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    merged = yaml.safe_load(proc.stdout)
    head = merged["services"]["ray-head"]
    assert head["network_mode"] == "host" and "ports" not in head and "networks" not in head
    assert merged["services"]["ray-worker"]["deploy"]["replicas"] == 0
    report = lint_compose_text(proc.stdout, "merged", env=ENV, schema=False)
    assert report.findings == (), [f"{f.rule} {f.service}: {f.message}" for f in report.findings]
    assert re.search(r"--dashboard-host=127\.0\.0\.1", proc.stdout)
