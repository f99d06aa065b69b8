"""The local stack (deploy/docker-compose.yml) as a user runs it: head + 2 workers + EFS
monitor, token auth, a sweep submitted through the Ray Jobs API, results equal to a local
reference run exactly; then a worker container killed in the middle of a sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker._stack import HERE, Engine, Stack, wait_for
from tests.test_monitor_deploy import NAME, dashboard_exprs

DEMO = ["--symbols", "6", "--years", "0.5", "--timeframe", "1h"]
WORKERS = {"ray-worker": 2}
RAYLET_ENVIRON = (  # the environment of the container's raylet process, a line a variable
    "import pathlib; p = next(p for p in pathlib.Path('/proc').glob('[0-9]*') "
    "if b'/raylet/raylet' in (p / 'cmdline').read_bytes()); "
    "print((p / 'environ').read_bytes().replace(bytes(1), b'\\n').decode())"
)


@pytest.fixture(scope="module")
def local(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack.create(
        engine, tmp_path_factory.mktemp("local"), ["docker-compose.yml"], f"efsrayt{os.getpid()}l"
    )
    try:
        stack.up(workers=WORKERS)
        print(f"local stack up in {stack.up_seconds:.0f} s")
        yield stack
    finally:
        stack.down()


def _reference(tmp_path: Path, *args: str) -> dict[str, Any]:
    """The same demo in this process's Python, without Ray (--local): the reference."""
    proc = subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", "demo", *args, "--local", "--json",
         "--root", str(tmp_path / "reference")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout))


def _in_stack(stack: Stack, name: str, *args: str, root: str = "/data") -> str:
    """Submit the demo through the Jobs API (with the token); returns the job id."""
    command = " ".join(["efsray", "demo", *args, "--address", "auto", "--json", "--root", root])
    return stack.submit(f"{command} > /logs/{name}.json")


def _result(stack: Stack, name: str) -> dict[str, Any]:
    """The demo's JSON report. The driver's stdout also carries Ray's lines about its tasks
    (a retried task after a node died, ...): the report is the object from the first line
    that is just an opening brace."""
    text = stack.exec(stack.head, "cat", f"/logs/{name}.json")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "{"), 0)
    return dict(json.loads("\n".join(lines[start:])))


