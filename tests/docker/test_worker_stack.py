"""Workers on another host: a second compose project (deploy/docker-compose.worker.yml, the
extra EC2 host) joins the head of a first one (the head host, with docker-compose.multihost.yml)
over a network the test creates, standing for the VPC; its node runs tasks, on the same
EFS stand-in and with the head's token."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.docker._stack import HERE, Engine, Stack, wait_for

SUBNET, HEAD_IP, WORKER_IP = "10.231.7.0/24", "10.231.7.10", "10.231.7.20"

_TASKS = """
import json, socket, ray
ray.init(address="auto")
@ray.remote(num_cpus=1)
def where(i):
    path = f"/data/multihost/{i}"
    with open(path, "w") as f:
        f.write(socket.gethostname())
    return ray.util.get_node_ip_address()
alive = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
ran = sorted(set(ray.get([where.remote(i) for i in range(4)])))
print(json.dumps({"alive": sorted(alive), "ran": ran}))
"""


class Cluster(NamedTuple):
    head: Stack  # the head host's project
    worker: Stack  # the worker host's project
    efs: Path  # the host directory standing for the EFS mount of both


def _efs(root: Path) -> Path:
    """A directory standing for the host's efs-utils mount (docker-compose.efs-tls.yml)."""
    for sub in ("data", "data/multihost", "models", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(root / sub, 1000, 100)
    return root


@pytest.fixture(scope="module")
def cluster(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    top = tmp_path_factory.mktemp("multihost")
    efs = _efs(top / "efs")
    vpc = f"efsrayt{os.getpid()}vpc"
    engine.docker("network", "create", "--subnet", SUBNET, vpc)
    shared = {"EFS_HOST_MOUNT": str(efs), "VPC_NETWORK": vpc, "EFS_DNS_NAME": "unused.invalid"}
    head = Stack.create(
        engine,
        top / "head-host",
        ["docker-compose.yml", "docker-compose.efs-tls.yml", "docker-compose.multihost.yml",
         str(HERE / "compose" / "vpc-head.yml")],
        f"efsrayt{os.getpid()}h",
        env={**shared, "RAY_NODE_IP": HEAD_IP},
    )  # fmt: skip
    worker = Stack.create(
        engine,
        top / "worker-host",
        ["docker-compose.worker.yml", "docker-compose.efs-tls.yml",
         str(HERE / "compose" / "vpc-worker.yml")],
        f"efsrayt{os.getpid()}w",
        env={**shared, "RAY_NODE_IP": WORKER_IP, "RAY_HEAD_ADDRESS": HEAD_IP,
             "RAY_WORKER_NUM_CPUS": "2"},
        token=head.deploy / "secrets" / "ray_auth_token",
    )  # fmt: skip
    try:
        head.up("ray-head")
        worker.up()
        print(f"head host up in {head.up_seconds:.0f} s, worker host in {worker.up_seconds:.0f} s")
        yield Cluster(head, worker, efs)
    finally:
        worker.down()
        head.down()
        engine.docker("network", "rm", vpc, check=False)


def test_worker_host_joins_the_head_host_and_runs_its_tasks(cluster: Cluster) -> None:
    def run() -> dict[str, list[str]] | None:
        out = cluster.head.exec("ray-head", "python", "-c", _TASKS)
        answer = dict(json.loads(out.strip().splitlines()[-1]))
        return answer if WORKER_IP in answer["alive"] else None

    answer = wait_for("the worker host's node", run, timeout=180, every=5)
    assert answer["alive"] == sorted([HEAD_IP, WORKER_IP])
    # the head schedules nothing (--num-cpus=0): every task ran on the other "host"
    assert answer["ran"] == [WORKER_IP]
    # ... and wrote to the same EFS stand-in the head sees
    listing = cluster.head.exec("ray-head", "ls", "/data/multihost").split()
    assert sorted(listing) == ["0", "1", "2", "3"]


def test_healthcheck_turns_the_node_unhealthy_when_the_store_path_vanishes(
    cluster: Cluster,
) -> None:
    """The EFS stand-in's data directory is removed on the host (as when the host's EFS mount
    goes away under the bind): `efsray health` in the healthcheck fails, Docker marks the
    worker unhealthy."""
    worker = cluster.worker
    name = worker.containers("ray-worker")[0]["Name"]
    assert worker.inspect(name)["State"]["Health"]["Status"] == "healthy"
    shutil.rmtree(cluster.efs / "data")

    def status() -> str | None:
        health = worker.inspect(name)["State"]["Health"]
        return health["Status"] if health["Status"] == "unhealthy" else None

    assert wait_for("the worker unhealthy", status, timeout=120, every=2) == "unhealthy"
    last = worker.inspect(name)["State"]["Health"]["Log"][-1]
    assert last["ExitCode"] != 0
