"""What the compose linter reports: a rule's identity and advice, and one finding per hit."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Finding", "LintReport", "RuleInfo", "Severity"]


class Severity(StrEnum):
    """How bad a finding is. Only errors make ``efsray compose lint`` exit non-zero
    (``--strict`` counts warnings too)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """A rule's identity and advice: what it checks, why that matters, how to fix it."""

    id: str
    name: str
    severity: Severity
    why: str
    fix: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one file: the rule that found it, where, and what exactly is wrong."""

    rule: str
    name: str
    severity: Severity
    file: str
    service: str | None
    path: str
    line: int | None
    message: str
    why: str
    fix: str

    @classmethod
    def of(
        cls,
        info: RuleInfo,
        *,
        file: str,
        message: str,
        service: str | None = None,
        path: str = "",
        line: int | None = None,
    ) -> Finding:
        return cls(
            rule=info.id,
            name=info.name,
            severity=info.severity,
            file=file,
            service=service,
            path=path,
            line=line,
            message=message,
            why=info.why,
            fix=info.fix,
        )

    @property
    def location(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} [{self.service}]" if self.service else where


@dataclass(frozen=True, slots=True)
class LintReport:
    """Every finding for one file, errors first."""

    file: str
    kind: str  # "compose", "env" or "unknown"
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def rules(self) -> set[str]:
        """The ids of every rule that fired."""
        return {f.rule for f in self.findings}
