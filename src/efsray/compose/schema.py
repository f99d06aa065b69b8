"""Validate a compose document against the compose-spec JSON schema, without Docker.

check-jsonschema vendors the schema (``builtin_schemas/vendor/compose-spec.json``); we load
that file from the installed package and validate with jsonschema, so the check works offline
and always uses the schema version pinned by the installed check-jsonschema.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from efsray.errors import ComposeError

__all__ = ["SchemaIssue", "compose_schema", "schema_issues"]

_MAX_ISSUES = 50


class SchemaIssue:
    """One schema violation: where (a path of keys and indexes) and what."""

    __slots__ = ("message", "path")

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"SchemaIssue({self.path!r}, {self.message!r})"


@functools.cache
def compose_schema() -> dict[str, Any]:
    """The compose-spec schema bundled with check-jsonschema.

    Raises :class:`ComposeError` when check-jsonschema is not installed or has moved it.
    """
    try:
        files = resources.files("check_jsonschema.builtin_schemas.vendor")
        text = files.joinpath("compose-spec.json").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ComposeError(
            "the compose-spec schema was not found: install check-jsonschema "
            "(pip install 'efsray[compose]'), which bundles it "
            f"as check_jsonschema/builtin_schemas/vendor/compose-spec.json ({exc})"
        ) from None
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Any:
    schema = compose_schema()  # first: its error says what to install
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_issues(document: Any) -> Iterator[SchemaIssue]:
    """Every place where ``document`` breaks the compose-spec schema (at most 50).

    Where a value matches none of several alternatives (``oneOf``), the issue names the
    alternative that came closest, which is the message a person can act on.
    """
    validator = _validator()
    import jsonschema

    errors = []
    for error in validator.iter_errors(_with_string_keys(document)):
        if error.validator == "unevaluatedProperties":
            unknown = _unknown_keys(error)
            if not unknown:
                continue  # the keys are known but invalid: their own errors say why
            error.message = "unknown key(s): " + ", ".join(repr(k) for k in unknown)
        errors.append(error)
    errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
    for count, error in enumerate(errors):
        if count >= _MAX_ISSUES:
            yield SchemaIssue((), f"... and {len(errors) - _MAX_ISSUES} more schema violations")
            return
        best = jsonschema.exceptions.best_match([error])
        # best_match descends into oneOf/anyOf context to the most relevant sub-error.
        yield SchemaIssue(tuple(best.absolute_path), _message(best))


def _with_string_keys(value: Any) -> Any:
    """Mapping keys as Compose reads them (text): ``1:`` is the name "1", ``true:`` "true".
    jsonschema cannot match patterns against non-string keys."""
    if isinstance(value, dict):
        return {_key_text(k): _with_string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_string_keys(v) for v in value]
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _unknown_keys(error: Any) -> list[str]:
    """Keys of the instance that no ``properties`` of the schema (through allOf) define.

    jsonschema reports a known key whose value failed validation as "unevaluated" too; only
    truly unknown keys are worth a message of their own.
    """
    instance = error.instance
    if not isinstance(instance, dict):
        return []
    known = _known_properties(error.schema, depth=0)
    return sorted(str(k) for k in instance if str(k) not in known and not str(k).startswith("x-"))


def _known_properties(schema: Any, depth: int) -> set[str]:
    if not isinstance(schema, dict) or depth > 8:
        return set()
    names = set(schema.get("properties", {}))
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        names |= _known_properties(compose_schema()["$defs"].get(ref[8:]), depth + 1)
    for sub in schema.get("allOf", []):
        names |= _known_properties(sub, depth + 1)
    return names


def _message(error: Any) -> str:
    text = str(error.message)
    if len(text) > 300:
        text = text[:297] + "..."
    return text
