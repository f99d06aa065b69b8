"""Test bodies that run INSIDE the guests (sent as source by Guest.call).

Only the standard library, efsray and its runtime dependencies may be imported here. Every
function takes and returns JSON values. The cwd is the NFS mount.
"""

from __future__ import annotations

import errno
import os
import random
import select
import signal
import time

import numpy as np
import pyarrow as pa

EPOCH_NS = 1_600_000_000 * 10**9
MINUTE_NS = 60 * 10**9


def batch(i: int, n: int) -> pa.Table:
    """Batch ``i`` covers minutes [i*n, (i+1)*n); its volume column is ``i``."""
    ts = EPOCH_NS + (i * n + np.arange(n, dtype=np.int64)) * MINUTE_NS
    close = np.full(n, 1000.0 + i)
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "open": close,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, float(i)),
        }
    )


def _payload(client: int, writer: int, k: int) -> bytes:
    return f"{client}/{writer}/{k}|".encode() * 2000


def _writer(root: str, client: int, writer: int, batches: list[int], rows: int, wfd: int) -> None:
    from efsray.store import Store

    store = Store(root)
    for k, b in enumerate(batches):
        info = store.market.append("SPY", "1m", batch(b, rows))
        os.write(wfd, f"bar {b} {info.version}\n".encode())
        ck = store.checkpoints.save(
            "model", _payload(client, writer, k), {"who": [client, writer, k]}
        )
        os.write(wfd, f"ckpt {client}/{writer}/{k} {ck.version}\n".encode())
        run = store.results.save(
            "strat",
            metrics={"sharpe": float(b)},
            params={"client": client, "writer": writer, "k": k},
        )
        os.write(wfd, f"run {run.run_id} {b}\n".encode())


def many_writers(root: str, client: int, writers: int, per_writer: int, rows: int) -> list[str]:
    """``writers`` forked processes, each appending ``per_writer`` batches, saving as many
    checkpoints of one model and results; returns what each commit reported."""
    import efsray.store  # noqa: F401 - imported once, before the fork

    rfd, wfd = os.pipe()
    pids = []
    for w in range(writers):
        ids = [client * 1000 + w * 100 + k for k in range(per_writer)]
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            code = 0
            try:
                _writer(root, client, w, ids, rows, wfd)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        pids.append(pid)
    os.close(wfd)
    out = b""
    while chunk := os.read(rfd, 65536):
        out += chunk
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    if failed:
        raise RuntimeError(f"writers {failed} failed (their tracebacks are on stderr)")
    return out.decode().splitlines()


def check_everything(root: str, rows: int) -> dict:
    """The series, the model's versions and the results, as one client sees them."""
    from efsray.store import Store

    store = Store(root)
    table = store.market.read("SPY", "1m")
    ids = table.column("volume").to_numpy().astype(np.int64)
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    uniq, counts = np.unique(ids, return_counts=True)
    history = store.market.history("SPY", "1m")
    ckpts = store.checkpoints.list("model")
    payloads = {}
    for info in ckpts:
        data, got = store.checkpoints.load_bytes("model", info.version)
        payloads[got.version] = data[: data.index(b"|")].decode()
    runs = store.results.query("strat")
    return {
        "sorted": bool(np.all(np.diff(ts) > 0)),
        "batches": {str(int(i)): int(c) for i, c in zip(uniq, counts, strict=True)},
        "rows": int(table.num_rows),
        "versions": [h.version for h in history],
        "appends": sum(1 for h in history if h.operation == "append"),
        "checkpoints": {str(v): p for v, p in payloads.items()},
        "runs": len(runs),
    }


# -- SIGKILL at random instants on one client, readers on another ---------------------------


def _killable_writer(root: str, first: int, rows: int, wfd: int) -> None:
    from efsray.store import Store

    store = Store(root)
    b = first
    while True:
        os.write(wfd, f"try {b}\n".encode())
        info = store.market.append("SPY", "1m", batch(b, rows))
        os.write(wfd, f"ok {b} {info.version}\n".encode())
        b += 1


