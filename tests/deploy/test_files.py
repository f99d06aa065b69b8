"""The shipped deployment files: lint-clean, schema-valid, and tied to the code they depend on
(NFS options, Ray version, ports, names), so that none of them can drift unnoticed."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from efsray.compose import (
    DNS_PLACEHOLDER,
    EFS_VOLUMES,
    RAY_VERSION,
    efs_volumes,
    lint_compose_text,
    lint_path,
)
from efsray.compose.model import Service
from efsray.config import load_settings
from efsray.mount.options import RECOMMENDED_OPTIONS
from tests.fixtures.deploy import (
    DEPLOY,
    EFS_STACKS,
    ENV_EXAMPLE,
    ROOT,
    SHIPPED_COMPOSE,
    TLS_OVERRIDE,
)

ALL_COMPOSE = (*SHIPPED_COMPOSE, TLS_OVERRIDE)


def _load(path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


# --- lint and schema ---------------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_COMPOSE, ids=lambda p: p.name)
def test_shipped_compose_file_is_lint_clean(path) -> None:
    report = lint_path(path)
    assert report.findings == (), [f"{f.rule} {f.service}: {f.message}" for f in report.findings]


def test_env_example_is_lint_clean_and_loads() -> None:
    assert lint_path(ENV_EXAMPLE).findings == ()
    settings = load_settings(ENV_EXAMPLE)
    assert settings.ray_head_port == 6379
    assert settings.efs_dns_name and settings.efs_dns_name.endswith(".amazonaws.com")


@pytest.mark.skipif(
    shutil.which("check-jsonschema") is None, reason="check-jsonschema is not installed"
)
def test_shipped_compose_files_pass_check_jsonschema() -> None:
    """Independently of our schema module: check-jsonschema's own CLI and bundled schema."""
    proc = subprocess.run(
        ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", *map(str, ALL_COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the NFS options come from one place ----------------------------------------------------
@pytest.mark.parametrize("path", EFS_STACKS, ids=lambda p: p.name)
def test_efs_volumes_are_the_rendered_ones(path) -> None:
    volumes = _load(path)["volumes"]
    rendered = efs_volumes(DNS_PLACEHOLDER)
    for name, _ in EFS_VOLUMES:
        assert volumes[name] == rendered[name], name


@pytest.mark.parametrize("path", EFS_STACKS, ids=lambda p: p.name)
def test_efs_volume_options_are_the_recommended_options(path) -> None:
    """Read the options straight from the file and compare with mount/options.py."""
    for name, _ in EFS_VOLUMES:
        o = _load(path)["volumes"][name]["driver_opts"]["o"]
        addr, *options = re.split(r",(?![^{]*\})", o)
        assert addr == f"addr={DNS_PLACEHOLDER}"
        assert tuple(options) == RECOMMENDED_OPTIONS
        assert "intr" not in options


def test_tls_override_binds_the_same_directories() -> None:
    """The efs-utils override mounts the access point root on the host; its subdirectories
    must be the ones the NFS volumes mount, volume by volume."""
    override = _load(TLS_OVERRIDE)["volumes"]
    nfs = _load(EFS_STACKS[0])["volumes"]
    assert set(override) == {name for name, _ in EFS_VOLUMES}
    for name, sub in EFS_VOLUMES:
        opts = override[name]["driver_opts"]
        assert opts["type"] == "none" and opts["o"] == "bind"
        assert opts["device"].endswith(f"/{sub}")
        assert nfs[name]["driver_opts"]["device"] == f":/efsray/{sub}"


def test_access_point_root_matches_the_volume_devices() -> None:
    template = (DEPLOY / "aws" / "efs.yml").read_text()
    default = re.search(r"RootDirectoryPath:\n(?:\s+.*\n)*?\s+Default: (\S+)", template)
    assert default is not None
    assert default.group(1) == "/efsray"
    assert (
        efs_volumes("fs-1.efs.us-east-1.amazonaws.com")["efs-logs"]["driver_opts"]["device"]
        == f":{default.group(1)}/logs"
    )


# --- names the users know -------------------------------------------------------------------
def test_seed_service_and_volume_names_are_kept() -> None:
    cloud = _load(DEPLOY / "docker-compose.cloud.yml")
    production = _load(DEPLOY / "docker-compose.production.yml")
    local = _load(DEPLOY / "docker-compose.yml")
    assert {"ray-head-cloud", "ray-worker-cloud", "neon-connector"} <= set(cloud["services"])
    assert {"ray-head", "ray-worker", "neon-connector", "efs-monitor"} <= set(
        production["services"]
    )
    assert {"ray-head", "ray-worker", "efs-monitor"} <= set(local["services"])
    for data in (cloud, production, local):
        assert {"efs-shared-data", "efs-model-cache", "efs-logs"} <= set(data["volumes"])


# --- one Ray version everywhere -------------------------------------------------------------
def test_ray_version_is_the_same_everywhere() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The package admits a range of Ray (users run their own); the image pins one version of
    # it, the one CI tests, and both ray extras admit it.
    ray_reqs = [Requirement(dep) for dep in pyproject["project"]["optional-dependencies"]["ray"]]
    assert {r.name for r in ray_reqs} == {"ray"} and ray_reqs
    for req in ray_reqs:
        assert req.specifier.contains(RAY_VERSION), (str(req), RAY_VERSION)
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1) == RAY_VERSION
    # The default base is the official image of that version; offline builds pass another.
    assert "ARG RAY_BASE_IMAGE=rayproject/ray:${RAY_VERSION}-" in dockerfile
    assert "FROM ${RAY_BASE_IMAGE}" in dockerfile
    for path in SHIPPED_COMPOSE:
        for name, spec in _load(path)["services"].items():
            build = spec.get("build")
            if isinstance(build, dict) and build.get("dockerfile") == "deploy/docker/Dockerfile":
                assert build["args"]["RAY_VERSION"] == RAY_VERSION, (path.name, name)


