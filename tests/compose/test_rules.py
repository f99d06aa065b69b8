"""Every lint rule fires on a minimal example, and keeps quiet on the corrected one.

The meta test at the end fails when a rule is added without an example here.
"""

from __future__ import annotations

import pytest

from efsray.compose import RULES, lint_compose_text

_HEAD = """
  head:
    image: rayproject/ray:2.60.0-py311-cpu
    command: [ray, start, --head, --block, --port=6379]
    restart: unless-stopped
    shm_size: 2gb
    environment: {RAY_AUTH_MODE: token, RAY_AUTH_TOKEN_PATH: /run/secrets/t}
    secrets: [t]
    healthcheck:
      test: ["CMD-SHELL", "curl -fsS http://127.0.0.1:52365/api/healthz"]
"""
_SECRETS = "secrets:\n  t:\n    file: ./t\n"
_EFS_VOLUME = (
    "volumes:\n  efs:\n    driver_opts: {type: nfs, o: 'addr=fs.x,nfsvers=4.1', device: ':/'}\n"
)

# rule -> (bad example, corrected example)
CASES: dict[str, tuple[str, str]] = {
    "CMP001": ("version: '3'\nservices: {}\n", "services: {}\n"),
    "CMP002": (
        "services:\n  w: {image: 'a:1', container_name: w, deploy: {replicas: 2}}\n",
        "services:\n  w: {image: 'a:1', deploy: {replicas: 2}}\n",
    ),
    "CMP003": ("services:\n  w: {image: alpine}\n", "services:\n  w: {image: 'alpine:3.20'}\n"),
    "CMP005": (
        "services:\n  w: {image: 'a:1', volumes: ['data:/d'], networks: [n]}\n",
        "services:\n  w: {image: 'a:1', volumes: ['data:/d'], networks: [n]}\n"
        "volumes: {data: {}}\nnetworks: {n: {}}\n",
    ),
    "CMP006": (
        "services:\n  w: {image: 'a:1', command: \"sh -c 'echo\"}\n",
        "services:\n  w: {image: 'a:1', command: \"sh -c 'echo'\"}\n",
    ),
    "NET001": (
        "services: {}\nnetworks:\n  n: {ipam: {config: [{subnet: 10.9.0.0/16}]}}\n",
        "services: {}\nnetworks:\n  n: {driver: bridge}\n",
    ),
    "PRT001": (
        "services:\n  g: {image: 'grafana/grafana:11.3.0', ports: ['3000:3000']}\n",
        "services:\n  g: {image: 'grafana/grafana:11.3.0', ports: ['127.0.0.1:3000:3000']}\n",
    ),
    "SEC001": (
        "services:\n  w: {image: 'a:1', environment: [DB_PASSWORD=hunter2]}\n",
        "services:\n  w: {image: 'a:1', environment: [DB_PASSWORD=$DB_PASSWORD]}\n",
    ),
    "RAY001": (
        "services:" + _HEAD + "  w:\n    image: rayproject/ray:2.60.0-py311-cpu\n"
        "    command: ray start --address=ray://head:10001 --block\n" + _SECRETS,
        "services:" + _HEAD + "  w:\n    image: rayproject/ray:2.60.0-py311-cpu\n"
        "    command: ray start --address=head:6379 --block\n" + _SECRETS,
    ),
    "RAY002": (
        "services:\n  d: {image: 'a:1', environment: {RAY_ADDRESS: 'head:10001'}}\n",
        "services:\n  d: {image: 'a:1', environment: {RAY_ADDRESS: 'ray://head:10001'}}\n",
    ),
    "RAY003": (
        "services:" + _HEAD + "    ports: ['8265']\n" + _SECRETS,
        "services:" + _HEAD + "    ports: ['127.0.0.1:8265:8265']\n" + _SECRETS,
    ),
    "RAY004": (
        "services:" + _HEAD.replace("RAY_AUTH_MODE: token", "RAY_AUTH_MODE: disabled") + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY005": (
        "services:"
        + _HEAD.replace("RAY_AUTH_TOKEN_PATH: /run/secrets/t", "RAY_AUTH_TOKEN: abc")
        + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY006": (
        "services:"
        + _HEAD.replace("RAY_AUTH_TOKEN_PATH: /run/secrets/t", "RAY_AUTH_TOKEN: $TOKEN")
        + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY007": ("services:" + _HEAD, "services:" + _HEAD + _SECRETS),
    "RAY008": (
        "services:" + _HEAD.replace("shm_size: 2gb", "shm_size: 256m") + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY009": (
        "services:" + _HEAD.replace(" --block,", "") + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY010": (
        "services:" + _HEAD.replace("ray:2.60.0-py311-cpu", "ray:2.40.0-py311-cpu") + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY011": (
        "services:" + _HEAD + "    network_mode: host\n" + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "RAY012": (
        "services:\n  w:\n    image: rayproject/ray:2.60.0-py311-cpu\n"
        "    command: ray start --address=10.0.1.10:10001 --block\n",
        "services:\n  w:\n    image: rayproject/ray:2.60.0-py311-cpu\n"
        "    command: ray start --address=10.0.1.10:6379 --block\n",
    ),
    "RAY013": (
        "services:"
        + _HEAD.replace("--port=6379]", "--port=6379, --dashboard-host=0.0.0.0]")
        + "    network_mode: host\n"
        + _SECRETS,
        "services:"
        + _HEAD.replace("--port=6379]", "--port=6379, --dashboard-host=127.0.0.1]")
        + "    network_mode: host\n"
        + _SECRETS,
    ),
    "HC001": (
        "services:\n  m: {image: 'a:1', command: [efsray, monitor], restart: always}\n",
        "services:\n  m: {image: 'a:1', command: [efsray, monitor], restart: always,"
        " healthcheck: {test: [CMD, efsray, health]}}\n",
    ),
    "HC002": (
        "services:"
        + _HEAD.replace(
            "curl -fsS http://127.0.0.1:52365/api/healthz",
            "python -c 'import ray; ray.init()'",
        )
        + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "HC003": (
        "services:"
        + _HEAD.replace("curl -fsS http://127.0.0.1:52365/api/healthz", "ray status")
        + _SECRETS,
        "services:" + _HEAD + _SECRETS,
    ),
    "HC004": (
        "services:\n  m: {image: 'a:1', healthcheck: {disable: true}}\n",
        "services:\n  m: {image: 'a:1', healthcheck: {test: [CMD, 'true']}}\n",
    ),
    "HC005": (
        "services:\n  m:\n    image: 'a:1'\n    command: [efsray, sync]\n    restart: always\n"
        "    volumes: [efs:/data]\n    healthcheck: {test: [CMD, 'true']}\n" + _EFS_VOLUME,
        "services:\n  m:\n    image: 'a:1'\n    command: [efsray, sync]\n    restart: always\n"
        "    volumes: [efs:/data]\n    healthcheck: {test: [CMD, efsray, health]}\n" + _EFS_VOLUME,
    ),
    "RST001": (
        "services:\n  s: {image: 'a:1', command: [efsray, sync], healthcheck: {test: [CMD, x]}}\n",
        "services:\n  s: {image: 'a:1', command: [efsray, sync], healthcheck: {test: [CMD, x]},"
        " restart: always}\n",
    ),
    "SVC001": (
        "services:\n  s: {image: 'a:1', command: sh -c 'while true; do df; sleep 5; done'}\n",
        "services:\n  s: {image: 'a:1', command: [df]}\n",
    ),
    "SVC002": (
        "services:\n  neon-connector: {image: 'a:1', command: [python, sync.py]}\n",
        "services:\n  neon-connector: {image: 'a:1', command: [efsray, sync],"
        " restart: always, healthcheck: {test: [CMD, efsray, health]}}\n",
    ),
}

_NFS = "services: {}\nvolumes:\n  v:\n    driver_opts: {type: nfs, device: ':/x', o: '%s'}\n"
_GOOD_O = "addr=fs.x,nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
CASES.update(
    {
        "EFS001": (_NFS % (_GOOD_O + ",intr"), _NFS % _GOOD_O),
        "EFS002": (_NFS % _GOOD_O.replace("hard", "soft"), _NFS % _GOOD_O),
        "EFS003": (_NFS % _GOOD_O.replace(",noresvport", ""), _NFS % _GOOD_O),
        "EFS004": (
            _NFS % _GOOD_O.replace("nfsvers=4.1", "nfsvers=3"),
            _NFS % _GOOD_O,
        ),
        "EFS005": ((_NFS % _GOOD_O).replace("':/x'", "'/x'"), _NFS % _GOOD_O),
        "EFS006": (
            _NFS % _GOOD_O.replace("addr=fs.x", "addr=${EFS_DNS_NAME}"),
            _NFS % _GOOD_O.replace("addr=fs.x", "addr=${EFS_DNS_NAME:?set it}"),
        ),
    }
)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_the_bad_example_only(rule: str) -> None:
    bad, good = CASES[rule]
    assert rule in lint_compose_text(bad, f"{rule}-bad").rules()
    good_report = lint_compose_text(good, f"{rule}-good")
    assert rule not in good_report.rules(), [f.message for f in good_report.findings]
    assert "SCHEMA001" not in good_report.rules(), [f.message for f in good_report.findings]


def test_every_rule_has_an_example() -> None:
    assert {r.info.id for r in RULES} == set(CASES)


def test_nfs_version_missing_is_an_error_too() -> None:
    text = _NFS % _GOOD_O.replace("nfsvers=4.1,", "")
    rules = lint_compose_text(text, "no-version").rules()
    assert {"EFS004", "EFS003"} <= rules


def test_rule_ids_are_unique_and_advice_is_complete() -> None:
    ids = [r.info.id for r in RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert rule.info.why.endswith(".") and rule.info.fix and rule.info.name


def test_docs_list_every_rule() -> None:
    from efsray.compose import PARSE_RULES
    from tests.fixtures.deploy import ROOT

    docs = (ROOT / "docs" / "deploy.md").read_text()
    for info in [r.info for r in RULES] + list(PARSE_RULES.values()):
        assert f"| {info.id} | {info.name} | {info.severity.value} |" in docs, info.id
