"""Lint an env file (``.env.cloud``, ``.env.cloud.example``) the way efsray will read it.

Each value is validated by :class:`efsray.config.Settings` itself, from the file alone (the
linting process's own environment does not leak in), and credentials that look real are
reported. Secrets are never echoed: connection strings are masked.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pydantic

from efsray.compose.findings import Finding
from efsray.compose.rules import PARSE_RULES
from efsray.config import Settings, explain_setting_error

__all__ = ["is_env_file", "lint_env_text"]

logger = logging.getLogger("efsray.compose")

_SECRET_KEY = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY)", re.I)
_PLACEHOLDER = re.compile(r"^(?:<[^>]*>|[A-Z0-9_.-]+|\*+|\$\{[^}]*\}|)$")
_URL_PASSWORD = re.compile(r"://[^/@:\s]+:([^@\s]*)@")
_KV_PASSWORD = re.compile(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def is_env_file(name: str) -> bool:
    """``.env``, ``.env.cloud``, ``.env.cloud.example``, ``prod.env``: env files."""
    return name.startswith(".env") or name.endswith(".env") or ".env." in name


def _parse(text: str) -> tuple[dict[str, str | None], dict[str, int]]:
    from dotenv import dotenv_values

    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if m:
            lines.setdefault(m.group(1), number)
    dotenv_logger = logging.getLogger("dotenv.main")
    previous = dotenv_logger.level
    dotenv_logger.setLevel(logging.ERROR)  # malformed lines are skipped; we report settings
    try:
        values = dict(dotenv_values(stream=io.StringIO(text), interpolate=False))
    finally:
        dotenv_logger.setLevel(previous)
    return values, lines


def lint_env_text(text: str, file: str) -> Iterator[Finding]:
    """Findings for one env file's text."""
    values, lines = _parse(text)
    fields = Settings.model_fields
    given = {k.lower(): v for k, v in values.items() if k.lower() in fields and v is not None}
    try:
        Settings.model_validate(given)  # validators only: no environment, no other files
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = err.get("loc") or ()
            field = str(loc[0]) if loc else ""
            message = explain_setting_error(err, given.get(field))
            yield Finding.of(
                PARSE_RULES["ENV001"], file=file, message=message, line=lines.get(field.upper())
            )
    for key, value in values.items():
        if not value:
            continue
        secret = None
        if m := _URL_PASSWORD.search(value):
            secret = m.group(1)
        elif m := _KV_PASSWORD.search(value):
            secret = m.group(1).strip("'")
        elif _SECRET_KEY.search(key) and not key.upper().endswith(("_FILE", "_PATH")):
            secret = value
        if secret is not None and not _PLACEHOLDER.match(secret):
            yield Finding.of(
                PARSE_RULES["ENV002"],
                file=file,
                message=f"{key} holds a credential that is not a placeholder",
                line=lines.get(key),
            )
