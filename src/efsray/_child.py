"""Entry point of a deadline child: ``python -m efsray._child`` (see efsray.deadline).

Reads ``{"target": "module:function", "payload": {...}}`` as JSON on stdin, calls the target
with the payload as keyword arguments, and writes ``{"result": ...}`` or ``{"error": {...}}``
as JSON on stdout. Nothing but JSON crosses the pipe.
"""

from __future__ import annotations

import importlib
import json
import sys


def main() -> int:
    request = json.loads(sys.stdin.read())
    module_name, _, func_name = request["target"].partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(**request.get("payload", {}))
        answer = {"result": result}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        answer = {
            "error": {
                "type": type(exc).__name__,
                "message": str(exc),
                "errno": getattr(exc, "errno", None),
            }
        }
    sys.stdout.write(json.dumps(answer, default=str))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
