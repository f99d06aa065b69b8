"""Process targets and payload helpers for the checkpoint, results and retention tests.

Children start from the shared fork server (tests/store/_procs.py), which has already
imported everything, so a start costs a few milliseconds and hundreds of SIGKILLs stay cheap.
"""

from __future__ import annotations

import hashlib
import os
import random
import traceback
from pathlib import Path
from typing import Any

from efsray.store import Store

MODEL = "net"


def fork_context() -> Any:
    from tests.store._procs import context

    return context()


def payload(seed: str, size: int) -> bytes:
    """Deterministic bytes for (seed, size): the test recomputes what a save should hold."""
    return random.Random(seed).randbytes(size)


def make_source_dir(path: Path, seed: str, files: int = 5, size: int = 64 << 10) -> str:
    """A small checkpoint directory (nested, with an empty dir); returns its content hash."""
    rng = random.Random(seed)
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "empty").mkdir()
    for i in range(files):
        where = path / ("sub" if i % 2 else ".") / f"f{i}.bin"
        where.write_bytes(rng.randbytes(rng.randint(0, size)))
    (path / "sub" / "deeper" / ".metadata.json").write_text('{"ray": true}')
    return tree_hash(path)


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        if p.is_file():
            h.update(p.read_bytes())
        h.update(b"\1")
    return h.hexdigest()


def expected_content(meta: dict[str, Any]) -> bytes:
    return payload(str(meta["seed"]), int(meta["size"]))


def gather(pipes: list[Any], procs: list[Any], timeout: float = 120) -> list[Any]:
    """Each worker's ``("ok", value)`` answer, in order; a worker that reported an error (or
    nothing within ``timeout`` s) fails the test with it."""
    answers = []
    for recv, p in zip(pipes, procs, strict=True):
        assert recv.poll(timeout), "a worker did not answer"
        status, value = recv.recv()
        assert status == "ok", value
        answers.append(value)
        p.join(10)
    return answers


# --- targets ---------------------------------------------------------------------------------


def save_many(root: str, writer: int, count: int, size: int, go: Any, conn: Any) -> None:
    """Wait for ``go``, save ``count`` checkpoints of MODEL, report the versions."""
    try:
        store = Store(root, create=False)
        go.wait(30)
        versions = []
        for i in range(count):
            seed = f"w{writer}-{i}"
            sz = size if i % 3 else size * 4
            info = store.checkpoints.save(MODEL, payload(seed, sz), {"seed": seed, "size": sz})
            versions.append(info.version)
        conn.send(("ok", versions))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def save_forever(root: str, seed: int, sources: list[str], conn: Any) -> None:
    """Save bytes and directory checkpoints until killed; report each committed version."""
    store = Store(root, create=False)
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        if rng.random() < 0.3:
            index = rng.randrange(len(sources))
            info = store.checkpoints.save_directory(
                MODEL, sources[index], {"kind": "dir", "source": index}
            )
        else:
            tag = f"{seed}-{n}"
            size = rng.choice([0, 1, 4096, 100_000, 600_000])
            info = store.checkpoints.save(MODEL, payload(tag, size), {"seed": tag, "size": size})
        conn.send(info.version)