def test_dockerfiles_are_pinned_and_run_unprivileged() -> None:
    for name in ("Dockerfile", "Dockerfile.neon"):
        text = (DEPLOY / "docker" / name).read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
        froms = [
            re.sub(r"\$\{(\w+)\}", lambda m, a=args: a[m.group(1)], f)  # type: ignore[misc]
            for f in re.findall(r"^FROM (\S+)", text, re.M)
        ]
        assert froms and all(":" in f and not f.endswith(":latest") for f in froms)
        # BuildKit fetches a `# syntax=` frontend from Docker Hub: offline builds fail.
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), name
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] in ("1000:100", "ray"), name
        assert (DEPLOY / "docker" / f"{name}.dockerignore").is_file()


# --- ports, commands and config that must agree ---------------------------------------------
def _services(path) -> dict[str, Service]:
    return {n: Service(n, s) for n, s in _load(path)["services"].items()}


@pytest.mark.parametrize("path", SHIPPED_COMPOSE, ids=lambda p: p.name)
def test_prometheus_targets_exist_in_every_stack(path) -> None:
    """prometheus.yml scrapes names and ports; every stack must provide them."""
    prom = _load(DEPLOY / "monitoring" / "prometheus.yml")
    data = _load(path)
    names = set(data["services"])
    for spec in data["services"].values():
        nets = spec.get("networks")
        if isinstance(nets, dict):
            for net in nets.values():
                names |= set((net or {}).get("aliases", []))
    services = _services(path)
    ray_nodes = [s for s in services.values() if s.ray_starts()]
    metrics_ports = {s.ray_starts()[0].get("metrics-export-port") for s in ray_nodes}
    monitor = services["efs-monitor"]
    monitor_words = monitor.segments()[0]
    monitor_port = monitor_words[monitor_words.index("--port") + 1]
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert set(sd["names"]) <= names, (job["job_name"], path.name)
            assert {str(sd["port"])} == metrics_ports
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "efs-monitor":
                    assert port == monitor_port
                else:
                    assert host in names or host == "127.0.0.1", target
    assert f"127.0.0.1:{monitor_port}/healthz" in monitor.healthcheck_script()
    assert monitor_words[monitor_words.index("--host") + 1] == "0.0.0.0"  # scraped, unpublished
    assert not monitor.ports()
    datasource = _load(DEPLOY / "monitoring/grafana/provisioning/datasources/prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in names


@pytest.mark.parametrize("path", SHIPPED_COMPOSE, ids=lambda p: p.name)
def test_ray_nodes_join_and_check_the_right_ports(path) -> None:
    services = _services(path)
    heads = [s for s in services.values() if s.is_ray_head]
    workers = [s for s in services.values() if s.ray_starts() and not s.is_ray_head]
    assert len(heads) == 1 and workers
    head = heads[0]
    start = head.ray_starts()[0]
    assert start.block and start.get("port") == "6379"
    for worker in workers:
        w = worker.ray_starts()[0]
        assert w.block
        assert w.get("address") == f"{head.name}:{start.get('port')}"
    for node in (head, *workers):
        script = node.healthcheck_script()
        assert "127.0.0.1:52365/api/healthz" in script  # the dashboard agent's default port
        assert "efsray health" in script
        assert node.get("init") is True
    # published: the head's dashboard, on loopback only
    assert all(p.host_ip == "127.0.0.1" for p in head.ports())
    assert "8265" in {p.target for p in head.ports()}
    assert all(not w.ports() for w in workers)


@pytest.mark.parametrize("path", SHIPPED_COMPOSE, ids=lambda p: p.name)
def test_bind_sources_and_build_files_exist(path) -> None:
    data = _load(path)
    for name, spec in data["services"].items():
        for m in Service(name, spec).mounts():
            if m.type == "bind" and m.source and m.source.startswith("./"):
                assert (DEPLOY / m.source).exists(), (name, m.source)
        build = spec.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), (name, build)
    for name, secret in data.get("secrets", {}).items():
        # secret files are created by `efsray compose token`; their directory ships
        file = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", secret["file"])
        assert (DEPLOY / file).parent.is_dir(), name


