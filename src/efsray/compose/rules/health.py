"""Health, restart and command rules for Ray nodes and the efsray services."""

from __future__ import annotations

import re
from collections.abc import Iterator

from efsray.compose.model import EFSRAY_SERVICES, ComposeDoc
from efsray.compose.rules._base import (
    E,
    Hit,
    Rule,
    W,
    info,
    mounts_nfs,
)

__all__ = ["RULES"]


def _healthcheck_missing(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.long_running and svc.healthcheck() is None:
            yield Hit(
                "long-running service without a healthcheck", svc.name, ("services", svc.name)
            )


HC001 = Rule(
    info(
        "HC001",
        "healthcheck-missing",
        W,
        "Without a healthcheck Docker reports a hung Ray node or a dead EFS mount as "
        "running, and depends_on: service_healthy cannot wait for it.",
        "Add a healthcheck: the Ray health endpoint (http://127.0.0.1:52365/api/healthz) "
        "and `efsray health` for the mount.",
    ),
    _healthcheck_missing,
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


HC002 = Rule(
    info(
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


HC003 = Rule(
    info(
        "HC003",
        "healthcheck-ray-status",
        W,
        "`ray status` imports Ray and queries the autoscaler state through the GCS: slow "
        "(seconds), and it reports the cluster, not whether this node's raylet is alive.",
        "Probe this node's health endpoint (http://127.0.0.1:52365/api/healthz).",
    ),
    _healthcheck_ray_status,
)


def _healthcheck_disabled(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        if svc.healthcheck() is not None and svc.healthcheck_script() is None:
            yield Hit(
                "the healthcheck is disabled", svc.name, ("services", svc.name, "healthcheck")
            )


HC004 = Rule(
    info(
        "HC004",
        "healthcheck-disabled",
        W,
        "A disabled healthcheck hides a hung service from Docker and from depends_on.",
        "Remove `disable: true` / NONE and give the service a real check.",
    ),
    _healthcheck_disabled,
)


def _healthcheck_efs(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.healthcheck_script()
        if script is None or not svc.long_running or svc.runs("efsray", "monitor"):
            continue
        volumes = mounts_nfs(doc, svc)
        if volumes and "efsray health" not in script:
            yield Hit(
                f"mounts EFS ({', '.join(v for v in volumes if v)}) but its healthcheck does "
                "not check the mount",
                svc.name,
                ("services", svc.name, "healthcheck", "test"),
            )


HC005 = Rule(
    info(
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
)


def _restart_missing(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        deploy = svc.get("deploy")
        policy = deploy.get("restart_policy") if isinstance(deploy, dict) else None
        if svc.long_running and svc.get("restart") is None and policy is None:
            yield Hit(
                "long-running service without a restart policy", svc.name, ("services", svc.name)
            )


RST001 = Rule(
    info(
        "RST001",
        "restart-missing",
        W,
        "With --block the container ends when Ray (or the efsray service) dies; without a "
        "restart policy it stays down.",
        "Add `restart: unless-stopped`.",
    ),
    _restart_missing,
)


def _shell_loop(doc: ComposeDoc) -> Iterator[Hit]:
    for svc in doc.services():
        script = svc.command_script()
        if re.search(r"\bwhile\b", script) and re.search(r"\bsleep\b", script):
            yield Hit(
                "the command is a shell polling loop", svc.name, ("services", svc.name, "command")
            )


SVC001 = Rule(
    info(
        "SVC001",
        "shell-polling-loop",
        W,
        "A `while true; df; sleep` loop checks nothing: it prints, never fails, never "
        "alerts, and df on a hung hard NFS mount blocks forever in D state.",
        "Run `efsray monitor`: probes under a deadline, Prometheus metrics, /healthz.",
    ),
    _shell_loop,
)


def _efsray_command(doc: ComposeDoc) -> Iterator[Hit]:
    for name, words in EFSRAY_SERVICES.items():
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


SVC002 = Rule(
    info(
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
)


RULES: tuple[Rule, ...] = (
    HC001,
    HC002,
    HC003,
    HC004,
    HC005,
    RST001,
    SVC001,
    SVC002,
)
