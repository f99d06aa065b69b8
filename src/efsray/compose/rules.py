"""The compose lint rules: each one an id, a severity, why it matters, how to fix it, and a
small function that finds it.

Rules read the file through :class:`~efsray.compose.model.ComposeDoc`, which never raises on
odd shapes; the schema check (rule SCHEMA001) reports those. Values are interpolated with the
file's own defaults (``${VAR:-default}``), so a rule sees what Compose would run when the
variable is unset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from efsray.compose.findings import RuleInfo, Severity
from efsray.compose.interpolate import interpolate
from efsray.compose.model import ComposeDoc, Service, parse_size, splits_cleanly
from efsray.mount.options import HARMFUL_OPTIONS, IGNORED_OPTIONS, RECOMMENDED_OPTIONS

__all__ = ["PARSE_RULES", "RAY_VERSION", "RULES", "Hit", "Rule", "rule_info"]

# The Ray version of the package (pyproject's `ray` extra) and of the images; a test ties them.
RAY_VERSION = "2.60.0"

E, W = Severity.ERROR, Severity.WARNING

RAY_PORTS = {
    "6379": "the GCS port",
    "8265": "the dashboard and Jobs API",
    "10001": "the Ray Client port",
    "52365": "the dashboard agent",
    "8080": "the metrics port",
}
_ALL_INTERFACES = {None, "", "0.0.0.0", "::", "[::]"}  # noqa: S104 (we look for them)
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|CONNECTION_STRING|DSN"
    r"|DATABASE_URL)",
    re.IGNORECASE,
)
_URL_CREDENTIAL = re.compile(r"://[^/@:\s]+:([^@\s$]+)@")
_MIN_SHM = 1024**3


class Hit(NamedTuple):
    """What a rule's check yields: the message, the service, and the path in the file."""

    message: str
    service: str | None = None
    path: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    info: RuleInfo
    check: Callable[[ComposeDoc], Iterator[Hit]]


def _info(id: str, name: str, severity: Severity, why: str, fix: str) -> RuleInfo:
    return RuleInfo(id=id, name=name, severity=severity, why=why, fix=fix)


# --- rules about the file itself (raised while reading, not by a check function) ----------
PARSE_RULES: dict[str, RuleInfo] = {
    r.id: r
    for r in (
        _info(
            "FILE001",
            "unreadable-file",
            E,
            "The file could not be read, so nothing in it was checked.",
            "Check the path and permissions; the file must be UTF-8 text.",
        ),
        _info(
            "YAML001",
            "yaml-syntax",
            E,
            "Compose refuses a file that is not valid YAML; nothing in it was checked.",
            "Fix the YAML at the line shown (indentation, quotes, a missing ':' or bracket).",
        ),
        _info(
            "YAML002",
            "duplicate-key",
            E,
            "Compose rejects duplicate keys; other tools silently keep only the last one, so "
            "the file means different things to different readers.",
            "Remove or merge the repeated key.",
        ),
        _info(
            "YAML003",
            "yaml-limits",
            E,
            "The document is too large, too deep, or its aliases refer to themselves or "
            "expand without bound; it was not checked, to keep the linter safe.",
            "Write the file plainly; compose files are small and need no recursive aliases.",
        ),
        _info(
            "YAML004",
            "not-a-mapping",
            E,
            "A compose file is a mapping with top-level keys such as `services` and "
            "`volumes`; this document is something else.",
            "Start the file with `services:`.",
        ),
        _info(
            "SCHEMA001",
            "compose-spec",
            E,
            "The file breaks the compose-spec schema: Compose would refuse it or read it "
            "differently from what it says.",
            "Fix the key or value named in the message (see https://compose-spec.io).",
        ),
        _info(
            "LINT000",
            "rule-failed",
            E,
            "A lint rule could not check this input; the file has a shape the rule does not "
            "understand, so the check was not made.",
            "Fix the schema findings first; if none, report this as an efsray bug.",
        ),
        _info(
            "ENV001",
            "invalid-setting",
            E,
            "efsray refuses this env file's value at start-up, so every service that reads "
            "the file would fail.",
            "Set the variable to a value of the kind the message names.",
        ),
        _info(
            "ENV002",
            "credential-in-env-file",
            W,
            "The file holds a real-looking credential. Env files get committed, copied and "
            "printed; an example file must contain placeholders only.",
            "Keep real env files out of git (chmod 600, .gitignore) and write placeholders "
            "such as USER:PASSWORD in *.example files.",
        ),
    )
}