def save_runs(root: str, writer: int, count: int, go: Any, conn: Any, fixed_id: str | None) -> None:
    """Save ``count`` backtest runs; with ``fixed_id``, the first id drawn is that one."""
    try:
        import pandas as pd

        from efsray.store import ResultStore
        from efsray.store.ids import new_id

        store = Store(root, create=False)
        drawn = [fixed_id] if fixed_id else []

        def ids() -> str:
            return drawn.pop() if drawn else new_id()

        results = ResultStore(store.layout, id_factory=ids)
        go.wait(30)
        out = []
        for i in range(count):
            curve = pd.DataFrame({"equity": [1.0 + writer, 2.0 + i]}) if i % 2 else None
            info = results.save(
                f"strat{writer // 4}",
                metrics={"sharpe": writer + i / 100, "writer": writer, "i": i},
                params={"lookback": i},
                equity_curve=curve,
            )
            out.append(info.run_id)
        conn.send(("ok", out))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def churn(root: str, writer: int, stop: Any, conn: Any) -> None:
    """Commit market data and checkpoints until ``stop``; report counts or the error."""
    try:
        import pandas as pd

        store = Store(root, create=False)
        n = 0
        while not stop.is_set():
            n += 1
            minute = (writer + 1) * 10**6 + n  # never overlaps another writer's bars
            start = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(minutes=minute)
            bars = pd.DataFrame(
                {"timestamp": [start], "open": [float(n)], "high": [float(n)],
                 "low": [float(n)], "close": [float(n)], "volume": [float(writer)]}
            )  # fmt: skip
            store.market.append("SPY", "1m", bars)
            seed = f"c{writer}-{n}"
            store.checkpoints.save(MODEL, payload(seed, 2048), {"seed": seed, "size": 2048})
        conn.send(("ok", n))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def read_pinned(root: str, stop: Any, conn: Any) -> None:
    """Resolve the latest version, then read exactly that version (no retry): the rules say
    it must stay readable for the grace period. Also load the aliased checkpoint."""
    from efsray.errors import NotFoundError

    store = Store(root, create=False)
    reads = 0
    problems: list[str] = []
    while not stop.is_set():
        try:
            version = store.market.info("SPY", "1m").version
            table = store.market.read("SPY", "1m", version=version)
            if table.num_rows == 0:
                problems.append(f"market v{version} is empty")
            ckpt = store.checkpoints.latest_version(MODEL)
            if ckpt is not None:
                data, info = store.checkpoints.load_bytes(MODEL, ckpt)
                if data != expected_content(info.metadata):
                    problems.append(f"checkpoint v{ckpt} has wrong bytes")
            data, info = store.checkpoints.load_bytes(MODEL, alias="production")
            if data != expected_content(info.metadata):
                problems.append("aliased checkpoint has wrong bytes")
            reads += 1
        except NotFoundError as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
        except BaseException:
            problems.append(traceback.format_exc())
        if len(problems) > 20:
            break
    conn.send((reads, problems))


def cleanup_loop(root: str, grace: float, stop: Any, conn: Any) -> None:
    try:
        store = Store(root, create=False)
        runs = removed = 0
        while not stop.is_set():
            report = store.cleanup(0, grace=grace)
            if report.errors:
                conn.send(("error", list(report.errors)))
                return
            runs += 1
            removed += report.areas["market_data"].files + report.areas["checkpoints"].files
            conn.send(("progress", (runs, removed)))
        conn.send(("ok", (runs, removed)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def exit_quietly() -> None:
    os._exit(0)


def same_run(i: int, big: bool) -> dict[str, Any]:
    """The arguments of run number ``i`` of :func:`save_same_runs` (deterministic)."""
    import numpy as np
    import pandas as pd

    curve = pd.DataFrame({"equity": np.random.default_rng(i).normal(size=20_000 if big else 50)})
    return {
        "metrics": {"i": i, "sharpe": i / 10, "calmar": float("nan")},
        "params": {"i": i, "grid": [1, 2]},
        "equity_curve": curve,
        "tags": {"sweep": "sw-test"},
    }


def save_same_runs(root: str, when: str, count: int, big: bool, go: Any, conn: Any) -> None:
    """Save runs 0..count-1 of strategy "shared" under ids derived from (when, i): every
    process calling this saves the very same runs, at the same time."""
    try:
        import datetime as dt

        from efsray.store.ids import derive

        store = Store(root, create=False)
        start = dt.datetime.fromisoformat(when)
        go.wait(30)
        out = []
        for i in range(count):
            info = store.results.save(
                "shared", run_id=derive(start, f"point-{i}"), **same_run(i, big)
            )
            out.append((info.run_id, info.writer))
        conn.send(("ok", out))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
