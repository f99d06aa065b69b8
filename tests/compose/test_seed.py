"""The linter finds every defect of the seed's compose and env files.

tests/data/seed/ holds the original plan's files verbatim. Each row below is one defect that
issue #9 lists, with the rule that must report it: if a rule stopped firing, its row fails.
"""

from __future__ import annotations

import pytest

from efsray.compose import LintReport, Severity, lint_compose_text, lint_path
from tests.fixtures.deploy import SEED

CLOUD = SEED / "docker-compose.cloud.yml"
PRODUCTION = SEED / "docker-compose.production.yml"
ENV = SEED / ".env.cloud"


def _report(path) -> LintReport:
    return lint_path(path)


# (defect, file, rule, service, a piece of the message)
DEFECTS = [
    ("worker joins the client port", CLOUD, "RAY001", "ray-worker-cloud", "ray-head-cloud:10001"),
    ("worker joins the client port", PRODUCTION, "RAY001", "ray-worker", "ray-head:10001"),
    ("dashboard on all interfaces", CLOUD, "RAY003", "ray-head-cloud", "'8265:8265'"),
    ("client port on all interfaces", CLOUD, "RAY003", "ray-head-cloud", "'10001:10001'"),
    ("dashboard on all interfaces", PRODUCTION, "RAY003", "ray-head", "'8265:8265'"),
    ("no token auth on the head", CLOUD, "RAY004", "ray-head-cloud", "RAY_AUTH_MODE"),
    ("no token auth on workers", CLOUD, "RAY004", "ray-worker-cloud", "RAY_AUTH_MODE"),
    ("no token auth on the head", PRODUCTION, "RAY004", "ray-head", "RAY_AUTH_MODE"),
    ("no token auth on workers", PRODUCTION, "RAY004", "ray-worker", "RAY_AUTH_MODE"),
    ("no shm_size", CLOUD, "RAY008", "ray-worker-cloud", "shm_size"),
    ("no shm_size", PRODUCTION, "RAY008", "ray-head", "shm_size"),
    ("ray start exits (no --block)", CLOUD, "RAY009", "ray-head-cloud", "container exits"),
    ("ray start && sleep", PRODUCTION, "RAY009", "ray-worker", "time.sleep"),
    ("healthcheck `ray status`", CLOUD, "HC003", "ray-head-cloud", "ray status"),
    ("healthcheck opens a Ray client", PRODUCTION, "HC002", "ray-head", "ray.init"),
    ("worker without healthcheck", CLOUD, "HC001", "ray-worker-cloud", "healthcheck"),
    ("monitor without healthcheck", PRODUCTION, "HC001", "efs-monitor", "healthcheck"),
    ("health ignores the EFS mount", PRODUCTION, "HC005", "ray-head", "efs-logs"),
    ("obsolete version key", CLOUD, "CMP001", None, "'3.8'"),
    ("obsolete version key", PRODUCTION, "CMP001", None, "'3.8'"),
    ("intr in NFS options", CLOUD, "EFS001", None, "'intr'"),
    ("intr in NFS options", PRODUCTION, "EFS001", None, "'intr'"),
    ("noresvport/retrans missing", CLOUD, "EFS003", None, "retrans=2 is missing"),
    ("noresvport missing", PRODUCTION, "EFS003", None, "noresvport is missing"),
    ("monitor is a df loop", PRODUCTION, "SVC001", "efs-monitor", "polling loop"),
    ("monitor not efsray monitor", PRODUCTION, "SVC002", "efs-monitor", "efsray monitor"),
    ("connector not efsray sync", CLOUD, "SVC002", "neon-connector", "efsray sync"),
    ("connector not efsray sync", PRODUCTION, "SVC002", "neon-connector", "efsray sync"),
    # Beyond the list, also wrong in the seed:
    ("RAY_ADDRESS=0.0.0.0:10001", PRODUCTION, "RAY002", "ray-head", "0.0.0.0:10001"),
    ("Ray 2.9.0 image (no token auth)", PRODUCTION, "RAY010", "ray-worker", "2.9.0"),
    ("rayproject/ray:latest", CLOUD, "CMP003", "ray-worker-cloud", "latest"),
    ("alpine:latest", PRODUCTION, "CMP003", "efs-monitor", "alpine:latest"),
    ("fixed bridge subnet", PRODUCTION, "NET001", None, "172.20.0.0/16"),
    ("no restart policy", CLOUD, "RST001", "ray-worker-cloud", "restart"),
    ("EFS_DNS_NAME unguarded", CLOUD, "EFS006", None, "EFS_DNS_NAME"),
    ("RAY_HEAD_PORT=10001", ENV, "ENV001", None, "RAY_HEAD_PORT='10001'"),
    ("credential in .env.cloud", ENV, "ENV002", None, "NEON_CONNECTION_STRING"),
]