def kill_writers(root: str, writers: int, rows: int, kills: int, seed: int) -> dict:
    """Writers append until SIGKILLed at random instants; each killed one is replaced."""
    import efsray.store  # noqa: F401 - imported once, before the forks

    rng = random.Random(seed)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    out = bytearray()
    alive: dict[int, int] = {}
    next_first = 10_000  # batch 0 is the version the reader starts from

    def spawn() -> None:
        nonlocal next_first
        first = next_first
        next_first += 10_000
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            try:
                _killable_writer(root, first, rows, wfd)
            finally:
                os._exit(1)
        alive[pid] = first

    def drain() -> None:
        try:
            while chunk := os.read(rfd, 65536):
                out.extend(chunk)
        except BlockingIOError:
            pass

    def commits() -> int:
        return out.count(b"ok ")

    for _ in range(writers):
        spawn()
    for _ in range(kills):
        # at least one more commit since the last kill (guests under TCG are slow and their
        # speed varies with the host's load), then a random instant within the next ~1.5 s
        wanted, limit = commits() + 1, time.monotonic() + 120
        while commits() < wanted and (left := limit - time.monotonic()) > 0:
            select.select([rfd], [], [], left)  # woken by the writers' next report
            drain()
        deadline = time.monotonic() + rng.uniform(0.0, 1.5)
        while (left := deadline - time.monotonic()) > 0:  # the kill instant: random by design
            select.select([rfd], [], [], left)  # draining the pipe meanwhile
            drain()
        victim = rng.choice(sorted(alive))
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)
        del alive[victim]
        spawn()
    for pid in list(alive):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(wfd)
    os.set_blocking(rfd, True)
    while chunk := os.read(rfd, 65536):
        out.extend(chunk)
    tried, ok = [], []
    for line in out.decode().splitlines():
        parts = line.split()
        (tried if parts[0] == "try" else ok).append(int(parts[1]))
    return {"tried": tried, "ok": ok}


