"""The production stack with the efs-tls override (the volumes bind a host directory standing
for the host's efs-utils mount: no kernel NFS client here), its connector on a PostgreSQL
container standing for Neon, and the same sweep as the local stack, run by the workers only
(the head has --num-cpus=0)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker._stack import HERE, Engine, Stack
from tests.docker.test_local_stack import DEMO, _in_stack, _rankings, _reference, _result

WORKERS = {"ray-worker": 2}


@pytest.fixture(scope="module")
def production(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    top = tmp_path_factory.mktemp("production")
    for sub in ("data", "models", "logs"):
        (top / "efs" / sub).mkdir(parents=True)
        os.chown(top / "efs" / sub, 1000, 100)
    password = "t-" + os.urandom(8).hex()
    stack = Stack.create(
        engine,
        top,
        ["docker-compose.production.yml", "docker-compose.efs-tls.yml",
         str(HERE / "compose" / "postgres.yml")],
        f"efsrayt{os.getpid()}p",
        env={
            "EFS_HOST_MOUNT": str(top / "efs"),
            "EFS_DNS_NAME": "unused.invalid",
            "RAY_WORKER_REPLICAS": "2",
            "RAY_WORKER_NUM_CPUS": "1",
            "POSTGRES_PASSWORD": password,
            "NEON_CONNECTION_STRING": f"postgresql://efsray:{password}@postgres:5432/postgres"
            "?sslmode=disable",
        },
    )  # fmt: skip
    try:
        stack.up(profiles=("neon",), workers=WORKERS)
        print(f"production stack up in {stack.up_seconds:.0f} s")
        yield stack
    finally:
        stack.down()


def test_production_stack_runs_the_sweep_on_its_workers(production: Stack, tmp_path: Path) -> None:
    assert len(production.alive_nodes()) == 3
    job = _in_stack(production, "demo", *DEMO)
    reference = _reference(tmp_path, *DEMO)
    production.wait_job(job)
    report = _result(production, "demo")
    assert _rankings(report) == _rankings(reference)
    # the head schedules nothing: the tasks ran on the two workers
    assert max(s["summary"]["nodes"] for s in report["sweeps"]) == 2
    # the store is the bound host directory, as on an efs-utils mount
    assert (production.workdir / "efs" / "data" / "results").is_dir()
    connector = production.containers("neon-connector")[0]
    assert production.inspect(connector["Name"])["RestartCount"] == 0
    assert json.loads(production.exec("neon-connector", "efsray", "health", "--json"))