def test_secret_files_are_ignored_by_git() -> None:
    proc = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/secrets/ray_auth_token"], cwd=ROOT, check=False
    )
    assert proc.returncode == 0


# --- the rules fire on the shipped shapes too (anchors, merges, long syntax) ----------------
def _cloud() -> dict[str, Any]:
    return copy.deepcopy(_load(DEPLOY / "docker-compose.cloud.yml"))


def _mutate(fn: Callable[[dict[str, Any]], None]) -> set[str]:
    data = _cloud()
    fn(data)
    return lint_compose_text(yaml.safe_dump(data, sort_keys=False), "mutated").rules()


def _worker_cmd(d: dict[str, Any]) -> list[str]:
    return d["services"]["ray-worker-cloud"]["command"]


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("RAY009", lambda d: _worker_cmd(d).remove("--block")),
    (
        "RAY001",
        lambda d: _worker_cmd(d).__setitem__(2, "--address=ray-head-cloud:10001"),
    ),
    ("RAY003", lambda d: d["services"]["ray-head-cloud"]["ports"].append("6379:6379")),
    ("RAY004", lambda d: d["services"]["ray-worker-cloud"]["environment"].pop("RAY_AUTH_MODE")),
    ("RAY007", lambda d: d["services"]["ray-worker-cloud"].pop("secrets")),
    ("RAY008", lambda d: d["services"]["ray-head-cloud"].pop("shm_size")),
    ("CMP001", lambda d: d.update(version="3.8")),
    ("CMP002", lambda d: d["services"]["ray-worker-cloud"].update(container_name="w")),
    (
        "EFS001",
        lambda d: d["volumes"]["efs-logs"]["driver_opts"].update(
            o=d["volumes"]["efs-logs"]["driver_opts"]["o"] + ",intr"
        ),
    ),
    (
        "EFS002",
        lambda d: d["volumes"]["efs-logs"]["driver_opts"].update(
            o=d["volumes"]["efs-logs"]["driver_opts"]["o"].replace("hard", "soft")
        ),
    ),
    ("HC005", lambda d: d["services"]["ray-worker-cloud"]["healthcheck"].update(test="true")),
    ("HC001", lambda d: d["services"]["neon-connector"].pop("healthcheck")),
    ("SVC002", lambda d: d["services"]["efs-monitor"].update(command=["sleep", "infinity"])),
    ("PRT001", lambda d: d["services"]["grafana"]["ports"].append("3000:3000")),
]


