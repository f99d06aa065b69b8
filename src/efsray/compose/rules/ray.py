"""Ray rules: the GCS port, published ports, token auth, shared memory, --block, versions."""

from __future__ import annotations

import re
from collections.abc import Iterator

from efsray.compose.model import ComposeDoc, parse_size
from efsray.compose.rules._base import (
    ALL_INTERFACES,
    MIN_SHM,
    RAY_PORTS,
    RAY_VERSION,
    E,
    Hit,
    Rule,
    W,
    env_value,
    granted_secret_paths,
    image_tag,
    info,
)

__all__ = ["RULES"]


def _worker_client_port(doc: ComposeDoc) -> Iterator[Hit]:
    client_ports = {"10001"}
    for svc in doc.services():
        for start in svc.ray_starts():
            port = start.get("ray-client-server-port")
            if start.head and port:
                client_ports.add(port)
    for svc in doc.services():
        for start in svc.ray_starts():
            address = start.get("address")
            if start.head or not address:
                continue
            port = address.rsplit(":", 1)[-1] if ":" in address else ""
            if address.startswith("ray://") or port in client_ports:
                yield Hit(
                    f"`ray start --address={address}` points a worker at the Ray Client port",
                    svc.name,
                    ("services", svc.name, "command"),
                )


RAY001 = Rule(
    info(
        "RAY001",
        "worker-joins-client-port",
        E,
        "Workers join the head's GCS port (6379); 10001 is the Ray Client server for "
        "ray:// drivers. A worker pointed at 10001 never joins the cluster.",
        "Use `ray start --address=HEAD:6379 --block` on workers.",
    ),
    _worker_client_port,
)


