"""Many readers at once on the EFS-like mount: 32 processes read the same series, then 32
different series, while one writer on another "host" appends (the sweep's pattern); compared
with a lone reader in the same run. Readers read the latest version, or with ``--pinned`` the
version pinned at the start of each phase (as the sweep's tasks do).

Two simulated EFS mounts (efsray.simfs, profile efs-gp, an EFS client's 3 s attribute cache)
share one backing directory: two NFS clients of one server. The writer appends on mount W;
every reader runs on mount R, like the Ray workers of one node, so mount R's counters are
exactly the readers' round trips. Phases, each with its own fresh reader processes, started
together once every one has imported everything:

  same       N readers, full reads of S00 (the series being appended to); at the same
             time a lone reader of S00 on a third mount
  different  N readers, reader i full reads of S(i mod series); at the same time lone
             readers of S00 and of S01 (a quiet series), each on a mount of its own

Each lone reader runs beside the crowd, not in a phase of its own: S00's segment count
changes with every append and merge, so a lone reader measured before the crowd read other
versions, with other segment counts, than the crowd (earlier runs: 1.33-1.45x, an artefact).

A crowd is compared with the lone reader(s) beside it, weighted by what its readers
read (S00 or a quiet series): "vs lone" = round trips per read / the lone readers' mean.

Reported per phase: reads, aggregate MB/s (Arrow bytes returned / wall time from the start
signal to the last reader done), server round trips per read by kind, and a modelled EFS
time per read (bench/_efs.py). The simulator is one Python process that serves every request
of a mount from 10 libfuse threads under one GIL: with 32 readers it is the bottleneck, so the
MB/s here are the simulator's, not EFS's (which serves each client up to 500-1,500 MiB/s):
the round trips per read are the figure that carries over, and whether a crowd makes each
reader pay more of them than a lone one.

    python bench/readers.py                    # 32 readers, 8 series of 20,000 bars
    python bench/readers.py --readers 8 --reads 3 --rows 5000      # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import add_output_arguments, emit
from bench._efs import (
    Medium,
    OpTally,
    SimfsCounters,
    add_media_arguments,
    kinds_cell,
    model_json,
    model_table,
    nfs_readahead,
    settle,
)

TIMEFRAME = "1m"

_READER = """
import json, sys, time
args = json.loads(sys.argv[1])
from efsray.errors import EfsrayError
from efsray.store import Store
store = Store(args["root"])
print("ready", flush=True)
sys.stdin.readline()
got, errors, started = 0, [], time.perf_counter()
for k in range(args["reads"]):
    if k:
        time.sleep(args["pace"])  # pacing the load like a task between reads
    try:
        table = store.market.read(args["symbol"], args["timeframe"], version=args["version"])
    except EfsrayError as exc:  # a finding to report, not a reason to stop the others
        errors.append(f"{type(exc).__name__}: {exc}")
        continue
    got += table.nbytes
print(json.dumps({"bytes": got, "reads": args["reads"], "errors": errors,
                  "s": time.perf_counter() - started}), flush=True)
"""

_WRITER = """
import json, select, sys, time
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench"])
from bench.market_data import make_bars
from efsray.store import Store
store = Store(args["root"])
bars = make_bars(args["rows"] + args["max_appends"] * args["chunk"])
print("ready", flush=True)
n = 0
while n < args["max_appends"]:
    lo = args["rows"] + n * args["chunk"]
    store.market.append(args["symbol"], args["timeframe"], bars.iloc[lo : lo + args["chunk"]])
    n += 1
    # pace the appends; a line on stdin (or its end) stops the writer
    if select.select([sys.stdin], [], [], args["every"])[0]:
        break