@pytest.mark.parametrize(("rule", "mutation"), MUTATIONS, ids=[r for r, _ in MUTATIONS])
def test_rule_fires_on_a_mutated_shipped_file(rule, mutation) -> None:
    assert _mutate(lambda d: None) == set()  # the unmutated dump is clean
    assert rule in _mutate(mutation)


def test_lint_cli_on_shipped_files_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", "compose", "lint", "--strict", "--json"]
        + [str(p) for p in (*ALL_COMPOSE, ENV_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_loads_the_alert_rules_but_not_their_unit_tests() -> None:
    from fnmatch import fnmatch

    (pattern,) = _load(DEPLOY / "monitoring" / "prometheus.yml")["rule_files"]
    assert fnmatch("/etc/efsray/monitoring/alerts.yml", pattern)
    assert not fnmatch("/etc/efsray/monitoring/alerts_test.yml", pattern)
    for path in SHIPPED_COMPOSE:
        prometheus = Service("prometheus", _load(path)["services"]["prometheus"])
        mounts = {m.target: m for m in prometheus.mounts()}
        assert mounts["/etc/efsray/monitoring"].source == "./monitoring"
        assert mounts["/etc/efsray/monitoring"].read_only
        assert pattern.startswith("/etc/efsray/monitoring/")


def test_services_reading_a_secret_run_as_the_uid_the_secret_is_written_for() -> None:
    """Compose bind-mounts a `file:` secret with the host file's owner and mode (0600, owned
    1000:100, from `efsray compose token`): a service from another image (Grafana runs as 472)
    must run as that uid/gid, or it cannot read its secret."""
    from efsray.compose.token import CONTAINER_GID, CONTAINER_UID

    for path in SHIPPED_COMPOSE:
        for name, spec in _load(path)["services"].items():
            if not spec.get("secrets") or "EFSRAY_IMAGE" in str(spec.get("image", "")):
                continue  # the efsray image's user is uid 1000 gid 100 (deploy/docker)
            assert spec.get("user") == f"{CONTAINER_UID}:{CONTAINER_GID}", (path.name, name)


def test_grafana_loads_every_dashboard_under_deploy_monitoring() -> None:
    provider = _load(DEPLOY / "monitoring/grafana/provisioning/dashboards/efsray.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/efsray/monitoring"
    for path in SHIPPED_COMPOSE:
        grafana = Service("grafana", _load(path)["services"]["grafana"])
        targets = {m.target: m.source for m in grafana.mounts()}
        assert targets["/etc/efsray/monitoring"] == "./monitoring"
        assert targets["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"


def test_grafana_provisions_the_dashboards_the_ray_head_writes() -> None:
    """The Ray head writes Ray's Grafana dashboards (RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR)
    into a volume that Grafana mounts read-only, at the path its `ray` provider loads."""
    providers = _load(DEPLOY / "monitoring/grafana/provisioning/dashboards/efsray.yml")
    ray_path = next(p["options"]["path"] for p in providers["providers"] if p["name"] == "ray")
    for path in SHIPPED_COMPOSE:
        services = _load(path)["services"]
        if "grafana" not in services:
            continue
        key = "RAY_METRICS_GRAFANA_DASHBOARD_OUTPUT_DIR"
        heads = [s for s in services.values() if key in (s.get("environment") or {})]
        assert len(heads) == 1, path.name
        out = heads[0]["environment"][key]
        head = Service("head", heads[0])
        mount = next(m for m in head.mounts() if out.startswith(m.target.rstrip("/") + "/"))
        grafana = {m.source: m for m in Service("grafana", services["grafana"]).mounts()}
        seen = grafana[mount.source]
        assert seen.read_only, path.name
        assert ray_path == seen.target.rstrip("/") + out[len(mount.target.rstrip("/")) :]


def test_rendered_volumes_are_efsmountconfigs() -> None:
    """The renderer delegates to the mount subsystem: same driver_opts, volume by volume."""
    from efsray.mount import EFSMountConfig

    volumes = efs_volumes(DNS_PLACEHOLDER)
    for name, sub in EFS_VOLUMES:
        mount = EFSMountConfig(
            "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com",
            "/data",
            export_path=f"/efsray/{sub}",
        )
        assert mount.compose_driver_opts(addr=DNS_PLACEHOLDER) == volumes[name]["driver_opts"]
