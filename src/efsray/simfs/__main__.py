"""``python -m efsray.simfs --config JSON [--ready-fd N]``: one simulator, in the foreground.

This is what :class:`efsray.simfs.SimFSProcess` starts in a child process; people use
``efsray simulate`` instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from efsray.errors import EfsrayError
from efsray.simfs.server import serve
from efsray.simfs.spec import SimFSConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efsray.simfs", description=__doc__)
    parser.add_argument("--config", required=True, help="SimFSConfig as a JSON object")
    parser.add_argument("--ready-fd", type=int, default=None, help="pipe fd told 'ready'")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    try:
        serve(SimFSConfig.from_dict(json.loads(args.config)), ready_fd=args.ready_fd)
    except EfsrayError as exc:
        logging.getLogger("efsray.simfs").error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
