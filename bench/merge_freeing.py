"""A/B of merges that free their inputs at once (``MarketDataStore.free_merged_inputs``,
docs/store.md "Disk"): the same series ingested with it on and off, alternating ingest for
ingest in one run; append rows/s (medians), disk bytes left (everything, old versions
included), and on a counted medium the server round trips per append (merges amortized).

    python bench/merge_freeing.py --rows 200000 --appends 40 --ingests 5
    python bench/merge_freeing.py --media efs-like --rows 200000 --appends 40 --ingests 1
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import add_output_arguments, disk_bytes, emit, median
from bench._efs import OpTally, add_media_arguments, disk_root, measured, open_media, settle
from bench.market_data import SYMBOL, TIMEFRAME, make_bars

MODES = {"freed at once": True, "kept until retention": False}


def run(medium: Any, rows: int, appends: int, ingests: int) -> dict[str, Any]:
    from efsray.store import Store

    bars = make_bars(rows)
    step = rows // appends
    chunks = [bars.iloc[k * step : (k + 1) * step] for k in range(appends)]
    rates: dict[str, list[float]] = collections.defaultdict(list)
    tallies: dict[str, OpTally] = collections.defaultdict(OpTally)
    disk: dict[str, int] = {}
    for i in range(ingests):
        order = list(MODES) if i % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            path = medium.root / f"{'freed' if MODES[mode] else 'kept'}-{i}"
            store = Store(path)
            store.market.free_merged_inputs = MODES[mode]
            os.sync()
            settle(medium)
            seconds = 0.0
            for chunk in chunks:
                t, _, delta = measured(
                    medium, lambda c=chunk, s=store: s.market.append(SYMBOL, TIMEFRAME, c)
                )
                seconds += t
                tallies[mode].add(t, delta, len(chunk))
            rates[mode].append(rows / seconds)
            disk[mode] = disk_bytes(disk_root(medium, path))
            print(f"  {medium.name} ingest {i + 1}: {mode} {rows / seconds:,.0f} rows/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    out: dict[str, Any] = {"medium": medium.name, "rows": rows, "appends": appends}
    for mode in MODES:
        out[mode] = {
            "append_rows_per_s": median(rates[mode]),
            "by_ingest": rates[mode],
            "disk_bytes": disk[mode],
            "append": tallies[mode].summary(),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Merges that free their inputs: A/B", "", f"`{result['command']}`", ""]
    for r in result["media"].values():
        lines += [f"## {r['medium']}: {r['rows']:,} bars in {r['appends']} appends", "",
                  "| merged inputs | append rows/s (median) | each ingest | disk (MiB) | "
                  "round trips per append |", "|---|---:|---|---:|---:|"]  # fmt: skip
        for mode in MODES:
            m = r[mode]
            trips = m["append"].get("round_trips_wsize")
            lines.append(
                f"| {mode} | {m['append_rows_per_s']:,.0f} | "
                + ", ".join(f"{x:,.0f}" for x in m["by_ingest"])
                + f" | {m['disk_bytes'] / 2**20:.1f} | "
                + ("-" if trips is None else f"{trips:.1f}")
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_media_arguments(parser, "local")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--appends", type=int, default=40)
    parser.add_argument("--ingests", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    add_output_arguments(parser, "merge_freeing")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": "python bench/merge_freeing.py " + " ".join(sys.argv[1:]),
        "load_average": os.getloadavg()[0],
        "media": {},
    }
    with open_media(
        args.media, workdir=args.workdir, profile=args.profile, attr_timeout=args.attr_timeout
    ) as media:
        for medium in media:
            result["media"][medium.name] = run(medium, args.rows, args.appends, args.ingests)
    emit(args, result, markdown(result))


if __name__ == "__main__":
    main()
