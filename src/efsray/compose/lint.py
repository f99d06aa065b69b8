"""Lint compose files and env files: read safely, validate against the compose-spec schema,
run every rule, and return findings — never a traceback, whatever the input."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from efsray.compose.envlint import is_env_file, lint_env_text
from efsray.compose.findings import Finding, LintReport
from efsray.compose.model import ComposeDoc
from efsray.compose.rules import PARSE_RULES, RULES, Rule
from efsray.compose.schema import schema_issues
from efsray.compose.yamlio import MAX_BYTES, YamlProblem, load_yaml

__all__ = ["lint_compose_text", "lint_path", "lint_paths"]

logger = logging.getLogger("efsray.compose")

_YAML_RULE = {
    "syntax": "YAML001",
    "duplicate-key": "YAML002",
    "too-large": "YAML003",
    "too-deep": "YAML003",
    "recursive": "YAML003",
}


def lint_compose_text(
    text: str,
    file: str = "<text>",
    *,
    env: Mapping[str, str] | None = None,
    schema: bool = True,
    rules: Iterable[Rule] = RULES,
) -> LintReport:
    """Lint one compose document given as text.

    ``env`` supplies values for ``${VAR}`` (the file's own defaults are always used);
    ``schema=False`` skips the compose-spec validation.
    """
    try:
        loaded = load_yaml(text)
    except YamlProblem as problem:
        info = PARSE_RULES[_YAML_RULE.get(problem.kind, "YAML001")]
        finding = Finding.of(info, file=file, message=problem.message, line=problem.line)
        return LintReport(file, "compose", (finding,))
    findings: list[Finding] = []
    if not isinstance(loaded.data, dict):
        kind = type(loaded.data).__name__ if loaded.data is not None else "empty"
        findings.append(
            Finding.of(
                PARSE_RULES["YAML004"],
                file=file,
                message=f"the document is {kind}, not a mapping",
                line=loaded.line_of(()),
            )
        )
        return LintReport(file, "compose", tuple(findings))
    if schema:
        for issue in schema_issues(loaded.data):
            service = _service_of(issue.path)
            where = ".".join(str(p) for p in issue.path) or "(top level)"
            findings.append(
                Finding.of(
                    PARSE_RULES["SCHEMA001"],
                    file=file,
                    service=service,
                    path=where,
                    line=loaded.line_of(issue.path),
                    message=f"{where}: {issue.message}",
                )
            )
    doc = ComposeDoc(file=file, loaded=loaded, env=dict(env or {}))
    for rule in rules:
        try:
            hits = list(rule.check(doc))
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            logger.warning("rule %s failed on %s: %r", rule.info.id, file, exc)
            findings.append(
                Finding.of(
                    PARSE_RULES["LINT000"],
                    file=file,
                    message=f"rule {rule.info.id} ({rule.info.name}) could not check this "
                    f"file: {type(exc).__name__}: {exc}",
                )
            )
            continue
        for hit in hits:
            findings.append(
                Finding.of(
                    rule.info,
                    file=file,
                    message=hit.message,
                    service=hit.service,
                    path=".".join(str(p) for p in hit.path),
                    line=loaded.line_of(hit.path) if hit.path else None,
                )
            )
    return LintReport(file, "compose", _sorted(findings))


def lint_path(
    path: str | Path, *, env: Mapping[str, str] | None = None, schema: bool = True
) -> LintReport:
    """Lint one file: an env file (by name: ``.env*``, ``*.env``) or a compose file."""
    p = Path(path)
    file = str(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            message = f"the file is larger than {MAX_BYTES} bytes; not a compose file?"
            finding = Finding.of(PARSE_RULES["YAML003"], file=file, message=message)
            return LintReport(file, "unknown", (finding,))
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        finding = Finding.of(PARSE_RULES["FILE001"], file=file, message=f"cannot read: {reason}")
        return LintReport(file, "unknown", (finding,))
    if is_env_file(p.name):
        return LintReport(file, "env", _sorted(list(lint_env_text(text, file))))
    return lint_compose_text(text, file, env=env, schema=schema)


def lint_paths(
    paths: Iterable[str | Path], *, env: Mapping[str, str] | None = None, schema: bool = True
) -> list[LintReport]:
    """Lint several files, one report each, in the order given."""
    return [lint_path(p, env=env, schema=schema) for p in paths]


def _service_of(path: tuple[object, ...]) -> str | None:
    if len(path) >= 2 and path[0] == "services":
        return str(path[1])
    return None


def _sorted(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(
        sorted(findings, key=lambda f: (f.severity.rank, f.line or 0, f.rule, f.service or ""))
    )
