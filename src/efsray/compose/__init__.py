"""Compose files for efsray stacks: a linter with rules that know Ray, EFS and NFS, the
compose-spec schema check, and the renderer for EFS volume blocks.

>>> from efsray.compose import lint_path
>>> report = lint_path("deploy/docker-compose.cloud.yml")  # doctest: +SKIP
>>> report.ok, [f.rule for f in report.findings]  # doctest: +SKIP
(True, [])
"""

from efsray.compose.findings import Finding, LintReport, RuleInfo, Severity
from efsray.compose.lint import lint_compose_text, lint_path, lint_paths
from efsray.compose.render import (
    DEFAULT_ROOT_DIR,
    DNS_PLACEHOLDER,
    EFS_VOLUMES,
    driver_opts,
    efs_volumes,
    nfs_options,
    render_volumes_yaml,
)
from efsray.compose.rules import PARSE_RULES, RAY_VERSION, RULES, Rule, rule_info
from efsray.compose.schema import compose_schema
from efsray.compose.token import TokenFile, generate_token, write_token

__all__ = [
    "DEFAULT_ROOT_DIR",
    "DNS_PLACEHOLDER",
    "EFS_VOLUMES",
    "PARSE_RULES",
    "RAY_VERSION",
    "RULES",
    "Finding",
    "LintReport",
    "Rule",
    "RuleInfo",
    "Severity",
    "TokenFile",
    "compose_schema",
    "driver_opts",
    "efs_volumes",
    "generate_token",
    "lint_compose_text",
    "lint_path",
    "lint_paths",
    "nfs_options",
    "render_volumes_yaml",
    "rule_info",
    "write_token",
]