def _rankings(report: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between runs: every sweep's points and ranked metrics, exactly."""
    return {
        s["summary"]["strategy"]: {
            "points": s["summary"]["points"],
            "versions": s["summary"]["versions"],
            "ranking": s["ranking"],
        }
        for s in report["sweeps"]
    }


def test_three_nodes_join_with_the_token_the_containers_can_read(local: Stack) -> None:
    assert len(local.alive_nodes()) == 3
    # `efsray compose token` ran as root: the secret is the containers' uid's, mode 0600
    owner = local.exec("ray-worker", "stat", "-c", "%u:%g %a", "/run/secrets/ray_auth_token")
    assert owner.split() == ["1000:100", "600"]
    # every raylet runs with the stacks' longer agent deadline (see the compose files)
    for service in ("ray-head", "ray-worker"):
        environ = local.exec(service, "python", "-c", RAYLET_ENVIRON).splitlines()
        assert "RAY_agent_register_timeout_ms=120000" in environ, service
    # without the token the Jobs API refuses
    import urllib.error
    import urllib.request

    port = local.env["RAY_DASHBOARD_PORT"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)


def test_sweep_through_the_jobs_api_equals_the_local_reference(
    local: Stack, tmp_path: Path
) -> None:
    job = _in_stack(local, "demo", *DEMO)
    reference = _reference(tmp_path, *DEMO)
    local.wait_job(job)
    report = _result(local, "demo")
    assert _rankings(report) == _rankings(reference)
    for sweep in report["sweeps"]:
        assert sweep["summary"]["failed_tasks"] == 0
        assert sweep["summary"]["executor"] == "ray"
    # the tasks ran on every node (head --num-cpus=1 and both workers)
    assert max(s["summary"]["nodes"] for s in report["sweeps"]) == 3


def test_monitor_serves_metrics_and_health_on_the_compose_network(local: Stack) -> None:
    fetch = (
        "import sys, urllib.request as u; "
        "r = u.urlopen('http://efs-monitor:9641' + sys.argv[1], timeout=10); "
        "print(r.status); print(r.read().decode())"
    )
    metrics = local.exec("ray-head", "python", "-c", fetch, "/metrics")
    assert metrics.startswith("200") and "efsray_probes" in metrics
    health = local.exec("ray-head", "python", "-c", fetch, "/healthz")
    assert health.startswith("200") and json.loads(health.split("\n", 1)[1])["status"] in (
        "ok",
        "degraded",
    )


def test_monitoring_profile_scrapes_the_exporter_and_every_ray_node(local: Stack) -> None:
    """Prometheus (Debian's package; Grafana has none and is not started) on the stack, and
    the Grafana dashboard's queries run on it."""
    local.up("prometheus", profiles=("monitoring",))
    base = f"http://127.0.0.1:{local.env['PROMETHEUS_PORT']}"

    def targets() -> dict[str, list[str]] | None:
        with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10) as response:
            active = json.load(response)["data"]["activeTargets"]
        by_job: dict[str, list[str]] = {}
        for t in active:
            by_job.setdefault(t["labels"]["job"], []).append(t["health"])
        wanted = {"efsray": 1, "ray-head": 1, "ray-worker": 2}
        ok = all(by_job.get(j, []).count("up") == n for j, n in wanted.items())
        return by_job if ok else None

    assert wait_for("every target up", targets, timeout=180, every=3)
    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [r["name"] for g in groups for r in g["rules"]]
    assert rules, "the alert rules (deploy/monitoring/alerts.yml) did not load"

    # The Grafana dashboard, against this live Prometheus (Grafana itself has no Debian
    # package and is not started): every query evaluates, and every metric a panel names is
    # scraped, except the NFS client's counters, which only a kernel NFS mount's mountstats
    # give (the docker volumes here are not NFS; tests/test_monitor_deploy.py checks those
    # names against an exporter fed a captured mountstats).
    def api(path: str, **params: str) -> Any:
        url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            answer = json.load(response)
        assert answer["status"] == "success", (path, params, answer)
        return answer["data"]

    named = {
        n for e in dashboard_exprs() for n in NAME.findall(e) if not n.startswith("efsray_nfs_")
    }

    def all_scraped() -> bool:
        missing = named - set(api("label/__name__/values"))
        assert not missing, f"not scraped: {sorted(missing)}"  # wait_for reports the last
        return True

    # the exporter's first probe cycle may still be running at the first scrape: poll
    wait_for("every dashboard metric scraped", all_scraped, timeout=120, every=5)
    for expr in dashboard_exprs():
        api("query", query=expr.replace("$__rate_interval", "1m").replace("$mountpoint", ".*"))

    # Ray's own dashboards (those its Metrics view embeds), written by the head onto the logs
    # volume where Grafana's `ray` provider loads them (tests/deploy checks the paths agree)
    ray_dir = "/logs/ray-grafana-dashboards"
    assert "default_grafana_dashboard.json" in local.exec("ray-head", "ls", ray_dir).split()
    text = local.exec("ray-head", "cat", f"{ray_dir}/default_grafana_dashboard.json")
    assert json.loads(text)["uid"] == "rayDefaultDashboard"


def test_neon_profile_connector_stays_up_and_syncs_the_results(local: Stack) -> None:
    """--profile neon with a real PostgreSQL container standing for Neon."""
    local.files.append(str(HERE / "compose" / "postgres.yml"))
    local.env["POSTGRES_PASSWORD"] = "t-" + os.urandom(8).hex()
    local.env["NEON_CONNECTION_STRING"] = (
        f"postgresql://efsray:{local.env['POSTGRES_PASSWORD']}@postgres:5432/postgres"
        "?sslmode=disable"  # the stand-in has no TLS; Neon requires it
    )
    local.up("postgres", "neon-connector", profiles=("neon",))
    query = "select count(*) from efsray.backtest_runs"

    def synced() -> int:
        out = local.exec("postgres", "psql", "-h", "/tmp", "-U", "efsray", "-d",
                         "postgres", "-tAc", query)  # fmt: skip
        return int(out.strip() or 0)

    assert wait_for("the connector's first sync", synced, timeout=240, every=5) > 0
    connector = local.containers("neon-connector")[0]
    assert local.inspect(connector["Name"])["RestartCount"] == 0


