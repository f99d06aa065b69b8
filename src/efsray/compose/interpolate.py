"""Compose variable interpolation, as far as a linter needs it.

Compose replaces ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?message}``, ``${VAR?message}`` and ``${VAR:+alternative}``; ``$$`` is a literal
``$``. The linter checks the file as committed, so it substitutes what the file itself
decides (defaults) plus any values it is given, and reports which variables stayed unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Interpolated", "interpolate", "variables"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Interpolated:
    """The text after substitution, and the variables that had no value and no default."""

    text: str
    unknown: tuple[str, ...]
    required: tuple[str, ...]  # variables written ${VAR:?...} or ${VAR?...}


def interpolate(text: str, env: Mapping[str, str] | None = None) -> Interpolated:
    """Substitute variables in ``text``; unknown ones stay as ``${NAME}``."""
    unknown: list[str] = []
    required: list[str] = []
    out = _subst(text, env or {}, unknown, required, depth=0)
    return Interpolated(out, tuple(dict.fromkeys(unknown)), tuple(dict.fromkeys(required)))


def variables(text: str) -> tuple[str, ...]:
    """Names of the variables ``text`` refers to, in order, each once."""
    names: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                i += 2
                continue
            m = _NAME.match(text, i + 2 if text[i + 1] == "{" else i + 1)
            if m:
                names.append(m.group())
        i += 1
    return tuple(dict.fromkeys(names))


def _subst(
    text: str, env: Mapping[str, str], unknown: list[str], required: list[str], depth: int
) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing_brace(text, i + 2)
            if end < 0:  # unterminated: Compose rejects it; keep it verbatim
                out.append(text[i:])
                break
            out.append(_expand(text[i + 2 : end], env, unknown, required, depth))
            i = end + 1
            continue
        m = _NAME.match(text, i + 1)
        if m:
            name = m.group()
            if name in env:
                out.append(env[name])
            else:
                unknown.append(name)
                out.append("${" + name + "}")
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    level = 1
    i = start
    while i < len(text):
        if text[i] == "{":
            level += 1
        elif text[i] == "}":
            level -= 1
            if level == 0:
                return i
        i += 1
    return -1


def _expand(
    body: str, env: Mapping[str, str], unknown: list[str], required: list[str], depth: int
) -> str:
    m = _NAME.match(body)
    if not m:
        return "${" + body + "}"  # not a variable Compose understands; leave it to the schema
    name = m.group()
    rest = body[m.end() :]
    value = env.get(name)
    for op in (":-", "-", ":?", "?", ":+", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            if depth < _MAX_DEPTH:
                arg = _subst(arg, env, unknown, required, depth + 1)
            empty_counts = op.startswith(":")
            missing = value is None or (empty_counts and value == "")
            if op in (":-", "-"):
                return arg if missing else str(value)
            if op in (":?", "?"):
                required.append(name)
                if missing:
                    unknown.append(name)
                    return "${" + name + "}"
                return str(value)
            return "" if missing else arg
    if rest:
        return "${" + body + "}"
    if value is None:
        unknown.append(name)
        return "${" + name + "}"
    return value
