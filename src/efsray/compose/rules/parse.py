"""Rules about the file itself, reported while reading it (no check function)."""

from __future__ import annotations

from efsray.compose.findings import RuleInfo
from efsray.compose.rules._base import E, W, info

__all__ = ["PARSE_RULES"]

PARSE_RULES: dict[str, RuleInfo] = {
    r.id: r
    for r in (
        info(
            "FILE001",
            "unreadable-file",
            E,
            "The file could not be read, so nothing in it was checked.",
            "Check the path and permissions; the file must be UTF-8 text.",
        ),
        info(
            "YAML001",
            "yaml-syntax",
            E,
            "Compose refuses a file that is not valid YAML; nothing in it was checked.",
            "Fix the YAML at the line shown (indentation, quotes, a missing ':' or bracket).",
        ),
        info(
            "YAML002",
            "duplicate-key",
            E,
            "Compose rejects duplicate keys; other tools silently keep only the last one, so "
            "the file means different things to different readers.",
            "Remove or merge the repeated key.",
        ),
        info(
            "YAML003",
            "yaml-limits",
            E,
            "The document is too large, too deep, or its aliases refer to themselves or "
            "expand without bound; it was not checked, to keep the linter safe.",
            "Write the file plainly; compose files are small and need no recursive aliases.",
        ),
        info(
            "YAML004",
            "not-a-mapping",
            E,
            "A compose file is a mapping with top-level keys such as `services` and "
            "`volumes`; this document is something else.",
            "Start the file with `services:`.",
        ),
        info(
            "SCHEMA001",
            "compose-spec",
            E,
            "The file breaks the compose-spec schema: Compose would refuse it or read it "
            "differently from what it says.",
            "Fix the key or value named in the message (see https://compose-spec.io).",
        ),
        info(
            "LINT000",
            "rule-failed",
            E,
            "A lint rule could not check this input; the file has a shape the rule does not "
            "understand, so the check was not made.",
            "Fix the schema findings first; if none, report this as an efsray bug.",
        ),
        info(
            "ENV001",
            "invalid-setting",
            E,
            "efsray refuses this env file's value at start-up, so every service that reads "
            "the file would fail.",
            "Set the variable to a value of the kind the message names.",
        ),
        info(
            "ENV002",
            "credential-in-env-file",
            W,
            "The file holds a real-looking credential. Env files get committed, copied and "
            "printed; an example file must contain placeholders only.",
            "Keep real env files out of git (chmod 600, .gitignore) and write placeholders "
            "such as USER:PASSWORD in *.example files.",
        ),
    )
}