@pytest.mark.parametrize(
    ("defect", "path", "rule", "service", "fragment"),
    DEFECTS,
    ids=[f"{p.name}-{r}-{s or 'file'}-{d}" for d, p, r, s, _ in DEFECTS],
)
def test_seed_defect_is_found(defect, path, rule, service, fragment) -> None:
    report = _report(path)
    matches = [
        f
        for f in report.findings
        if f.rule == rule and f.service == service and fragment in f.message
    ]
    assert matches, (
        f"{defect}: no {rule} finding for {service} containing {fragment!r}; got "
        + "; ".join(f"{f.rule}[{f.service}] {f.message}" for f in report.findings)
    )
    for f in matches:
        assert f.why and f.fix and f.name and f.line is not None


def test_seed_files_fail_the_lint() -> None:
    for path in (CLOUD, PRODUCTION, ENV):
        report = _report(path)
        assert not report.ok, path
        assert report.errors >= 1


def test_seed_rule_sets_are_exactly_these() -> None:
    """Nothing spurious: the rules that fire on the seed are the expected ones, no more."""
    assert _report(CLOUD).rules() == {
        "CMP001", "CMP003", "EFS001", "EFS003", "EFS006", "HC001", "HC003", "HC005",
        "RAY001", "RAY003", "RAY004", "RAY008", "RAY009", "RST001", "SVC002",
    }  # fmt: skip
    assert _report(PRODUCTION).rules() == {
        "CMP001", "CMP003", "EFS001", "EFS003", "EFS006", "HC001", "HC002", "HC005",
        "NET001", "RAY001", "RAY002", "RAY003", "RAY004", "RAY008", "RAY009", "RAY010",
        "SVC001", "SVC002",
    }  # fmt: skip
    assert _report(ENV).rules() == {"ENV001", "ENV002"}


def test_seed_schema_is_valid_compose() -> None:
    """The seed's defects are semantic: Compose would accept the files as written."""
    for path in (CLOUD, PRODUCTION):
        assert "SCHEMA001" not in _report(path).rules()


def test_container_name_on_a_replicated_service() -> None:
    """The issue lists this defect, but the seed never combines the two (its replicated
    workers have no container_name): take the seed's cloud file and add one."""
    text = CLOUD.read_text()
    marker = "  ray-worker-cloud:\n    image: rayproject/ray:latest\n"
    assert marker in text
    text = text.replace(marker, marker + "    container_name: ray-worker\n")
    report = lint_compose_text(text, "seed-cloud+container_name")
    hits = [f for f in report.findings if f.rule == "CMP002"]
    assert len(hits) == 1
    assert hits[0].service == "ray-worker-cloud"
    assert hits[0].severity is Severity.ERROR
    assert "4 replicas" in hits[0].message
    # ...and the seed's own container_name on the (single) head is not a finding
    assert "CMP002" not in _report(CLOUD).rules()


def test_findings_point_at_the_right_lines() -> None:
    lines = CLOUD.read_text().splitlines()
    for f in _report(CLOUD).findings:
        assert f.line is not None
        assert 1 <= f.line <= len(lines)
    worker = next(f for f in _report(CLOUD).findings if f.rule == "RAY001")
    assert "ray-head-cloud:10001" in lines[worker.line - 1]
