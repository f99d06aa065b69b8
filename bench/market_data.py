"""Market-data benchmark: efsray vs ArcticDB (LMDB) vs the original plan's JSON snapshots,
on local disk AND on an EFS-like mount, in one invocation.

On each medium one symbol's one-minute bars are written as appends of 5,000 rows into each
system, in one run. efsray and ArcticDB take turns append for append and read for read, so
that machine noise hits both alike; the seed's appends and reads run after theirs. Reported
per medium and system: append rows/s, full read time, tail(1000) time, bytes on disk (old
versions included, efsray's superseded segments apart); and the ratios the market-data issue
sets as goals.

On a medium with a server (the simulated EFS mount, efsray.simfs profile efs-gp with an EFS
client's 3 s attribute cache; or a kernel NFS mount, ``--media nfs:PATH``) every call's server
round trips are counted by kind, and a modelled EFS time (round trips x EFS latency + bytes /
throughput, bench/_efs.py) sits beside each measured time.

Then, with strace, the filesystem calls one ``tail(1000)`` makes on local disk on a series
with 10 commits and on one with 2,000 commits: the count must not grow with history.

    python bench/market_data.py                  # default: a few minutes
    python bench/market_data.py --rows 1000000 --appends 200 \
        --efs-rows 200000 --efs-appends 40       # the issue's full sizes
    python bench/market_data.py --media nfs:/mnt/efs   # in a QEMU guest or on EC2
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import add_output_arguments, disk_bytes, emit, median, ms_cell
from bench._efs import (
    Medium,
    OpTally,
    add_media_arguments,
    disk_root,
    kinds_cell,
    measured,
    model_json,
    model_table,
    open_media,
    settle,
    simulated_seconds,
)

SYMBOL, TIMEFRAME = "AAPL", "1m"


def make_bars(rows: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.0005, rows)))
    open_ = np.r_[close[0], close[:-1]]
    wiggle = np.abs(rng.normal(0, 0.0003, rows)) * close
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2020-01-01", periods=rows, freq="1min", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) + wiggle,
            "low": np.minimum(open_, close) - wiggle,
            "close": close,
            "volume": rng.integers(100, 10_000, rows).astype(float),
        }
    )


# --- the three systems -----------------------------------------------------------------------


class Efsray:
    name = "efsray"

    options: ClassVar[dict[str, Any]] = {}  # MarketDataStore options (--merge-factor)

    def __init__(self, path: Path) -> None:
        from efsray.store import Store

        self.path = path
        self.store = Store(path, **self.options)

    def append(self, chunk: pd.DataFrame) -> None:
        self.store.market.append(SYMBOL, TIMEFRAME, chunk)

    def read(self) -> int:
        return len(self.store.market.read(SYMBOL, TIMEFRAME, output="pandas"))

    def tail(self, n: int) -> int:
        return len(self.store.market.tail(SYMBOL, TIMEFRAME, n, output="pandas"))


class ArcticDB:
    name = "arcticdb-lmdb"

    def __init__(self, path: Path) -> None:
        import arcticdb

        self.path = path
        self.lib = arcticdb.Arctic(f"lmdb://{path}?map_size=8GB").get_library(
            "bench", create_if_missing=True
        )
        self.first = True

    def append(self, chunk: pd.DataFrame) -> None:
        frame = chunk.set_index("timestamp")
        if self.first:
            self.lib.write(SYMBOL, frame)
            self.first = False
        else:
            self.lib.append(SYMBOL, frame)

    def read(self) -> int:
        return len(self.lib.read(SYMBOL).data)

    def tail(self, n: int) -> int:
        return len(self.lib.tail(SYMBOL, n).data)


class SeedJson:
    """The original plan's EFSDataManager: one indented JSON file per saved snapshot.

    Its names were ``{symbol}_{timeframe}_{int(time.time())}.json``, which collide (and lose
    data) when two saves happen within a second; a sequence number is added here so that the
    benchmark measures its speed, not its data loss.
    """

    name = "seed-json"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dir = path / "market_data" / "ohlcv"
        self.dir.mkdir(parents=True)
        self.seq = 0

    def append(self, chunk: pd.DataFrame) -> None:
        self.seq += 1
        data = {"symbol": SYMBOL, "timeframe": TIMEFRAME, "bars": chunk.to_dict("records")}
        with open(self.dir / f"{SYMBOL}_{TIMEFRAME}_{self.seq:012d}.json", "w") as f:
            json.dump(data, f, indent=2, default=str)

    def _files(self) -> list[str]:
        pattern = f"{SYMBOL}_{TIMEFRAME}_"
        return sorted(f for f in os.listdir(self.dir) if f.startswith(pattern))

    def _frame(self, files: list[str]) -> pd.DataFrame:
        bars: list[dict[str, Any]] = []
        for name in files:
            with open(self.dir / name) as f:
                bars.extend(json.load(f)["bars"])
        frame = pd.DataFrame.from_records(bars)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        return frame

    def read(self) -> int:
        return len(self._frame(self._files()))

    def tail(self, n: int) -> int:
        chosen: list[str] = []
        rows = 0
        for name in reversed(self._files()):
            chosen.insert(0, name)
            with open(self.dir / name) as f:
                rows += len(json.load(f)["bars"])
            if rows >= n:
                break
        return len(self._frame(chosen).iloc[-n:])


# --- filesystem calls of tail(1000), counted with strace ------------------------------------

_FS_CALLS = re.compile(
    r"^(?:\d+\s+)?(openat|open|read|pread64|readv|fstat|newfstatat|statx|stat|lstat|lseek|"
    r"close|getdents64|access|readlink)\("
)


def strace_child(root: str, symbol: str) -> None:
    from efsray.store import Store

    Store(root).market.tail(symbol, TIMEFRAME, 1000)  # imports and lazy initialization
    store = Store(root)  # a fresh store: no manifest cached in memory
    _mark("begin")
    store.market.tail(symbol, TIMEFRAME, 1000)
    _mark("end")


def _mark(what: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.stat(f"/nonexistent/efsray-mark-{what}")


def count_tail_calls(root: Path, symbol: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace"
        subprocess.run(
            [
                "strace",
                "-f",
                "-e",
                "trace=%file,%desc",
                "-o",
                str(trace),
                sys.executable,
                __file__,
                "--strace-child",
                str(root),
                symbol,
            ],
            check=True,
            capture_output=True,
        )
        counts: collections.Counter[str] = collections.Counter()
        inside = False
        for line in trace.read_text().splitlines():
            if "efsray-mark-begin" in line:
                inside = True
                continue
            if "efsray-mark-end" in line:
                break
            match = _FS_CALLS.match(line)
            if inside and match:
                counts[match.group(1)] += 1
    return {"total": sum(counts.values()), **dict(sorted(counts.items()))}


def history_scaling(work: Path) -> dict[str, Any]:
    from efsray.store import Store

    store = Store(work / "history")
    chunk = make_bars(2000 * 100, seed=3)
    out = {}
    for symbol, commits in (("H10", 10), ("H2000", 2000)):
        for k in range(commits):
            store.market.append(symbol, TIMEFRAME, chunk.iloc[k * 100 : (k + 1) * 100])
        info = store.market.info(symbol, TIMEFRAME)
        out[symbol] = {
            "commits": commits,
            "rows": info.rows,
            "segments": info.segments,
            "fs_calls_per_tail_1000": count_tail_calls(work / "history", symbol),
        }
    return out


# --- the run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    """What one medium runs: sizes and repetitions."""

    rows: int
    appends: int
    ingests: int
    reads: int  # full reads of each fast system (the seed reads max(1, reads // 6) times)
    tails: int  # tail(1000) calls of each fast system (the seed's: max(2, tails // 10))


def _ingest(
    medium: Medium,
    group: list[Any],
    chunks: list[pd.DataFrame],
    tallies: dict[tuple[str, str], OpTally],
    label: str,
) -> dict[str, float]:
    """Append every chunk to every system of ``group``, taking turns to go first; returns the
    systems' rows/s and adds each append's time and round trips to ``tallies``."""
    os.sync()
    settle(medium)
    seconds = dict.fromkeys((s.name for s in group), 0.0)
    for k, chunk in enumerate(chunks):
        for s in group if k % 2 == 0 else reversed(group):
            t, _, delta = measured(medium, lambda s=s, chunk=chunk: s.append(chunk))
            seconds[s.name] += t
            tallies[s.name, "append"].add(t, delta, len(chunk))
    rows = sum(len(c) for c in chunks)
    print(f"  {medium.name} {label}: "
          + ", ".join(f"{n} {rows / t:,.0f} rows/s" for n, t in seconds.items()),
          file=sys.stderr, flush=True)  # fmt: skip
    return {n: rows / t for n, t in seconds.items()}


def _calls(
    medium: Medium,
    group: list[Any],
    repeats: int,
    op: str,
    call: Callable[[Any], int],
    expect: int,
    tallies: dict[tuple[str, str], OpTally],
) -> None:
    """``repeats`` calls of ``op`` on every system of ``group``, taking turns to go first
    (whoever runs right after the other inherits its freed memory)."""
    for k in range(repeats):
        for s in group if k % 2 == 0 else reversed(group):
            settle(medium)
            t, n, delta = measured(medium, lambda s=s: call(s))
            assert n == expect, (s.name, op, n)
            tallies[s.name, op].add(t, delta, n)


def run_medium(medium: Medium, plan: Plan, with_arctic: bool) -> dict[str, Any]:
    bars = make_bars(plan.rows)
    step = plan.rows // plan.appends
    chunks = [bars.iloc[k * step : (k + 1) * step] for k in range(plan.appends)]
    rows = step * plan.appends
    work = medium.root
    # efsray and ArcticDB each ingest the series ``ingests`` times, into fresh directories,
    # alternating append for append (taking turns to go first). One ingest takes ~1 s on
    # local disk, and the disk's and memory's noise on this VM moved the ratio of
    # single-ingest runs of the same code from 0.92 to 1.22, so the figures are medians over
    # ingests and the goal's ratio the median of the ingests' paired ratios. Earlier ingests'
    # files are kept until the end: deleting them would slow the next ingest's file creation
    # on a journal-less ext4 (recently freed inodes are skipped), which only efsray does. The
    # seed ingests once, afterwards, on its own: it writes ~1 MB of JSON per append without
    # fsync, and that dirty data would otherwise be flushed by (and charged to) the next
    # system's fsync.
    tallies: dict[tuple[str, str], OpTally] = collections.defaultdict(OpTally)
    rates: dict[str, list[float]] = collections.defaultdict(list)
    fast: list[Any] = []
    for i in range(plan.ingests):
        fast = [Efsray(work / f"efsray-{i}")]
        if with_arctic:
            fast.append(ArcticDB(work / f"arcticdb-{i}"))
        got = _ingest(
            medium, fast[::-1] if i % 2 else fast, chunks, tallies, f"ingest {i + 1}/{plan.ingests}"
        )
        for name, rate in got.items():
            rates[name].append(rate)
    slow: list[Any] = [SeedJson(work / "seed")]
    for name, rate in _ingest(medium, slow, chunks, tallies, "seed").items():
        rates[name].append(rate)
    systems = fast + slow  # reads and tails: the last ingest's stores
    os.sync()
    # The seed's reads (seconds each, a million Python dicts) run after the others', so
    # that their memory churn does not land on them.
    _calls(medium, fast, plan.reads, "full read", lambda s: s.read(), rows, tallies)
    _calls(medium, slow, max(1, plan.reads // 6), "full read", lambda s: s.read(), rows, tallies)
    _calls(medium, fast, plan.tails, "tail(1000)", lambda s: s.tail(1000), 1000, tallies)
    _calls(medium, slow, max(2, plan.tails // 10), "tail(1000)", lambda s: s.tail(1000), 1000,
           tallies)  # fmt: skip
    per_system: dict[str, Any] = {}
    for s in systems:
        ops = {op: tallies[s.name, op].summary() for op in OPS}
        entry: dict[str, Any] = {
            "append_rows_per_s": median(rates[s.name]),
            "append_rows_per_s_by_ingest": rates[s.name],
            "full_read_s": ops["full read"]["median_s"],
            "tail_1000_s": ops["tail(1000)"]["median_s"],
            "ops": ops,
            **disk_usage(medium, s),
        }
        per_system[s.name] = entry
    profile = medium.extra.get("profile")
    if profile:  # per call: the simulator's sleep for its requests, and the rest (medians)
        for name, entry in per_system.items():
            for op, o in entry["ops"].items():
                tally = tallies[name, op]
                if len(tally.deltas) != len(tally.seconds) or not tally.deltas:
                    continue
                slept = [simulated_seconds(d.ops, profile) for d in tally.deltas]
                o["simulated_s"] = median(slept)
                o["client_s"] = median([t - z for t, z in zip(tally.seconds, slept, strict=True)])
    return {
        "medium": medium.name,
        "profile": profile,
        "description": medium.description,
        "counters": medium.counters.name if medium.counters else None,
        "rows": rows,
        "appends": plan.appends,
        "ingests": plan.ingests,
        "systems": per_system,
        "goals": goals(per_system, counted=medium.counters is not None),
    }


OPS = ("append", "full read", "tail(1000)")


def disk_usage(medium: Medium, system: Any) -> dict[str, Any]:
    """Allocated bytes of everything the system left (old versions included), measured on
    local disk (the simulator's backing directory) so that measuring costs no round trips;
    for efsray, also the bytes of the latest version's segments, the rest being superseded
    segments, manifests and hints."""
    root = disk_root(medium, system.path)
    out: dict[str, Any] = {"disk_bytes": disk_bytes(root)}
    if isinstance(system, Efsray):
        info = system.store.market.info(SYMBOL, TIMEFRAME)
        out.update(live_segment_bytes=info.bytes, segments=info.segments, version=info.version)
        segments = root / "market_data" / "ohlcv" / SYMBOL / TIMEFRAME / "segments"
        names = os.listdir(segments)
        moved = [n for n in names if n.endswith(".moved")]
        out.update(
            segment_files=len(names) - len(moved),
            redirects=len(moved),
            redirect_bytes=sum(
                os.lstat(segments / n).st_blocks * 512 / os.lstat(segments / n).st_nlink
                for n in moved
            ),
        )
    return out


# --- where one call's round trips go (simfs operation trace) -----------------------------------

_HEXISH = re.compile(r"[0-9a-f]{8,}(?:-[0-9a-f]{4,})*")
_DIGITS = re.compile(r"\d{3,}")


def _shape(path: str, prefix: str) -> str:
    """A traced path, relative to the series and with unique parts folded: ``seg-*.arrow``."""
    if path.startswith(prefix):
        path = "<series>" + path[len(prefix) :]
    return _DIGITS.sub("N", _HEXISH.sub("*", path))


def trace_calls(medium: Medium, rows: int) -> dict[str, list[list[Any]]]:
    """The simulator's operation trace of one efsray append, a cold and a warm tail(1000) and
    a cold full read on the series the benchmark wrote: every round trip with its path, so
    that docs/store.md can say where they go. Consecutive equal operations are folded."""
    control = medium.extra["simfs"].control
    root = medium.root / "efsray-0"
    series = f"/{root.relative_to(medium.root)}/market_data/ohlcv/{SYMBOL}/{TIMEFRAME}"
    more = make_bars(rows + 5000).iloc[rows:]
    out: dict[str, list[list[Any]]] = {}

    def traced(name: str, call: Callable[[], Any]) -> None:
        settle(medium)
        control.start_trace()
        try:
            call()
        finally:
            events = control.stop_trace()
        folded: list[list[Any]] = []
        for op, *paths in events:
            shape = " -> ".join(_shape(p, series) for p in paths)
            if folded and folded[-1][:2] == [op, shape]:
                folded[-1][2] += 1
            else:
                folded.append([op, shape, 1])
        out[name] = folded

    traced("append (5,000 bars, new store handle)",
           lambda: Efsray(root).append(more))  # fmt: skip
    traced("tail(1000), new store handle", lambda: Efsray(root).tail(1000))
    warm = Efsray(root)
    warm.tail(1000)
    traced("tail(1000), same handle again", lambda: warm.tail(1000))
    traced("full read, new store handle", lambda: Efsray(root).read())
    return out


# --- goals and tables -------------------------------------------------------------------------


def goals(systems: dict[str, Any], *, counted: bool) -> list[dict[str, Any]]:
    """The issue's goals as ratios in this run (time ratios: other/efsray, >= 1 is met); on
    a counted medium also the same ratios of modelled EFS time."""
    e, s = systems["efsray"], systems["seed-json"]
    a = systems.get("arcticdb-lmdb")
    out: list[dict[str, Any]] = []

    def add(goal: str, other: dict[str, Any], op: str, threshold: float = 1.0) -> None:
        o, m = other["ops"][op], e["ops"][op]
        g: dict[str, Any] = {"goal": goal, "threshold": threshold}
        if op == "append":
            # rows/s: paired per ingest where both ingested alike (the seed ingests once)
            if len(other["append_rows_per_s_by_ingest"]) == len(e["append_rows_per_s_by_ingest"]):
                paired = [
                    x / y
                    for x, y in zip(
                        e["append_rows_per_s_by_ingest"],
                        other["append_rows_per_s_by_ingest"],
                        strict=True,
                    )
                ]
                g["ratio"] = median(paired)
                g["by_ingest"] = [round(r, 3) for r in paired]
            else:
                g["ratio"] = e["append_rows_per_s"] / other["append_rows_per_s"]
        else:
            g["ratio"] = o["median_s"] / m["median_s"]
        if counted and "modelled_s" in o and "modelled_s" in m:
            # per call of the same rows: modelled time per row for appends
            om = o["modelled_s"] / (o["units"] / o["calls"]) if op == "append" else o["modelled_s"]
            mm = m["modelled_s"] / (m["units"] / m["calls"]) if op == "append" else m["modelled_s"]
            # a system whose call made no round trip (ArcticDB's mapped pages) has no ratio
            g["modelled_ratio"] = om / mm if om > 0 and mm > 0 else None
            g["round_trips"] = {"efsray": m["round_trips"], "other": o["round_trips"]}
        out.append(g)

    if a:
        add("appends >= 1.0x ArcticDB (efsray/arcticdb rows/s)", a, "append")
        add("full read >= 1.0x ArcticDB (arcticdb/efsray time)", a, "full read")
        add("tail(1000) >= 1.0x ArcticDB (arcticdb/efsray time)", a, "tail(1000)")
    add("appends vs the seed (efsray/seed rows/s)", s, "append", 0.0)
    add("full read >= 30x the seed (seed/efsray time)", s, "full read", 30.0)
    add("tail(1000) vs the seed (seed/efsray time)", s, "tail(1000)", 0.0)
    for g in out:
        g["met"] = g["ratio"] >= g["threshold"]
        if g.get("modelled_ratio") is not None:
            g["modelled_met"] = g["modelled_ratio"] >= g["threshold"]
    return out


def medium_markdown(r: dict[str, Any]) -> list[str]:
    counted = r["counters"] is not None
    lines = [
        f"## {r['description']}",
        "",
        f"{r['rows']:,} one-minute bars as {r['appends']} appends of "
        f"{r['rows'] // r['appends']:,}; "
        f"efsray and ArcticDB alternate append for append, {r['ingests']} ingest(s) each "
        "(medians), the seed's one after them. Disk: allocated bytes of everything left, "
        "old versions included.",
        "",
        "| system | append rows/s | full read (ms) | tail(1000) (ms) | disk (MiB) |"
        + (" modelled EFS: append / full read / tail (ms) |" if counted else ""),
        "|---|---:|---:|---:|---:|" + ("---:|" if counted else ""),
    ]
    for name, s in r["systems"].items():
        row = (f"| {name} | {s['append_rows_per_s']:,.0f} | {ms_cell(s['full_read_s'])} | "
               f"{ms_cell(s['tail_1000_s'])} | {s['disk_bytes'] / 2**20:.1f} |")  # fmt: skip
        if counted:
            row += " " + " / ".join(ms_cell(s["ops"][op].get("modelled_s")) for op in OPS) + " |"
        lines.append(row)
    e = r["systems"]["efsray"]
    if "live_segment_bytes" in e:
        live = e["live_segment_bytes"]
        lines += ["", f"efsray's disk: {live / 2**20:.1f} MiB in the {e['segments']} segments "
                  f"of the latest version (v{e['version']}), "
                  f"{(e['disk_bytes'] - live) / 2**20:.1f} MiB superseded segments, manifests "
                  "and hints (counted above)"
                  + (f"; {e['segment_files']} segment files and {e['redirects']} redirects "
                     f"of merged-away segments ({e['redirect_bytes'] / 2**20:.1f} MiB) on disk"
                     if "redirects" in e else "") + "."]  # fmt: skip
    if counted:
        lines += [
            "",
            f"### Server round trips per call, by kind ({r['counters']}; means over calls, "
            "appends' merges amortized)",
            "",
            "Writes counted per 1 MiB wsize of each file, as an NFS client sends them (the "
            "issue's budgets and the model use this); *as counted*: the simulator's requests, "
            "one per `write()` call.",
            "",
            "*Simulated latency*: what the simulator slept for a call's requests (its "
            "profile; close is charged as a write-class call there); *client*: the call's "
            "time minus it, i.e. decoding, Python and FUSE hand-offs (medians over calls).",
            "",
            "| system | operation | calls | measured (ms, median) | simulated latency / client "
            "(ms) | round trips (min-max) | as counted | by kind | KiB read / written | "
            "modelled EFS (ms) |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for name, s in r["systems"].items():
            for op in OPS:
                o = s["ops"][op]
                if "round_trips" not in o:
                    continue
                split = (
                    f"{o['simulated_s'] * 1e3:.1f} / {o['client_s'] * 1e3:.1f}"
                    if "client_s" in o
                    else "-"
                )
                lines.append(
                    f"| {name} | {op} | {o['calls']} | {ms_cell(o['median_s'])} | {split} | "
                    f"{o['round_trips_wsize']:.1f} ({o['round_trips_min']:.0f}-"
                    f"{o['round_trips_max']:.0f}) | {o['round_trips']:.1f} | "
                    f"{kinds_cell(o['ops_wsize'])} | "
                    f"{o['bytes_read'] / 1024:,.0f} / {o['bytes_written'] / 1024:,.0f} | "
                    f"{ms_cell(o['modelled_s'])} |"
                )
    a = r["systems"].get("arcticdb-lmdb")
    if counted and a and a["ops"]["full read"].get("round_trips") == 0:
        lines += ["", "ArcticDB's reads made no round trip: LMDB maps its data file, and the "
                  "mapped pages stay in this client's page cache (no open, so no close-to-open "
                  "revalidation). That is also why LMDB is unsafe on NFS with a writer on "
                  "another host: its reader would not see the new pages. Its modelled ratios "
                  "are left out (-)."]  # fmt: skip
    lines += ["", "### Ratios in this run", "",
              "| goal | measured | met |" + (" modelled EFS | met |" if counted else ""),
              "|---|---:|---|" + ("---:|---|" if counted else "")]  # fmt: skip
    for g in r["goals"]:
        row = f"| {g['goal']} | {g['ratio']:.2f} | {'yes' if g['met'] else 'NO'} |"
        if counted:
            row += (f" {g['modelled_ratio']:.2f} | {'yes' if g['modelled_met'] else 'NO'} |"
                    if g.get("modelled_ratio") is not None else " - | - |")  # fmt: skip
        lines.append(row)
    for g in r["goals"]:
        if "by_ingest" in g and len(g["by_ingest"]) > 1:
            lines += ["", f"{g['goal']}, each ingest: "
                      + ", ".join(f"{x:.2f}" for x in g["by_ingest"]) + "."]  # fmt: skip
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Market-data benchmark",
        "",
        f"One run: `{result['command']}` (machine: {result['cpus']} CPUs, load average "
        f"{result['load_average']:.1f} at the start, shared with other jobs: ratios within a "
        "medium are meaningful, absolute times much less). efsray, ArcticDB (LMDB) and the "
        "seed's JSON snapshots on the same medium; round trips from the medium's server "
        "counters; modelled EFS time = round trips x EFS General Purpose latency + bytes / "
        "per-client throughput (docs/performance.md).",
        "",
    ]
    for r in result["media"].values():
        lines += [*medium_markdown(r), ""]
    for r in result["media"].values():
        for call, events in r.get("traces", {}).items():
            n = sum(e[2] for e in events)
            lines += [f"## Where the round trips of one efsray {call} go ({r['medium']})", "",
                      f"{n} operations, in order (x N: repeated), `<series>` = "
                      f"`market_data/ohlcv/{SYMBOL}/{TIMEFRAME}`:", ""]  # fmt: skip
            lines += [f"{i}. {op} `{path}`" + (f" x {k}" if k > 1 else "")
                      for i, (op, path, k) in enumerate(events, 1)]  # fmt: skip
            lines.append("")
    if "history" in result:
        lines += [
            "## Filesystem calls of one tail(1000) on local disk (strace)",
            "",
            "| series | commits | segments | calls | breakdown |",
            "|---|---:|---:|---:|---|",
        ]
        for name, h in result["history"].items():
            calls = dict(h["fs_calls_per_tail_1000"])
            total = calls.pop("total")
            lines.append(
                f"| {name} | {h['commits']} | {h['segments']} | {total} | "
                f"{', '.join(f'{k} {v}' for k, v in calls.items())} |"
            )
        lines.append("")
    lines += ["## The EFS model", "", model_table()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_media_arguments(parser, "local,efs-like")
    parser.add_argument("--rows", type=int, default=200_000, help="bars, local disk")
    parser.add_argument("--appends", type=int, default=40, help="appends, local disk")
    parser.add_argument("--ingests", type=int, default=5, help="ingests, local disk (medians)")
    parser.add_argument("--reads", type=int, default=30, help="full reads, local disk")
    parser.add_argument("--tails", type=int, default=100, help="tail(1000) calls, local disk")
    parser.add_argument("--efs-rows", type=int, default=50_000, help="bars, counted media")
    parser.add_argument("--efs-appends", type=int, default=10, help="appends, counted media")
    parser.add_argument("--efs-ingests", type=int, default=1)
    parser.add_argument("--efs-reads", type=int, default=6)
    parser.add_argument("--efs-tails", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    add_output_arguments(parser, "market_data")
    parser.add_argument("--no-arcticdb", action="store_true")
    parser.add_argument(
        "--merge-factor", type=int, default=None, help="efsray's merge_factor (default: store's)"
    )
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument("--strace-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.strace_child:
        strace_child(*args.strace_child)
        return
    with_arctic = not args.no_arcticdb
    if args.merge_factor is not None:
        Efsray.options = {"merge_factor": args.merge_factor}
    if with_arctic:
        try:
            import arcticdb  # noqa: F401
        except ImportError:
            print("arcticdb is not installed (pip install -e '.[bench]'); skipping it")
            with_arctic = False
    local = Plan(args.rows, args.appends, args.ingests, args.reads, args.tails)
    remote = Plan(args.efs_rows, args.efs_appends, args.efs_ingests, args.efs_reads, args.efs_tails)
    result: dict[str, Any] = {
        "command": "python bench/market_data.py " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "model": model_json(),
        "media": {},
    }
    with open_media(
        args.media, workdir=args.workdir, profile=args.profile, attr_timeout=args.attr_timeout
    ) as media:
        for medium in media:
            plan = local if medium.counters is None else remote
            print(f"{medium.description}: {plan}", file=sys.stderr, flush=True)
            result["media"][medium.name] = run_medium(medium, plan, with_arctic)
            if "simfs" in medium.extra:
                result["media"][medium.name]["traces"] = trace_calls(medium, plan.rows)
            if medium.name == "local" and not args.no_strace and shutil.which("strace"):
                result["history"] = history_scaling(medium.root)
    emit(args, result, markdown(result))


if __name__ == "__main__":
    main()