# --- helpers ------------------------------------------------------------------------------
def _env_value(svc: Service, name: str) -> tuple[bool, str | None]:
    """(present, interpolated value) of an environment variable of the service."""
    env = svc.environment()
    if name not in env:
        return False, None
    raw = env[name]
    return True, None if raw is None else interpolate(raw, svc.env).text


def _granted_secret_paths(doc: ComposeDoc, svc: Service) -> dict[str, str]:
    """Container path -> secret name, for every secret the service is granted."""
    out: dict[str, str] = {}
    raw = svc.get("secrets")
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str):
            out[f"/run/secrets/{item}"] = item
        elif isinstance(item, dict) and isinstance(item.get("source"), str):
            target = doc.text(item.get("target")) or item["source"]
            out[target if target.startswith("/") else f"/run/secrets/{target}"] = item["source"]
    return out


def _image_tag(image: str) -> tuple[str, str | None, bool]:
    """(repository, tag, has_digest) of an image reference."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag, bool(digest)
    return ref, None, bool(digest)


def _split_options(o: str) -> list[str]:
    """Split an ``o:`` string at commas that are not inside ``${...}``."""
    parts: list[str] = []
    current: list[str] = []
    level = 0
    for ch in o:
        if ch == "{":
            level += 1
        elif ch == "}":
            level = max(0, level - 1)
        if ch == "," and level == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _nfs_option_map(o: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for token in _split_options(o):
        token = token.strip()
        if not token:
            continue
        key, eq, value = token.partition("=")
        out[key] = value if eq else None
    return out


def _mounts_nfs(doc: ComposeDoc, svc: Service) -> list[str]:
    nfs = doc.nfs_volumes()
    return [m.source for m in svc.mounts() if m.type == "volume" and m.source in nfs]


# --- compose hygiene ----------------------------------------------------------------------
def _obsolete_version(doc: ComposeDoc) -> Iterator[Hit]:
    if "version" in doc.data:
        yield Hit(f"top-level `version: {doc.data['version']!r}` is obsolete", None, ("version",))


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


def _unpinned_image(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        image = svc.text(svc.get("image"))
        if not image or "${" in image:
            continue
        _, tag, digest = _image_tag(image)
        if not digest and (tag is None or tag == "latest"):
            yield Hit(
                f"image {image!r} is not pinned to a version",
                svc.name,
                ("services", svc.name, "image"),
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
        for path, name in _granted_secret_paths(doc, svc).items():
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


def _published_all_interfaces(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.is_ray:
            continue
        for i, p in enumerate(svc.ports()):
            if p.host_ip in _ALL_INTERFACES:
                yield Hit(
                    f"port {p.raw!r} publishes container port {p.target} on every interface",
                    svc.name,
                    ("services", svc.name, "ports", i),
                )


def _literal_secret(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        for name, raw in svc.environment().items():
            if raw is None or name == "RAY_AUTH_TOKEN" or name.upper().endswith(("_FILE", "_PATH")):
                continue
            if _SECRET_NAME.search(name) and raw.strip() and "$" not in raw:
                yield Hit(
                    f"environment variable {name} has its secret value written in the file",
                    svc.name,
                    ("services", svc.name, "environment"),
                )
            elif _URL_CREDENTIAL.search(raw):
                yield Hit(
                    f"environment variable {name} contains a URL with a literal password",
                    svc.name,
                    ("services", svc.name, "environment"),
                )


# --- Ray ----------------------------------------------------------------------------------
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


def _ray_address_env(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        present, value = _env_value(svc, "RAY_ADDRESS")
        if not present or not value or value == "auto":
            continue
        host = value.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
        port = value.rsplit(":", 1)[-1] if ":" in value.removeprefix("ray://") else ""
        problem = None
        if host in _ALL_INTERFACES:
            problem = f"RAY_ADDRESS={value} names a listen-on-everything address, not a host"
        elif not value.startswith("ray://") and port == "10001":
            problem = f"RAY_ADDRESS={value} is the Ray Client port without the ray:// scheme"
        elif value.startswith("ray://") and port == "6379":
            problem = f"RAY_ADDRESS={value} uses ray:// with the GCS port"
        if problem:
            yield Hit(problem, svc.name, ("services", svc.name, "environment"))


def _ray_port_published(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not svc.is_ray:
            continue
        for i, p in enumerate(svc.ports()):
            if p.host_ip in _ALL_INTERFACES:
                label = RAY_PORTS.get(p.target, "a Ray port")
                yield Hit(
                    f"port {p.raw!r} publishes container port {p.target} ({label}) on every "
                    "interface of the host",
                    svc.name,
                    ("services", svc.name, "ports", i),
                )


def _token_auth(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if not svc.is_ray:
            continue
        present, mode = _env_value(svc, "RAY_AUTH_MODE")
        if mode != "token":
            shown = "is not set" if not present else f"is {mode!r}"
            yield Hit(
                f"Ray node without token authentication (RAY_AUTH_MODE {shown})",
                svc.name,
                ("services", svc.name, "environment"),
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


def _token_source(doc: ComposeDoc) -> Iterator[Hit]:
    secrets = set(doc.section("secrets"))
    for svc in doc.services():
        if not svc.is_ray or _env_value(svc, "RAY_AUTH_MODE")[1] != "token":
            continue
        has_token = "RAY_AUTH_TOKEN" in svc.environment()
        present, path = _env_value(svc, "RAY_AUTH_TOKEN_PATH")
        where = ("services", svc.name, "environment")
        if not present and not has_token:
            yield Hit(
                "token auth is on but the node has no token (neither RAY_AUTH_TOKEN_PATH nor "
                "RAY_AUTH_TOKEN)",
                svc.name,
                where,
            )
        elif present and path and path.startswith("/run/secrets/"):
            granted = _granted_secret_paths(doc, svc)
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
        if size is not None and size < _MIN_SHM:
            yield Hit(
                f"shm_size {svc.text(raw)!r} is below 1 GiB",
                svc.name,
                ("services", svc.name, "shm_size"),
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


def _ray_image_version(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        image = svc.text(svc.get("image")) or ""
        repo, tag, _ = _image_tag(image)
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


def _host_network(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.is_ray and svc.text(svc.get("network_mode")) == "host":
            yield Hit(
                "Ray node uses network_mode: host, so every Ray port listens on the host's "
                "interfaces",
                svc.name,
                ("services", svc.name, "network_mode"),
            )


# --- health and restart -------------------------------------------------------------------
def _healthcheck_missing(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.long_running and svc.healthcheck() is None:
            yield Hit(
                "long-running service without a healthcheck", svc.name, ("services", svc.name)
            )


def _healthcheck_driver(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.healthcheck_script() or ""
        if re.search(r"ray\.init\s*\(|ray://", script):
            yield Hit(
                "the healthcheck connects a Ray driver/client (ray.init / ray://) every interval",
                svc.name,
                ("services", svc.name, "healthcheck", "test"),
            )


def _healthcheck_ray_status(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.healthcheck_script() or ""
        if re.search(r"\bray\s+status\b", script):
            yield Hit(
                "the healthcheck runs `ray status`",
                svc.name,
                ("services", svc.name, "healthcheck", "test"),
            )


def _healthcheck_disabled(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.healthcheck() is not None and svc.healthcheck_script() is None:
            yield Hit(
                "the healthcheck is disabled", svc.name, ("services", svc.name, "healthcheck")
            )


def _healthcheck_efs(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.healthcheck_script()
        if script is None or not svc.long_running or svc.runs("efsray", "monitor"):
            continue
        volumes = _mounts_nfs(doc, svc)
        if volumes and "efsray health" not in script:
            yield Hit(
                f"mounts EFS ({', '.join(v for v in volumes if v)}) but its healthcheck does "
                "not check the mount",
                svc.name,
                ("services", svc.name, "healthcheck", "test"),
            )


def _restart_missing(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        deploy = svc.get("deploy")
        policy = deploy.get("restart_policy") if isinstance(deploy, dict) else None
        if svc.long_running and svc.get("restart") is None and policy is None:
            yield Hit(
                "long-running service without a restart policy", svc.name, ("services", svc.name)
            )


# --- services efsray provides -------------------------------------------------------------
def _shell_loop(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.command_script()
        if re.search(r"\bwhile\b", script) and re.search(r"\bsleep\b", script):
            yield Hit(
                "the command is a shell polling loop", svc.name, ("services", svc.name, "command")
            )


_EFSRAY_SERVICES = {"efs-monitor": ("efsray", "monitor"), "neon-connector": ("efsray", "sync")}


def _efsray_command(doc: ComposeDoc) -> Iterator[Hit]:
    for name, words in _EFSRAY_SERVICES.items():
        svc = doc.service(name)
        if svc is None or svc.runs(*words):
            continue
        if svc.get("command") is None and svc.get("entrypoint") is None:
            what = "has no command (it relies on an image CMD this file cannot show)"
        else:
            what = "runs something else"
        yield Hit(
            f"{name} should run `{' '.join(words)}` but {what}", name, ("services", name, "command")
        )


# --- EFS / NFS volumes --------------------------------------------------------------------
def _nfs_volume_hits(
    doc: ComposeDoc, judge: Callable[[str, dict[Any, Any], dict[str, str | None]], Iterator[str]]
) -> Iterator[Hit]:
    for name, opts in doc.nfs_volumes().items():
        o = doc.text(opts.get("o")) or ""
        for message in judge(name, opts, _nfs_option_map(o)):
            yield Hit(f"volume {name!r}: {message}", None, ("volumes", name, "driver_opts", "o"))


def _nfs_ignored(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        for key in o:
            if key in IGNORED_OPTIONS:
                yield f"option {key!r}: {IGNORED_OPTIONS[key]}"

    return _nfs_volume_hits(doc, judge)


def _nfs_harmful(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        for key, value in o.items():
            token = key if value is None else f"{key}={value}"
            if token in HARMFUL_OPTIONS:
                yield f"option {token!r}: {HARMFUL_OPTIONS[token]}"

    return _nfs_volume_hits(doc, judge)


def _nfs_recommended(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        problems = []
        for option in RECOMMENDED_OPTIONS:
            key, eq, want = option.partition("=")
            have = o.get(key, o.get("vers") if key == "nfsvers" else None)
            if key not in o and not (key == "nfsvers" and "vers" in o):
                problems.append(f"{option} is missing")
            elif eq and have != want:
                problems.append(f"{key}={have} instead of {option}")
        if problems:
            yield "; ".join(problems)

    return _nfs_volume_hits(doc, judge)


def _nfs_version(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        version = o.get("nfsvers") or o.get("vers")
        kind = (doc.text(opts.get("type")) or "").strip()
        if version is None and kind == "nfs":
            yield "type nfs without nfsvers= mounts NFSv3, which EFS does not serve"
        elif version is not None and not version.startswith("4"):
            yield f"NFS version {version}: EFS serves NFSv4.0 and 4.1 only"

    return _nfs_volume_hits(doc, judge)


def _nfs_address(doc: ComposeDoc) -> Iterator[Hit]:
    def judge(name: str, opts: dict[Any, Any], o: dict[str, str | None]) -> Iterator[str]:
        if not o.get("addr"):
            yield "no addr= in the options: Docker does not know which server to mount"
        device = doc.text(opts.get("device")) or ""
        if not device.startswith(":"):
            yield f"device {device!r} must be ':/path' (the export path, after a colon)"

    return _nfs_volume_hits(doc, judge)


def _nfs_address_unguarded(doc: ComposeDoc) -> Iterator[Hit]:
    for name, opts in doc.nfs_volumes().items():
        raw = opts.get("o")
        if not isinstance(raw, str):
            continue
        addr = _nfs_option_map(raw).get("addr") or ""
        result = interpolate(addr)
        unguarded = [v for v in result.unknown if v not in result.required]
        if unguarded:
            yield Hit(
                f"volume {name!r}: addr= comes from ${{{unguarded[0]}}} with no default and no "
                "`:?` guard",
                None,
                ("volumes", name, "driver_opts", "o"),
            )


# --- the table ----------------------------------------------------------------------------
RULES: tuple[Rule, ...] = (
    Rule(
        _info(
            "CMP001",
            "obsolete-version",
            W,
            "The top-level `version` key is obsolete: Compose ignores it and warns on every run.",
            "Delete the `version:` line.",
        ),
        _obsolete_version,
    ),
    Rule(
        _info(
            "CMP002",
            "container-name-on-replicated-service",
            E,
            "A container name must be unique, so Compose refuses to create more than one "
            "replica of a service that sets container_name.",
            "Remove container_name from the replicated service; Compose names replicas "
            "PROJECT-SERVICE-N.",
        ),
        _container_name_replicated,
    ),
    Rule(
        _info(
            "CMP003",
            "unpinned-image",
            W,
            "`latest` (or no tag) changes under you: hosts pulling at different times run "
            "different versions, and a Ray client must match the cluster's Ray exactly.",
            "Pin a version tag (rayproject/ray:2.60.0-py311-cpu) or a digest.",
        ),
        _unpinned_image,
    ),
    Rule(
        _info(
            "CMP005",
            "undefined-reference",
            E,
            "Compose refuses to start a service that refers to a volume, secret or network "
            "the file does not define.",
            "Define it in the top-level section, or fix the name.",
        ),
        _undefined_reference,
    ),
    Rule(
        _info(
            "CMP006",
            "command-unparsable",
            E,
            "Compose splits a string command into words like a shell; with an unbalanced "
            "quote it refuses the file (and a shell healthcheck fails every time).",
            'Close the quote, or write the command as a list: ["ray", "start", ...].',
        ),
        _unparsable_command,
    ),
    Rule(
        _info(
            "NET001",
            "fixed-subnet",
            W,
            "A hard-coded bridge subnet can overlap the VPC: the host then routes traffic for "
            "EFS mount targets or other instances into the bridge, and NFS mounts hang.",
            "Drop the ipam subnet and let Docker pick a free one, or choose a range outside "
            "every VPC CIDR you use.",
        ),
        _fixed_subnet,
    ),
    Rule(
        _info(
            "PRT001",
            "port-published-on-all-interfaces",
            W,
            "A port published without a host IP listens on every interface of the host, "
            "including public ones.",
            'Prefix the host IP: "127.0.0.1:3000:3000", and reach it through an SSH tunnel '
            "or a proxy with authentication.",
        ),
        _published_all_interfaces,
    ),
    Rule(
        _info(
            "SEC001",
            "literal-secret",
            E,
            "A secret written into the compose file ends up in git, in `docker inspect` and "
            "in logs.",
            "Read it from the environment (`${NEON_CONNECTION_STRING}` set in a private .env) "
            "or from a compose secret file.",
        ),
        _literal_secret,
    ),
    Rule(
        _info(
            "RAY001",
            "worker-joins-client-port",
            E,
            "Workers join the head's GCS port (6379); 10001 is the Ray Client server for "
            "ray:// drivers. A worker pointed at 10001 never joins the cluster.",
            "Use `ray start --address=HEAD:6379 --block` on workers.",
        ),
        _worker_client_port,
    ),
    Rule(
        _info(
            "RAY002",
            "ray-address-invalid",
            E,
            "RAY_ADDRESS is where drivers in the container connect: HOST:6379 (GCS) or "
            "ray://HOST:10001 (Ray Client). 0.0.0.0 is a listen address, not a host to "
            "connect to, and the client port needs the ray:// scheme.",
            "Set RAY_ADDRESS=ray-head:6379 (or `auto` inside a Ray node), or remove it.",
        ),
        _ray_address_env,
    ),
    Rule(
        _info(
            "RAY003",
            "ray-port-published-on-all-interfaces",
            E,
            "Anyone who can reach a Ray port can run code on the cluster (ShadowRay, "
            "CVE-2023-48022): 6379, 8265 and 10001 must never listen on public interfaces.",
            'Publish the dashboard on loopback only ("127.0.0.1:8265:8265") and reach it '
            "through an SSH tunnel; keep 6379 and 10001 on the compose network (no `ports:`).",
        ),
        _ray_port_published,
    ),
    Rule(
        _info(
            "RAY004",
            "token-auth-disabled",
            E,
            "Without token authentication any process that reaches a Ray port can submit "
            "jobs. Ray >= 2.52 supports RAY_AUTH_MODE=token, and every node must use it.",
            "Set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token on "
            "every Ray service, with the token as a compose secret.",
        ),
        _token_auth,
    ),
    Rule(
        _info(
            "RAY005",
            "token-in-file",
            E,
            "A token written in the compose file is in git and in `docker inspect`; anyone "
            "with either can run code on the cluster.",
            "Remove RAY_AUTH_TOKEN; grant a compose secret and set RAY_AUTH_TOKEN_PATH.",
        ),
        _token_literal,
    ),
    Rule(
        _info(
            "RAY006",
            "token-in-environment",
            W,
            "An environment variable is visible to every process in the container and in "
            "`docker inspect`; a secret file can be read only by who mounts it.",
            "Grant a compose secret (file: ./secrets/ray_auth_token) and set "
            "RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token instead.",
        ),
        _token_env,
    ),
    Rule(
        _info(
            "RAY007",
            "token-source-missing",
            E,
            "With RAY_AUTH_MODE=token a node that cannot read the token refuses to start "
            "(or, as a worker, cannot join).",
            "Grant the secret to the service (`secrets: [ray_auth_token]`), define it at the "
            "top level, and point RAY_AUTH_TOKEN_PATH at /run/secrets/ray_auth_token.",
        ),
        _token_source,
    ),
    Rule(
        _info(
            "RAY008",
            "shm-size",
            W,
            "Ray's object store lives in /dev/shm; Docker's default is 64 MB, so Ray falls "
            "back to disk (/tmp) and large objects get slow.",
            "Set shm_size on every Ray node, about 30% of the container's memory "
            "(e.g. shm_size: 8gb).",
        ),
        _shm_size,
    ),
    Rule(
        _info(
            "RAY009",
            "ray-start-not-blocking",
            E,
            "`ray start` returns once the node is up. Without --block the container exits at "
            "once, or is kept alive by a sleep that hides a dead raylet from Docker's restart "
            "policy (and `sleep 99999` still ends after 28 hours).",
            "Run `ray start ... --block` as the container's command.",
        ),
        _ray_start_block,
    ),
    Rule(
        _info(
            "RAY010",
            "ray-version-mismatch",
            W,
            "Drivers, the efsray package and the cluster must run the same Ray version; "
            "token authentication needs Ray >= 2.52.",
            f"Use Ray {RAY_VERSION} (rayproject/ray:{RAY_VERSION}-py311-cpu or the efsray image).",
        ),
        _ray_image_version,
    ),
    Rule(
        _info(
            "RAY011",
            "ray-host-network",
            W,
            "With host networking every Ray port (GCS, client, dashboard, workers) listens on "
            "the host's interfaces; only the security group stands between them and the "
            "network.",
            "Prefer the compose bridge network; if hosts must talk directly, restrict the "
            "ports to the Ray nodes' security group and keep token auth on.",
        ),
        _host_network,
    ),
    Rule(
        _info(
            "HC001",
            "healthcheck-missing",
            W,
            "Without a healthcheck Docker reports a hung Ray node or a dead EFS mount as "
            "running, and depends_on: service_healthy cannot wait for it.",
            "Add a healthcheck: the Ray health endpoint (http://127.0.0.1:52365/api/healthz) "
            "and `efsray health` for the mount.",
        ),
        _healthcheck_missing,
    ),
    Rule(
        _info(
            "HC002",
            "healthcheck-starts-driver",
            E,
            "ray.init('ray://...') in a healthcheck starts a Ray Client session (and a server "
            "process on the head) every interval; failures leave sessions behind and the "
            "check can hang past its timeout.",
            "Probe the health endpoint instead: "
            '`python -c "import urllib.request as u; '
            "u.urlopen('http://127.0.0.1:52365/api/healthz', timeout=5)\"`.",
        ),
        _healthcheck_driver,
    ),
    Rule(
        _info(
            "HC003",
            "healthcheck-ray-status",
            W,
            "`ray status` imports Ray and queries the autoscaler state through the GCS: slow "
            "(seconds), and it reports the cluster, not whether this node's raylet is alive.",
            "Probe this node's health endpoint (http://127.0.0.1:52365/api/healthz).",
        ),
        _healthcheck_ray_status,
    ),
    Rule(
        _info(
            "HC004",
            "healthcheck-disabled",
            W,
            "A disabled healthcheck hides a hung service from Docker and from depends_on.",
            "Remove `disable: true` / NONE and give the service a real check.",
        ),
        _healthcheck_disabled,
    ),
    Rule(
        _info(
            "HC005",
            "healthcheck-ignores-efs",
            W,
            "A service that works on EFS is unhealthy when the mount is hung, but a check "
            "that does not touch the mount stays green. A hung hard mount blocks stat "
            "forever, so the probe must run with a deadline.",
            "Add `efsray health --timeout 5` to the healthcheck: it probes the mount in a "
            "child process and answers `hung` within the deadline.",
        ),
        _healthcheck_efs,
    ),
    Rule(
        _info(
            "RST001",
            "restart-missing",
            W,
            "With --block the container ends when Ray (or the efsray service) dies; without a "
            "restart policy it stays down.",
            "Add `restart: unless-stopped`.",
        ),
        _restart_missing,
    ),
    Rule(
        _info(
            "SVC001",
            "shell-polling-loop",
            W,
            "A `while true; df; sleep` loop checks nothing: it prints, never fails, never "
            "alerts, and df on a hung hard NFS mount blocks forever in D state.",
            "Run `efsray monitor`: probes under a deadline, Prometheus metrics, /healthz.",
        ),
        _shell_loop,
    ),
    Rule(
        _info(
            "SVC002",
            "efsray-service-command",
            W,
            "efs-monitor and neon-connector are efsray services: their behaviour should be "
            "visible in the compose file, and run the efsray commands that handle SIGTERM, "
            "deadlines and health.",
            "Use `command: [efsray, monitor, ...]` for efs-monitor and "
            "`command: [efsray, sync, ...]` for neon-connector.",
        ),
        _efsray_command,
    ),
    Rule(
        _info(
            "EFS001",
            "nfs-option-ignored",
            W,
            "The option does nothing on Linux; keeping it suggests a behaviour the mount "
            "does not have.",
            "Remove it (render the options with `efsray compose render`).",
        ),
        _nfs_ignored,
    ),
    Rule(
        _info(
            "EFS002",
            "nfs-option-harmful",
            E,
            "The option trades correctness or speed away on EFS.",
            "Remove it; use the options `efsray compose render` prints.",
        ),
        _nfs_harmful,
    ),
    Rule(
        _info(
            "EFS003",
            "nfs-option-not-recommended",
            W,
            "AWS's recommended EFS options (nfsvers=4.1, rsize/wsize 1 MiB, hard, timeo=600, "
            "retrans=2, noresvport) keep throughput up and let the client reconnect on a new "
            "source port after a network blip (noresvport) instead of hanging.",
            "Use the `o:` string that `efsray compose render` prints.",
        ),
        _nfs_recommended,
    ),
    Rule(
        _info(
            "EFS004",
            "nfs-version",
            E,
            "EFS speaks NFSv4.0 and 4.1 only; Docker's `type: nfs` mounts with the kernel "
            "default (v3) unless told otherwise, and that mount fails.",
            "Put nfsvers=4.1 in `o:`.",
        ),
        _nfs_version,
    ),
    Rule(
        _info(
            "EFS005",
            "nfs-address",
            E,
            'Docker\'s local driver needs addr=SERVER in `o:` and device: ":/path" to mount '
            "NFS; without them the volume fails when the first container starts.",
            "Use `efsray compose render` for the block.",
        ),
        _nfs_address,
    ),
    Rule(
        _info(
            "EFS006",
            "nfs-address-unguarded",
            W,
            "If the variable is unset Compose substitutes an empty string and the failure "
            "appears late, as an obscure mount error when a container starts.",
            "Write ${EFS_DNS_NAME:?set EFS_DNS_NAME} so Compose stops at once with a message.",
        ),
        _nfs_address_unguarded,
    ),
)


def rule_info(rule_id: str) -> RuleInfo:
    """The rule (check or parse rule) with this id; KeyError if there is none."""
    for rule in RULES:
        if rule.info.id == rule_id:
            return rule.info
    return PARSE_RULES[rule_id]