print(json.dumps({"appends": n}), flush=True)
"""


def _child(code: str, arg: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(arg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise SystemExit(f"{what} did not start (said {line!r}); exit {proc.wait()}")


def _say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def phase(
    name: str,
    groups: list[tuple[str, Medium, list[str]]],
    writer_mount: Medium,
    args: argparse.Namespace,
    versions: dict[str, int | None],
) -> list[dict[str, Any]]:
    """One phase: every group ``(label, mount, symbols)`` at once, reader i of a group on its
    mount reading ``symbols[i]`` at ``versions[symbol]`` (None: the latest), while the writer
    appends to S00 on the other mount. One result per group, from its mount's counters."""
    readers = [
        [
            _child(
                _READER,
                {
                    "root": str(mount.root),
                    "symbol": s,
                    "timeframe": TIMEFRAME,
                    "reads": args.reads,
                    "version": versions[s],
                    "pace": args.read_every,
                },
            )
            for s in symbols
        ]
        for _, mount, symbols in groups
    ]
    everyone = [r for group in readers for r in group]
    writer = _child(
        _WRITER,
        {"root": str(writer_mount.root), "symbol": "S00", "timeframe": TIMEFRAME,
         "rows": args.rows + args.appended, "chunk": args.chunk, "every": args.every,
         "max_appends": 500, "bench": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    mounts = [mount for _, mount, _ in groups]
    try:
        for i, r in enumerate(everyone):
            _ready(r, f"reader {i}")
        _ready(writer, "the writer")
        for m in mounts:
            settle(m)
        before = [m.snapshot() for m in mounts]
        tracers = [
            m.counters.control if args.trace and isinstance(m.counters, SimfsCounters) else None
            for m in mounts
        ]
        for t in tracers:
            if t is not None:
                t.start_trace()
        started = time.perf_counter()
        for r in everyone:
            _say(r, "go")
        outs: list[list[dict[str, Any]]] = []
        walls = []
        for group in readers:  # a group's wall: from the start to its last reader done
            got = []
            for r in group:
                assert r.stdout is not None
                got.append(json.loads(r.stdout.readline()))
            outs.append(got)
            walls.append(time.perf_counter() - started)
        for m in mounts:
            settle(m)
        after = [m.snapshot() for m in mounts]
        traces = [t.stop_trace() if t is not None else [] for t in tracers]
        _say(writer, "stop")
        assert writer.stdout is not None
        appends = json.loads(writer.stdout.readline())["appends"]
        args.appended += appends * args.chunk
    finally:
        for p in [*everyone, writer]:
            if p.poll() is None and p.stdin is not None:
                p.stdin.close()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    from bench._efs import modelled_seconds, round_trips

    results = []
    for (label, _mount, symbols), got, wall, b, a, events in zip(
        groups, outs, walls, before, after, traces, strict=True
    ):
        assert b is not None and a is not None
        reads = sum(o["reads"] for o in got)
        errors = [e for o in got for e in o["errors"]]
        delta = a - b
        tally = OpTally()
        tally.add(wall, delta)
        per_read = {k: v / reads for k, v in delta.ops.items()}
        nbytes = sum(o["bytes"] for o in got)
        result = {
            "phase": f"{name}: {label}" if label else name,
            "readers": len(symbols),
            "series": len(set(symbols)),
            "symbols": symbols,
            "reads": reads,
            "wall_s": wall,
            "bytes": nbytes,
            "mb_s": nbytes / wall / 1e6,
            "reader_s_median": sorted(o["s"] for o in got)[len(got) // 2],
            "writer_appends": appends,
            "failed_reads": len(errors),
            "first_errors": sorted(set(errors))[:3],
            "round_trips_per_read": round_trips(per_read),
            "ops_per_read": per_read,
            "server_kib_read_per_read": delta.bytes_read / reads / 1024,
            "modelled_s_per_read": modelled_seconds(per_read, delta.bytes_read / reads),
            "round_trips_total": tally.summary()["round_trips"],
        }
        if events:
            result["trace_per_read"] = _trace_per_read(events, reads)
        rt = result["round_trips_per_read"]
        print(f"  {result['phase']}: {reads} reads, {result['mb_s']:.1f} MB/s, {rt:.1f} round "
              "trips per read", file=sys.stderr)  # fmt: skip
        results.append(result)
    return results


def _trace_per_read(events: list[tuple[str, ...]], reads: int) -> list[list[Any]]:
    """The reader mount's traced requests, by operation and path shape, per read."""
    from bench.market_data import _shape

    counts: dict[tuple[str, str], int] = {}
    for op, *paths in events:
        key = (op, " -> ".join(_shape(p, "/store/market_data/ohlcv/") for p in paths))
        counts[key] = counts.get(key, 0) + 1
    return [[op, shape, n / reads] for (op, shape), n in sorted(counts.items())]


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Many readers on the EFS-like mount",
        "",
        f"One run: `{result['command']}`. {result['description']}. Series of "
        f"{result['rows']:,} one-minute bars; readers on one mount, the writer on another "
        f"over the same backing directory (two clients of one server), appending "
        f"{result['chunk']:,} bars every {result['every']:g} s to S00. Each reader makes "
        f"{result['reads_per_reader']} full reads "
        f"({'at the version pinned at the start' if result['pinned'] else 'latest version'}), "
        f"each reader waiting {result['read_every']:g} s between its reads. Each lone reader "
        "runs on a mount of its own (another node) at the same time as the crowd, so that it "
        "reads the same versions: S00's segment count changes with every append and merge, "
        "and a lone reader measured in a phase of its own read a different number of "
        "segments than the crowd after it (the 1.33x-1.45x of earlier runs). "
        f"Machine: {result['cpus']} CPUs shared with other jobs (load average "
        f"{result['load_average']:.1f} at the start).",
        "",
        "| phase | readers | series | reads | failed | wall (s) | aggregate MB/s | round trips "
        "per read | vs lone | by kind (per read) | server KiB per read | modelled EFS ms per "
        "read |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for p in result["phases"]:
        vs = p["round_trips_per_read"] / p["lone_round_trips_per_read"]
        lines.append(
            f"| {p['phase']} | {p['readers']} | {p['series']} | {p['reads']} | "
            f"{p['failed_reads']} | "
            f"{p['wall_s']:.2f} | {p['mb_s']:.1f} | {p['round_trips_per_read']:.1f} | "
            f"{vs:.2f} | {kinds_cell(p['ops_per_read'])} | "
            f"{p['server_kib_read_per_read']:,.0f} | {p['modelled_s_per_read'] * 1e3:.1f} |"
        )
    for p in result["phases"]:
        if p["failed_reads"]:
            lines += ["", f"**{p['failed_reads']} of the {p['phase']} phase's reads failed**: "
                      + "; ".join(f"`{e}`" for e in p["first_errors"])]  # fmt: skip
    lines += [
        "",
        "Goal (issue 18.4): each reader costs no more round trips than a lone one (vs lone <= "
        "1.00). Aggregate MB/s is the simulator's: one Python process serving every request "
        "of the mount (10 libfuse threads, one GIL) on a shared 2-core machine, so it "
        "saturates long before EFS would; the round trips per read carry over to EFS, the "
        "MB/s do not. Attribute caching is shared by the readers of one mount (one kernel), "
        "as on one Ray node.",
        "",
        "## The EFS model",
        "",
        model_table(),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--series", type=int, default=8, help="series for the 'different' phase")
    parser.add_argument("--rows", type=int, default=20_000, help="bars per series at the start")
    parser.add_argument("--reads", type=int, default=4, help="full reads per reader")
    parser.add_argument("--chunk", type=int, default=1_000, help="bars per append")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between appends")
    parser.add_argument(
        "--read-every",
        type=float,
        default=0.5,
        help="seconds each reader waits between its reads (default: the writer's pace, so "
        "that every read, alone or in a crowd, finds about one new version; 0: back to back)",
    )
    parser.add_argument("--pinned", action="store_true", help="read a version pinned at start")
    parser.add_argument(
        "--trace", action="store_true", help="trace the readers' requests by path (simfs)"
    )
    add_media_arguments(parser, None)
    parser.add_argument("--workdir", type=Path, default=None)
    add_output_arguments(parser, "readers")
    args = parser.parse_args()
    args.appended = 0
    from bench.market_data import make_bars
    from efsray.simfs import SimFSConfig, SimFSProcess
    from efsray.store import Store

    base = Path(tempfile.mkdtemp(prefix="efsray-bench-readers-", dir=args.workdir))
    backing = base / "backing"
    backing.mkdir()
    # The series are written straight into the backing directory (the server's disk) before
    # either client mounts: setup is not what is measured.
    store = Store(backing / "store")
    bars = make_bars(args.rows)
    symbols = [f"S{i:02d}" for i in range(args.series)]
    for s in symbols:
        store.market.write(s, TIMEFRAME, bars)
    load = os.getloadavg()[0]
    try:
        configs = [
            SimFSConfig(
                mountpoint=base / m,
                backing=backing,
                profile=args.profile,
                attr_timeout=args.attr_timeout,
            )
            for m in ("readers", "writer", "lone-S00", "lone-S01")
        ]
        for c in configs:
            c.mountpoint.mkdir()
        with contextlib.ExitStack() as stack:
            fss = [stack.enter_context(SimFSProcess.start(c)) for c in configs]
            ra = nfs_readahead(fss[0].path)
            for fs in fss[1:]:
                nfs_readahead(fs.path)
            desc = (f"Simulated EFS (efsray.simfs, profile {args.profile}, attribute cache "
                    f"{args.attr_timeout:g} s, read-ahead {ra})")  # fmt: skip
            rm, wm, l0, l1 = (
                Medium(c.mountpoint.name, fs.path / "store", desc, SimfsCounters(fs.control))
                for c, fs in zip(configs, fss, strict=True)
            )
            n = args.readers
            versions: dict[str, int | None] = dict.fromkeys(symbols)
            if args.pinned:  # the sweep pins the versions at the driver; tasks read them
                market = Store(rm.root).market
                versions = {s: market.info(s, TIMEFRAME).version for s in symbols}
            # Each lone reader runs on a mount of its own (another node) at the same time as
            # the crowd: it reads the same versions at the same instants, so that its reads
            # find the segments and the new versions the crowd's find.
            crowd = [symbols[i % len(symbols)] for i in range(n)]
            phases = [
                *phase("same", [("", rm, ["S00"] * n), ("lone S00", l0, ["S00"])],
                       wm, args, versions),
                *phase("different", [("", rm, crowd), ("lone S00", l0, ["S00"]),
                                     ("lone S01", l1, ["S01"])], wm, args, versions),
            ]  # fmt: skip
            # a crowd's baseline: the lone reader of the written series (S00) for its readers
            # of S00, the lone reader of a quiet one (S01) for the others, in the same phase
            for crowd_phase, lones in ((phases[0], phases[1:2]), (phases[2], phases[3:])):
                lone = {p["symbols"][0]: p["round_trips_per_read"] for p in lones}
                who = crowd_phase["symbols"]
                crowd_phase["lone_round_trips_per_read"] = sum(
                    lone["S00" if s == "S00" else "S01"] for s in who
                ) / len(who)
                for p in lones:
                    p["lone_round_trips_per_read"] = p["round_trips_per_read"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "command": "python bench/readers.py " + " ".join(sys.argv[1:]),
        "description": desc,
        "cpus": os.cpu_count(),
        "load_average": load,
        "rows": args.rows,
        "chunk": args.chunk,
        "every": args.every,
        "reads_per_reader": args.reads,
        "pinned": args.pinned,
        "read_every": args.read_every,
        "model": model_json(),
        "phases": phases,
    }
    emit(args, result, markdown(result))


if __name__ == "__main__":
    main()
