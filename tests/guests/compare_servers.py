"""The store's round trips on the kernel client against nfs-ganesha and knfsd, in one run.

    EFSRAY_GUESTS=1 PYTHONPATH=src python -m tests.guests.compare_servers [WORKDIR]

Boots two guests at once: one mounting nfs-ganesha on the host, one serving itself with
knfsd (efsray.testing.guests.vm, ``self_served``), and runs on each the measurements of
tests/guests/test_kernel_round_trips_knfsd.py (``measure_store``) plus 20 appends whose
merges keep their inputs (``free_merged_inputs = False``). Prints each operation's count per
call and per kind, and writes them to WORKDIR/compare.json. The figures of docs/store.md
"Round trips on EFS" (the knfsd and ganesha columns) come from here; needs root, QEMU and
nfs-ganesha like the guest tests. Takes ~4 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from pathlib import Path

from efsray.simfs.ganesha import GaneshaServer
from efsray.testing.guests.image import build_image
from efsray.testing.guests.vm import Guest, boot_guests
from tests.guests.test_kernel_round_trips import APPENDS
from tests.guests.test_kernel_round_trips_knfsd import (
    appends_keeping_inputs,
    measure_store,
    per_call,
)


def compare(base: Path) -> dict[str, dict[str, dict[str, int]]]:
    image = build_image()
    export, state = base / "export", base / "ganesha"
    export.mkdir(parents=True)
    state.mkdir()
    out: dict[str, dict[str, dict[str, int]]] = {}
    errors: list[BaseException] = []

    def run(server: str, guest: Guest) -> None:
        try:
            guest.run("import os; os.mkdir('compare')").check()
            counts = measure_store(guest, "compare/store", forget=True)
            counts["append, inputs kept"] = appends_keeping_inputs(guest, "compare/kept")
            out[server] = counts
        except BaseException as exc:  # re-raised below, in the main thread
            errors.append(exc)

    with (
        GaneshaServer.start(export, state) as ganesha,
        boot_guests(image, nfs_port=ganesha.port, workdir=base / "g", count=1) as (g,),
        boot_guests(image, workdir=base / "k", count=1, names=["knfsd0"], self_served=True) as (k,),
    ):
        threads = [
            threading.Thread(target=run, args=("ganesha", g)),
            threading.Thread(target=run, args=("knfsd", k)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return out


def main() -> int:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="compare."))
    out = compare(base)
    for server, counts in out.items():
        totals = per_call(counts)
        totals["append, inputs kept"] = sum(counts["append, inputs kept"].values()) / APPENDS
        for what, ops in counts.items():
            print(f"{server}: {what} {totals[what]:.2f} {dict(sorted(ops.items()))}")
    (base / "compare.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
