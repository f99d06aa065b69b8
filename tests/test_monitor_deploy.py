"""deploy/monitoring: alert rules and the Grafana dashboard use metrics the exporter serves."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from efsray.monitor import EFSPerformanceMonitor, ProbeConfig
from tests.fixtures.monitor import escape_mount_point

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
CAPTURE = Path(__file__).parent / "data" / "mountstats" / "pcp-rhel8-kernel-4.18.0-105-rpc1.1.txt"
NAME = re.compile(r"\b(efsray_[a-z0-9_]+)")
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package 'prometheus', in .ci/apt-packages.txt)",
)


@pytest.fixture(scope="module")
def served_names(tmp_path_factory) -> set[str]:
    """Every sample name a populated exporter serves (an NFS mount included)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from efsray.monitor import MonitorMetrics

    tmp = tmp_path_factory.mktemp("deploy")
    data = tmp / "data"
    data.mkdir()
    stats = tmp / "mountstats"
    stats.write_text(CAPTURE.read_text().replace(" /mnt/nfsv3 ", f" {escape_mount_point(data)} "))
    config = ProbeConfig(latency_samples=5, metadata_files=3, throughput_bytes=64 * 1024,
                         block_bytes=64 * 1024)  # fmt: skip
    monitor = EFSPerformanceMonitor([data], config=config, mountstats_path=stats, timeout=60)
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    metrics.update(asyncio.run(monitor.collect()), 0.5)
    text = generate_latest(registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "efsray_nfs_rpc_operations_total" in names  # the NFS part is populated
    return names


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_alert_rules_are_complete_and_use_served_metrics(served_names: set[str]) -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = set(NAME.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= served_names, f"{rule['alert']} uses unknown metrics {used - served_names}"
    assert {"EfsrayMountHung", "EfsrayMountFailing", "EfsrayMonitorAbsent"} <= set(names)


def test_dashboard_is_well_formed_and_uses_served_metrics(served_names: set[str]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "mountpoint"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    for expr in dashboard_exprs():
        used = set(NAME.findall(expr))
        assert used and used <= served_names, f"{expr}: unknown {used - served_names}"
        assert '$mountpoint"' in expr  # every panel follows the mount selector


@needs_promtool
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    test = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=MONITORING,
                          capture_output=True, text=True)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"efsray:dashboard_query:{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$mountpoint", ".*")}
        for i, e in enumerate(dashboard_exprs())
    ]  # fmt: skip
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a typo in PromQL is caught."""
    broken = ALERTS.read_text().replace('efsray_mount_status{status="hung"} == 1',
                                        'efsray_mount_status{status="hung" == 1', 1)  # fmt: skip
    path = tmp_path / "alerts.yml"
    path.write_text(broken)
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True)
    assert check.returncode != 0
