"""Compose hygiene rules: obsolete keys, names, images, references, secrets, ports."""

from __future__ import annotations

from collections.abc import Iterator

from efsray.compose.model import ComposeDoc, splits_cleanly
from efsray.compose.rules._base import (
    ALL_INTERFACES,
    SECRET_NAME,
    URL_CREDENTIAL,
    E,
    Hit,
    Rule,
    W,
    granted_secret_paths,
    image_tag,
    info,
)

__all__ = ["RULES"]


def _obsolete_version(doc: ComposeDoc) -> Iterator[Hit]:
    if "version" in doc.data:
        yield Hit(f"top-level `version: {doc.data['version']!r}` is obsolete", None, ("version",))


CMP001 = Rule(
    info(
        "CMP001",
        "obsolete-version",
        W,
        "The top-level `version` key is obsolete: Compose ignores it and warns on every run.",
        "Delete the `version:` line.",
    ),
    _obsolete_version,
)


def _container_name_replicated(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        replicas = svc.replicas()
        if svc.get("container_name") is not None and replicas is not None and replicas > 1:
            yield Hit(
                f"container_name {svc.get('container_name')!r} is set on a service with "
                f"{replicas} replicas",
                svc.name,
                ("services", svc.name, "container_name"),
            )


CMP002 = Rule(
    info(
        "CMP002",
        "container-name-on-replicated-service",
        E,
        "A container name must be unique, so Compose refuses to create more than one "
        "replica of a service that sets container_name.",
        "Remove container_name from the replicated service; Compose names replicas "
        "PROJECT-SERVICE-N.",
    ),
    _container_name_replicated,
)


def _unpinned_image(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        image = svc.text(svc.get("image"))
        if not image or "${" in image:
            continue
        _, tag, digest = image_tag(image)
        if not digest and (tag is None or tag == "latest"):
            yield Hit(
                f"image {image!r} is not pinned to a version",
                svc.name,
                ("services", svc.name, "image"),
            )


CMP003 = Rule(
    info(
        "CMP003",
        "unpinned-image",
        W,
        "`latest` (or no tag) changes under you: hosts pulling at different times run "
        "different versions, and a Ray client must match the cluster's Ray exactly.",
        "Pin a version tag (rayproject/ray:2.60.0-py311-cpu) or a digest.",
    ),
    _unpinned_image,
)


def _undefined_reference(doc: ComposeDoc) -> Iterator[Hit]:
    volumes = set(doc.section("volumes"))
    secrets = set(doc.section("secrets"))
    networks = set(doc.section("networks")) | {"default"}
    for svc in doc.services():
        for m in svc.mounts():
            if m.type == "volume" and m.source and "$" not in m.source and m.source not in volumes:
                yield Hit(
                    f"mounts volume {m.source!r}, which the top-level `volumes:` does not define",
                    svc.name,
                    ("services", svc.name, "volumes", m.index),
                )
        for path, name in granted_secret_paths(doc, svc).items():
            if name not in secrets:
                yield Hit(
                    f"is granted secret {name!r} (at {path}), which the top-level `secrets:` "
                    "does not define",
                    svc.name,
                    ("services", svc.name, "secrets"),
                )
        raw = svc.get("networks")
        names = raw if isinstance(raw, list) else list(raw) if isinstance(raw, dict) else []
        for name in names:
            if isinstance(name, str) and name not in networks:
                yield Hit(
                    f"joins network {name!r}, which the top-level `networks:` does not define",
                    svc.name,
                    ("services", svc.name, "networks"),
                )


CMP005 = Rule(
    info(
        "CMP005",
        "undefined-reference",
        E,
        "Compose refuses to start a service that refers to a volume, secret or network "
        "the file does not define.",
        "Define it in the top-level section, or fix the name.",
    ),
    _undefined_reference,
)


def _unparsable_command(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        for key in ("command", "entrypoint"):
            value = svc.get(key)
            if isinstance(value, str) and not splits_cleanly(value):
                yield Hit(
                    f"{key} {value!r} has an unbalanced quote or a trailing backslash",
                    svc.name,
                    ("services", svc.name, key),
                )
        script = svc.healthcheck_script()
        if script is not None and not splits_cleanly(script):
            yield Hit(
                f"healthcheck {script!r} has an unbalanced quote or a trailing backslash",
                svc.name,
                ("services", svc.name, "healthcheck", "test"),
            )


CMP006 = Rule(
    info(
        "CMP006",
        "command-unparsable",
        E,
        "Compose splits a string command into words like a shell; with an unbalanced "
        "quote it refuses the file (and a shell healthcheck fails every time).",
        'Close the quote, or write the command as a list: ["ray", "start", ...].',
    ),
    _unparsable_command,
)


def _fixed_subnet(doc: ComposeDoc) -> Iterator[Hit]:
    for name, spec in doc.section("networks").items():
        ipam = spec.get("ipam") if isinstance(spec, dict) else None
        configs = ipam.get("config") if isinstance(ipam, dict) else None
        for i, cfg in enumerate(configs if isinstance(configs, list) else []):
            if isinstance(cfg, dict) and cfg.get("subnet"):
                yield Hit(
                    f"network {name!r} pins subnet {cfg.get('subnet')!r}",
                    None,
                    ("networks", name, "ipam", "config", i, "subnet"),
                )


NET001 = Rule(
    info(
        "NET001",
        "fixed-subnet",
        W,
        "A hard-coded bridge subnet can overlap the VPC: the host then routes traffic for "
        "EFS mount targets or other instances into the bridge, and NFS mounts hang.",
        "Drop the ipam subnet and let Docker pick a free one, or choose a range outside "
        "every VPC CIDR you use.",
    ),
    _fixed_subnet,
)


def _published_all_interfaces(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.is_ray:
            continue
        for i, p in enumerate(svc.ports()):
            if p.host_ip in ALL_INTERFACES:
                yield Hit(
                    f"port {p.raw!r} publishes container port {p.target} on every interface",
                    svc.name,
                    ("services", svc.name, "ports", i),
                )


PRT001 = Rule(
    info(
        "PRT001",
        "port-published-on-all-interfaces",
        W,
        "A port published without a host IP listens on every interface of the host, "
        "including public ones.",
        'Prefix the host IP: "127.0.0.1:3000:3000", and reach it through an SSH tunnel '
        "or a proxy with authentication.",
    ),
    _published_all_interfaces,
)


def _literal_secret(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        for name, raw in svc.environment().items():
            if raw is None or name == "RAY_AUTH_TOKEN" or name.upper().endswith(("_FILE", "_PATH")):
                continue
            if SECRET_NAME.search(name) and raw.strip() and "$" not in raw:
                yield Hit(
                    f"environment variable {name} has its secret value written in the file",
                    svc.name,
                    ("services", svc.name, "environment"),
                )
            elif URL_CREDENTIAL.search(raw):
                yield Hit(
                    f"environment variable {name} contains a URL with a literal password",
                    svc.name,
                    ("services", svc.name, "environment"),
                )


SEC001 = Rule(
    info(
        "SEC001",
        "literal-secret",
        E,
        "A secret written into the compose file ends up in git, in `docker inspect` and in logs.",
        "Read it from the environment (`${NEON_CONNECTION_STRING}` set in a private .env) "
        "or from a compose secret file.",
    ),
    _literal_secret,
)


RULES: tuple[Rule, ...] = (
    CMP001,
    CMP002,
    CMP003,
    CMP005,
    CMP006,
    NET001,
    PRT001,
    SEC001,
)
