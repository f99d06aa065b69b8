"""The compose lint rules: each one an id, a severity, why it matters, how to fix it, and a
small function that finds it.

Rules read the file through :class:`~efsray.compose.model.ComposeDoc`, which never raises on
odd shapes; the schema check (rule SCHEMA001) reports those. Values are interpolated with the
file's own defaults (``${VAR:-default}``), so a rule sees what Compose would run when the
variable is unset. A new rule goes into the module of its topic and into its ``RULES``, with
a bad and a corrected example in ``tests/compose/test_rules.py``.
"""

from __future__ import annotations

from efsray.compose.findings import RuleInfo
from efsray.compose.rules import compose, health, multihost, nfs, ray
from efsray.compose.rules._base import RAY_VERSION, Hit, Rule
from efsray.compose.rules.parse import PARSE_RULES

__all__ = ["PARSE_RULES", "RAY_VERSION", "RULES", "Hit", "Rule", "rule_info"]

RULES: tuple[Rule, ...] = (
    *compose.RULES,
    *ray.RULES,
    *multihost.RULES,
    *health.RULES,
    *nfs.RULES,
)


def rule_info(rule_id: str) -> RuleInfo:
    """The rule (check or parse rule) with this id; KeyError if there is none."""
    for rule in RULES:
        if rule.info.id == rule_id:
            return rule.info
    return PARSE_RULES[rule_id]