def test_connector_image_runs_the_cli(engine: Engine) -> None:
    """The crash loop of issue 16: the connector image's CLI starts (no `import click`)."""
    out = engine.docker(
        "run", "--rm", engine.images["EFSRAY_CONNECTOR_IMAGE"], "efsray", "sync", "--help"
    )
    assert "Usage" in out


def test_worker_killed_mid_sweep_the_sweep_completes_exactly(local: Stack, tmp_path: Path) -> None:
    args = ["--symbols", "8", "--years", "1", "--seed", "11"]
    root = "/data/failover"  # its own store: the same symbols with other bars
    job = _in_stack(local, "failover", *args, root=root)
    # wait until the sweep's tasks are running, then kill one worker's container
    find = f"find {root}/results/sweeps -path '*/attempts/*' -type f 2>/dev/null | head -1"
    wait_for(
        "sweep tasks to start",
        lambda: local.exec("ray-head", "sh", "-c", find).strip(),
        timeout=300,
    )
    victim = local.containers("ray-worker")[0]["Name"]
    local.engine.docker("kill", victim)
    try:
        reference = _reference(tmp_path, *args)
        local.wait_job(job)
        report = _result(local, "failover")
        assert _rankings(report) == _rankings(reference)
        assert all(s["summary"]["failed_tasks"] == 0 for s in report["sweeps"])
        # no partial result on the volume: every stored run of the sweeps is listed and whole
        for sweep in report["sweeps"]:
            sweep_id = sweep["summary"]["sweep_id"]
            listing = ["efsray", "results", "ls", "--root", root, "--json"]
            runs = json.loads(local.exec("ray-head", *listing, "--tag", f"sweep={sweep_id}"))
            assert len(runs) == sweep["summary"]["points"], sweep_id
    finally:
        # the stack recovers: the killed worker comes back and rejoins
        local.up(workers=WORKERS, staged=False)
        wait_for("3 alive nodes", lambda: len(local.alive_nodes()) >= 3, timeout=300)


def test_head_restarted_mid_sweep_workers_rejoin_and_a_resubmit_resumes(
    local: Stack, tmp_path: Path
) -> None:
    """Ray keeps no cluster state across a head restart without GCS fault tolerance (an
    external Redis): the running job, its driver and its tasks are lost, and workers' raylets
    exit once the GCS has been gone for gcs_rpc_server_reconnect_timeout_s (60 s); with
    `ray start --block` and `restart: unless-stopped` their containers restart and join the
    new head. What survives is the store: every result committed before the restart is
    reused when the same sweep is submitted again, and the results are still exact."""
    args = ["--symbols", "6", "--years", "1", "--seed", "23"]
    root = "/data/headrestart"
    _in_stack(local, "headrestart-1", *args, root=root)
    # committed batches of the results tables: their version manifests (docs/backtest.md)
    count = f"find {root}/results/tables -path '*/versions/*' -name 'v*.json' 2>/dev/null | wc -l"
    wait_for(
        "some results committed",
        lambda: int(local.exec("ray-head", "sh", "-c", count).strip() or 0) > 0,
        timeout=300,
    )
    head = local.containers("ray-head")[0]["Name"]
    local.engine.docker("restart", "--time", "5", head, timeout=180)
    wait_for("the head healthy again", lambda: local.jobs_api("GET", "/api/version"), timeout=300)
    wait_for("3 alive nodes", lambda: len(local.alive_nodes()) >= 3, timeout=420, every=5)
    job = _in_stack(local, "headrestart-2", *args, root=root)
    reference = _reference(tmp_path, *args)
    local.wait_job(job)
    report = _result(local, "headrestart-2")
    assert _rankings(report) == _rankings(reference)
    assert sum(s["summary"]["reused"] for s in report["sweeps"]) > 0