def read_until_signalled(root: str, rows: int) -> dict:
    """Read the series over and over until SIGUSR1 (and at least once after it); report
    every torn or partial state."""
    from efsray.errors import NotFoundError
    from efsray.store import Store

    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(time.monotonic()))
    store = Store(root)
    reads, problems, versions, missing = 0, [], [], []
    _progress("ready")
    while not stop or reads == 0 or versions[-1] is None:
        try:
            full = store.market.read("SPY", "1m")
            tail = store.market.tail("SPY", "1m", rows * 3 + rows // 2)
            versions.append(store.market.info("SPY", "1m").version)
        except NotFoundError as exc:
            missing.append(str(exc)[:300])
            if stop:
                versions.append(None)  # still nothing after the writers stopped: report it
                break
            continue  # nothing committed yet
        for name, table, skip_first in (("read", full, False), ("tail", tail, True)):
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            if not np.all(np.diff(ts) > 0):
                problems.append(f"{name}: timestamps not strictly increasing")
            ids = table.column("volume").to_numpy().astype(np.int64)
            uniq, counts = np.unique(ids, return_counts=True)
            for i, c in zip(uniq, counts, strict=True):
                if c != rows and not (skip_first and len(ids) and i == ids[0]):
                    problems.append(f"{name}: batch {i} has {c} of {rows} rows")
        reads += 1
    return {
        "reads": reads,
        "problems": problems[:20],
        "versions": versions,
        "not_found": len(missing),
        "last_not_found": missing[-1] if missing else None,
    }


# -- a reader during commits on another client ---------------------------------------------


def step_appender(root: str, steps: int, rows: int) -> None:
    """On each SIGUSR1, append batch k + 1 and report its version (one process, warm caches)."""
    from efsray.store import Store

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    store = Store(root)
    _progress("ready")
    for k in range(steps):
        signal.sigwait({signal.SIGUSR1})
        _progress(str(store.market.append("SPY", "1m", batch(k + 1, rows)).version))


def step_reader(root: str, steps: int) -> None:
    """On each SIGUSR1, report the latest version and row count this client sees."""
    import json

    from efsray.store import Store

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    store = Store(root)
    _progress("ready")
    for _ in range(steps):
        signal.sigwait({signal.SIGUSR1})
        info = store.market.info("SPY", "1m")
        rows = store.market.read("SPY", "1m").num_rows
        _progress(json.dumps({"version": info.version, "rows": int(rows)}))


def latest_version(root: str, symbol: str) -> int:
    """The latest version of ``symbol``'s series this client sees (0: none), in a new process."""
    from efsray.errors import NotFoundError
    from efsray.store import Store

    try:
        return Store(root).market.info(symbol, "1m").version
    except NotFoundError:
        return 0


# -- retention on one client while another reads an old version ----------------------------


def make_history(root: str, appends: int, rows: int, ckpts: int) -> dict:
    from efsray.store import Store

    store = Store(root)
    for b in range(appends):
        store.market.append("SPY", "1m", batch(b, rows))
    for k in range(ckpts):
        store.checkpoints.save("model", bytes([k]) * 300_000)
    return {"version": store.market.info("SPY", "1m").version}


def read_old_versions(root: str, version: int, rows: int, seconds: float) -> dict:
    """Read market version ``version`` and checkpoint v1 over and over; tally outcomes."""
    from efsray.errors import EfsrayError
    from efsray.store import Store

    store = Store(root)
    outcomes: dict[str, int] = {}
    wrong: list[str] = []
    deadline = time.monotonic() + seconds

    def note(key: str) -> None:
        outcomes[key] = outcomes.get(key, 0) + 1

    while time.monotonic() < deadline:
        for what in ("market", "checkpoint"):
            try:
                if what == "market":
                    t = store.market.read("SPY", "1m", version=version)
                    if t.num_rows != version * rows:
                        wrong.append(f"market v{version}: {t.num_rows} rows")
                else:
                    data, _ = store.checkpoints.load_bytes("model", 1)
                    if data != bytes([0]) * 300_000:
                        wrong.append("checkpoint v1: wrong bytes")
                note(f"{what}: ok")
            except EfsrayError as exc:
                note(f"{what}: {type(exc).__name__}")
            except OSError as exc:
                note(f"{what}: raw {type(exc).__name__} {errno.errorcode.get(exc.errno or 0)}")
    return {"outcomes": outcomes, "wrong": wrong[:20]}


def prune_everything(root: str, loops: int) -> dict:
    from efsray.store import Store

    store = Store(root)
    store.market.compact("SPY", "1m")
    removed = 0
    for _ in range(loops):
        report = store.cleanup(days=0, grace=0)
        removed += report.files
        store.checkpoints.prune("model", grace=0)
    return {"removed": removed}


# -- close-to-open and attribute caching ---------------------------------------------------


def write_file(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


def stat_size(path: str) -> int:
    return os.stat(path).st_size


def open_read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _progress(line: str) -> None:
    os.write(int(os.environ["EFSRAY_PROGRESS_FD"]), f"{line}\n".encode())


def append_on_signal(path: str, data: str) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    _progress("ready")
    signal.sigwait({signal.SIGUSR1})
    with open(path, "a") as f:
        f.write(data)
    _progress("written")


def observe_change(path: str, size: int) -> dict:
    """Cache ``path``'s attributes, wait for SIGUSR1, then stat (cache) and open (server)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    with open(path) as f:
        first = len(f.read())
    cached = time.monotonic()
    assert os.stat(path).st_size == first == size
    _progress("ready")
    signal.sigwait({signal.SIGUSR1})
    since = time.monotonic() - cached
    stat_size = os.stat(path).st_size
    with open(path) as f:
        open_size = len(f.read())
    return {
        "since_cached": since,
        "stat_size": stat_size,
        "open_size": open_size,
        "stat_after_open": os.stat(path).st_size,
    }