def _ray_address_env(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        present, value = env_value(svc, "RAY_ADDRESS")
        if not present or not value or value == "auto":
            continue
        host = value.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
        port = value.rsplit(":", 1)[-1] if ":" in value.removeprefix("ray://") else ""
        problem = None
        if host in ALL_INTERFACES:
            problem = f"RAY_ADDRESS={value} names a listen-on-everything address, not a host"
        elif not value.startswith("ray://") and port == "10001":
            problem = f"RAY_ADDRESS={value} is the Ray Client port without the ray:// scheme"
        elif value.startswith("ray://") and port == "6379":
            problem = f"RAY_ADDRESS={value} uses ray:// with the GCS port"
        if problem:
            yield Hit(problem, svc.name, ("services", svc.name, "environment"))


RAY002 = Rule(
    info(
        "RAY002",
        "ray-address-invalid",
        E,
        "RAY_ADDRESS is where drivers in the container connect: HOST:6379 (GCS) or "
        "ray://HOST:10001 (Ray Client). 0.0.0.0 is a listen address, not a host to "
        "connect to, and the client port needs the ray:// scheme.",
        "Set RAY_ADDRESS=ray-head:6379 (or `auto` inside a Ray node), or remove it.",
    ),
    _ray_address_env,
)


def _ray_port_published(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not svc.is_ray:
            continue
        for i, p in enumerate(svc.ports()):
            if p.host_ip in ALL_INTERFACES:
                label = RAY_PORTS.get(p.target, "a Ray port")
                yield Hit(
                    f"port {p.raw!r} publishes container port {p.target} ({label}) on every "
                    "interface of the host",
                    svc.name,
                    ("services", svc.name, "ports", i),
                )


RAY003 = Rule(
    info(
        "RAY003",
        "ray-port-published-on-all-interfaces",
        E,
        "Anyone who can reach a Ray port can run code on the cluster (ShadowRay, "
        "CVE-2023-48022): 6379, 8265 and 10001 must never listen on public interfaces.",
        'Publish the dashboard on loopback only ("127.0.0.1:8265:8265") and reach it '
        "through an SSH tunnel; keep 6379 and 10001 on the compose network (no `ports:`).",
    ),
    _ray_port_published,
)


def _token_auth(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not svc.is_ray:
            continue
        present, mode = env_value(svc, "RAY_AUTH_MODE")
        if mode != "token":
            shown = "is not set" if not present else f"is {mode!r}"
            yield Hit(
                f"Ray node without token authentication (RAY_AUTH_MODE {shown})",
                svc.name,
                ("services", svc.name, "environment"),
            )


RAY004 = Rule(
    info(
        "RAY004",
        "token-auth-disabled",
        E,
        "Without token authentication any process that reaches a Ray port can submit "
        "jobs. Ray >= 2.52 supports RAY_AUTH_MODE=token, and every node must use it.",
        "Set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token on "
        "every Ray service, with the token as a compose secret.",
    ),
    _token_auth,
)


def _token_literal(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        raw = svc.environment().get("RAY_AUTH_TOKEN")
        if raw and "$" not in raw:
            yield Hit(
                "RAY_AUTH_TOKEN is written in the file",
                svc.name,
                ("services", svc.name, "environment"),
            )


RAY005 = Rule(
    info(
        "RAY005",
        "token-in-file",
        E,
        "A token written in the compose file is in git and in `docker inspect`; anyone "
        "with either can run code on the cluster.",
        "Remove RAY_AUTH_TOKEN; grant a compose secret and set RAY_AUTH_TOKEN_PATH.",
    ),
    _token_literal,
)


def _token_env(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        env = svc.environment()
        if "RAY_AUTH_TOKEN" in env and (
            env["RAY_AUTH_TOKEN"] is None or "$" in env["RAY_AUTH_TOKEN"]
        ):
            yield Hit(
                "RAY_AUTH_TOKEN is passed as an environment variable",
                svc.name,
                ("services", svc.name, "environment"),
            )


RAY006 = Rule(
    info(
        "RAY006",
        "token-in-environment",
        W,
        "An environment variable is visible to every process in the container and in "
        "`docker inspect`; a secret file can be read only by who mounts it.",
        "Grant a compose secret (file: ./secrets/ray_auth_token) and set "
        "RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token instead.",
    ),
    _token_env,
)


def _token_source(doc: ComposeDoc) -> Iterator[Hit]:
    secrets = set(doc.section("secrets"))
    for svc in doc.services():
        if not svc.is_ray or env_value(svc, "RAY_AUTH_MODE")[1] != "token":
            continue
        has_token = "RAY_AUTH_TOKEN" in svc.environment()
        present, path = env_value(svc, "RAY_AUTH_TOKEN_PATH")
        where = ("services", svc.name, "environment")
        if not present and not has_token:
            yield Hit(
                "token auth is on but the node has no token (neither RAY_AUTH_TOKEN_PATH nor "
                "RAY_AUTH_TOKEN)",
                svc.name,
                where,
            )
        elif present and path and path.startswith("/run/secrets/"):
            granted = granted_secret_paths(doc, svc)
            if path not in granted:
                yield Hit(
                    f"RAY_AUTH_TOKEN_PATH={path} but the service is granted no secret there",
                    svc.name,
                    where,
                )
            elif granted[path] not in secrets:
                yield Hit(
                    f"RAY_AUTH_TOKEN_PATH={path} names secret {granted[path]!r}, which the "
                    "top-level `secrets:` does not define",
                    svc.name,
                    where,
                )


RAY007 = Rule(
    info(
        "RAY007",
        "token-source-missing",
        E,
        "With RAY_AUTH_MODE=token a node that cannot read the token refuses to start "
        "(or, as a worker, cannot join).",
        "Grant the secret to the service (`secrets: [ray_auth_token]`), define it at the "
        "top level, and point RAY_AUTH_TOKEN_PATH at /run/secrets/ray_auth_token.",
    ),
    _token_source,
)


def _shm_size(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not svc.is_ray or svc.text(svc.get("ipc")) == "host":
            continue
        raw = svc.get("shm_size")
        if raw is None:
            yield Hit(
                "Ray node without shm_size (Docker gives /dev/shm 64 MB)",
                svc.name,
                ("services", svc.name),
            )
            continue
        size = parse_size(svc.text(raw))
        if size is not None and size < MIN_SHM:
            yield Hit(
                f"shm_size {svc.text(raw)!r} is below 1 GiB",
                svc.name,
                ("services", svc.name, "shm_size"),
            )


RAY008 = Rule(
    info(
        "RAY008",
        "shm-size",
        W,
        "Ray's object store lives in /dev/shm; Docker's default is 64 MB, so Ray falls "
        "back to disk (/tmp) and large objects get slow.",
        "Set shm_size on every Ray node, about 30% of the container's memory (e.g. shm_size: 8gb).",
    ),
    _shm_size,
)


def _ray_start_block(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        starts = svc.ray_starts()
        if not starts or all(s.block for s in starts):
            continue
        script = svc.command_script()
        keeper = re.search(r"time\.sleep|\bsleep\b|tail -f|\bwait\b|sleep infinity", script)
        how = (
            f"; the container is kept alive by `{keeper.group()}` instead"
            if keeper
            else "; the command returns and the container exits"
        )
        yield Hit(
            "`ray start` runs without --block" + how, svc.name, ("services", svc.name, "command")
        )


RAY009 = Rule(
    info(
        "RAY009",
        "ray-start-not-blocking",
        E,
        "`ray start` returns once the node is up. Without --block the container exits at "
        "once, or is kept alive by a sleep that hides a dead raylet from Docker's restart "
        "policy (and `sleep 99999` still ends after 28 hours).",
        "Run `ray start ... --block` as the container's command.",
    ),
    _ray_start_block,
)


def _ray_image_version(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        image = svc.text(svc.get("image")) or ""
        repo, tag, _ = image_tag(image)
        pinned = repo.endswith("rayproject/ray") and tag and tag != "latest"
        if pinned and tag and not tag.startswith(RAY_VERSION):
            yield Hit(
                f"image {image!r} runs Ray {tag.split('-')[0]}, but efsray pins Ray {RAY_VERSION}",
                svc.name,
                ("services", svc.name, "image"),
            )
        build = svc.get("build")
        args = build.get("args") if isinstance(build, dict) else None
        if isinstance(args, dict) and "RAY_VERSION" in args:
            version = svc.text(args["RAY_VERSION"])
            if version and version != RAY_VERSION:
                yield Hit(
                    f"build arg RAY_VERSION={version}, but efsray pins Ray {RAY_VERSION}",
                    svc.name,
                    ("services", svc.name, "build", "args", "RAY_VERSION"),
                )


RAY010 = Rule(
    info(
        "RAY010",
        "ray-version-mismatch",
        W,
        "Drivers, the efsray package and the cluster must run the same Ray version; "
        "token authentication needs Ray >= 2.52.",
        f"Use Ray {RAY_VERSION} (rayproject/ray:{RAY_VERSION}-py311-cpu or the efsray image).",
    ),
    _ray_image_version,
)


# What a host-networked Ray node must fix so that a security group can allow exactly its ports
# (docs/deploy.md, "Several hosts"): the address it advertises, and every port it listens on.
HOST_NETWORK_FIXED = (
    "node-ip-address",
    "node-manager-port",
    "object-manager-port",
    "min-worker-port",
    "max-worker-port",
)


def _host_network(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not (svc.is_ray and svc.text(svc.get("network_mode")) == "host"):
            continue
        for start in svc.ray_starts():
            missing = [f"--{o}" for o in HOST_NETWORK_FIXED if not start.get(o)]
            if missing:
                yield Hit(
                    "Ray node uses network_mode: host without fixing "
                    f"{', '.join(missing)}: its ports are random and listen on the host's "
                    "interfaces, so no security group can allow exactly them",
                    svc.name,
                    ("services", svc.name, "network_mode"),
                )


RAY011 = Rule(
    info(
        "RAY011",
        "ray-host-network-unfixed-ports",
        W,
        "With host networking every Ray port (GCS, node and object managers, workers) "
        "listens on the host's interfaces; only the security group stands between them and "
        "the network, and it can only allow ports that are fixed.",
        "Prefer the compose bridge network on one host. Across hosts (the worker stack), "
        "set --node-ip-address to the host's private IP and fix --node-manager-port, "
        "--object-manager-port, --min-worker-port and --max-worker-port; allow exactly "
        "those between the Ray nodes' security group (deploy/aws/efs.yml).",
    ),
    _host_network,
)


RULES: tuple[Rule, ...] = (
    RAY001,
    RAY002,
    RAY003,
    RAY004,
    RAY005,
    RAY006,
    RAY007,
    RAY008,
    RAY009,
    RAY010,
    RAY011,
)
