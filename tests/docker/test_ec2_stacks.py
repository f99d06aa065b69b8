"""The EC2 stacks, cloud and production, each with the efs-tls override (the volumes bind a
host directory standing for the host's efs-utils mount: no kernel NFS client here), its
connector on a PostgreSQL container standing for Neon, and the same sweep as the local stack.
One stack at a time (module-scoped, parametrized): each is brought up, swept and taken down
(`down -v`) before the next."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docker._stack import HERE, Engine, Stack
from tests.docker.test_local_stack import DEMO, _in_stack, _rankings, _reference, _result


@dataclass(frozen=True, slots=True)
class Shape:
    """What differs between the two stacks as the tests drive them."""

    file: str
    head: str
    worker: str
    env: dict[str, str]
    nodes_used: int  # nodes the sweep's tasks run on


SHAPES = {
    # the head schedules tasks too (RAY_HEAD_NUM_CPUS, 1 here): the sweep runs on 3 nodes
    "cloud": Shape("docker-compose.cloud.yml", "ray-head-cloud", "ray-worker-cloud",
                   {"RAY_HEAD_NUM_CPUS": "1"}, 3),
    # the head has --num-cpus=0: the sweep runs on the two workers only
    "production": Shape("docker-compose.production.yml", "ray-head", "ray-worker", {}, 2),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(SHAPES))
def ec2(
    request: pytest.FixtureRequest, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Shape, Stack]]:
    name: str = request.param
    shape = SHAPES[name]
    top = tmp_path_factory.mktemp(name)
    for sub in ("data", "models", "logs"):  # the access point's directories, uid 1000 gid 100
        (top / "efs" / sub).mkdir(parents=True)
        os.chown(top / "efs" / sub, 1000, 100)
    password = "t-" + os.urandom(8).hex()
    stack = Stack.create(
        engine,
        top,
        [shape.file, "docker-compose.efs-tls.yml", str(HERE / "compose" / "postgres.yml")],
        f"efsrayt{os.getpid()}{name[0]}",
        env={
            "EFS_HOST_MOUNT": str(top / "efs"),
            "EFS_DNS_NAME": "unused.invalid",
            "RAY_WORKER_REPLICAS": "2",
            "RAY_WORKER_NUM_CPUS": "1",
            "POSTGRES_PASSWORD": password,
            "NEON_CONNECTION_STRING": f"postgresql://efsray:{password}@postgres:5432/postgres"
            "?sslmode=disable",
            **shape.env,
        },
        head=shape.head,
        worker=shape.worker,
    )
    try:
        stack.up(profiles=("neon",), workers={shape.worker: 2})
        print(f"{name} stack up in {stack.up_seconds:.0f} s")
        yield shape, stack
    finally:
        stack.down()


def test_ec2_stack_runs_the_sweep_on_efs_with_its_connector(
    ec2: tuple[Shape, Stack], tmp_path: Path
) -> None:
    shape, stack = ec2
    assert len(stack.alive_nodes()) == 3
    job = _in_stack(stack, "demo", *DEMO)
    reference = _reference(tmp_path, *DEMO)
    stack.wait_job(job)
    report = _result(stack, "demo")
    assert _rankings(report) == _rankings(reference)
    assert all(s["summary"]["failed_tasks"] == 0 for s in report["sweeps"])
    assert max(s["summary"]["nodes"] for s in report["sweeps"]) == shape.nodes_used
    # the store is the bound host directory, as on an efs-utils mount
    assert (stack.workdir / "efs" / "data" / "results").is_dir()
    connector = stack.containers("neon-connector")[0]
    assert stack.inspect(connector["Name"])["RestartCount"] == 0
    assert json.loads(stack.exec("neon-connector", "efsray", "health", "--json"))
