"""Rules for Ray nodes that span hosts (the worker-only stack, host networking): a worker must
join the head's GCS port at a real address, and nothing may listen on every interface."""

from __future__ import annotations

from collections.abc import Iterator

from efsray.compose.model import ComposeDoc
from efsray.compose.rules._base import ALL_INTERFACES, RAY_PORTS, E, Hit, Rule, info

__all__ = ["RULES"]

GCS_PORT = "6379"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _worker_head_address(doc: ComposeDoc) -> Iterator[Hit]:
    services = list(doc.services())
    if any(svc.is_ray_head for svc in services):
        return  # a head in the same file: RAY001 checks the address against its ports
    for svc in services:
        host_network = svc.text(svc.get("network_mode")) == "host"
        for start in svc.ray_starts():
            address = start.get("address")
            if start.head or not address:
                continue
            host, _, port = address.rpartition(":")
            problem = None
            if not host or not port:
                problem = f"--address={address} has no port: workers join HOST:{GCS_PORT}"
            elif port != GCS_PORT and port in RAY_PORTS:
                problem = (
                    f"--address={address} is {RAY_PORTS[port]} ({port}), not the head's GCS "
                    f"port ({GCS_PORT})"
                )
            elif host in ALL_INTERFACES:
                problem = f"--address={address} names a listen-on-everything address, not a host"
            elif host_network and host in _LOOPBACK:
                problem = (
                    f"--address={address}: with host networking the head is on another host, "
                    "not on this one's loopback"
                )
            if problem:
                yield Hit(problem, svc.name, ("services", svc.name, "command"))


RAY012 = Rule(
    info(
        "RAY012",
        "worker-stack-head-address",
        E,
        "A worker-only stack joins a head on another host through its GCS port (6379). "
        "The dashboard (8265), Ray Client (10001), agent (52365) or metrics (8080) ports, "
        "0.0.0.0 or this host's loopback never reach the head's GCS: the worker never joins.",
        "Set RAY_HEAD_ADDRESS to the head host's private IP and leave RAY_HEAD_PORT at 6379: "
        "`ray start --address=${RAY_HEAD_ADDRESS}:6379 --block`.",
    ),
    _worker_head_address,
)

_LISTEN_OPTIONS = ("node-ip-address", "dashboard-host", "ray-client-server-host")


def _listens_everywhere(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.text(svc.get("network_mode")) != "host":
            continue  # on a bridge network 0.0.0.0 is the container's own interface
        for start in svc.ray_starts():
            for option in _LISTEN_OPTIONS:
                value = start.get(option)
                if value is not None and value in ALL_INTERFACES:
                    yield Hit(
                        f"--{option}={value} with network_mode: host listens on every "
                        "interface of the host",
                        svc.name,
                        ("services", svc.name, "command"),
                    )
        for segment in svc.segments():
            if segment[:2] == ["efsray", "monitor"]:
                for i, word in enumerate(segment[:-1]):
                    if word == "--host" and segment[i + 1] in ALL_INTERFACES:
                        yield Hit(
                            "`efsray monitor --host 0.0.0.0` with network_mode: host listens "
                            "on every interface of the host",
                            svc.name,
                            ("services", svc.name, "command"),
                        )


RAY013 = Rule(
    info(
        "RAY013",
        "host-network-listens-on-all-interfaces",
        E,
        "With network_mode: host, 0.0.0.0 is every interface of the EC2 host, public ones "
        "included: anyone who reaches a Ray port can run code on the cluster "
        "(CVE-2023-48022).",
        "Advertise and listen on the host's private IP (--node-ip-address=${RAY_NODE_IP}); "
        "keep the dashboard on 127.0.0.1 and reach it through an SSH tunnel.",
    ),
    _listens_everywhere,
)

RULES: tuple[Rule, ...] = (RAY012, RAY013)
