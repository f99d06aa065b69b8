"""Results at sweep scale: the results table against MLflow tracking and DuckDB's floor.

A sweep's runs (6 metrics, 2 parameters, 3 tags each, as ``efsray backtest`` saves them) are
committed in batches (``store.results.save_batch``, one segment and one version each, merged
in the background), then queried the ways a quant does:

- ``filter``: ``query(where=["sharpe>=T"], columns=[3 metrics, 2 params])``, T chosen so that
  ~1% of the runs match;
- ``top``: ``query(where=..., order_by="sharpe", ascending=False, limit=100)``;
- ``by id``: ``load(run_id, strategy=...)`` of random runs (median of 50, one after the
  other; then the same runs, each with the kept descriptors closed first, as a load that
  follows no other read within a second; then, right after each, a run of its segment:
  its sidecar still open).

The floor: DuckDB over ONE Parquet file holding the same rows (written once, outside any
store; ``SELECT ... WHERE "metrics.sharpe" >= T``), and DuckDB over exactly the table's
files (``read_parquet(store.results.files(...))``). The comparison: MLflow's tracking
(``mlflow-skinny``) with its file store and its SQLite store, the same runs logged with
``log_batch``, queried with ``search_runs(filter_string="metrics.sharpe >= T")`` (every page).

On the EFS-like mount (``--simfs efs-gp``) each query also reports the server operations it
made (simfs counters). The machine is shared: compare ratios within one run.

    python bench/results_scale.py --runs 1000000 --mlflow-runs 100000   # the issue's figures
    python bench/results_scale.py                                       # a quicker look
    python bench/results_scale.py --simfs efs-gp --runs 100000 --mlflow-runs 0
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow.parquet as pq

from bench._common import write_results
from efsray.store import Store
from efsray.store.ids import derive
from efsray.store.results.index import FENCES
from efsray.store.results.open_files import OPEN_FILES
from efsray.store.results.parts import FOOTERS

STRATEGY = "ma_crossover"
COLUMNS = ["sharpe", "total_return", "max_drawdown", "params.fast", "params.slow"]
T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.UTC)


def runs_of(batch: int, size: int, seed: int = 1) -> list[dict[str, Any]]:
    """Batch ``batch`` of a synthetic sweep: run ids as a sweep derives them (the sweep's
    time plus the point's index in ms), metrics from a fixed-seed generator."""
    rng = np.random.default_rng(seed * 1_000_003 + batch)
    sharpe = rng.normal(0.5, 0.8, size)
    out = []
    for i in range(size):
        index = batch * size + i
        out.append({
            "run_id": derive(T0 + dt.timedelta(milliseconds=index), f"sw/{index}"),
            "metrics": {
                "sharpe": float(sharpe[i]),
                "sortino": float(sharpe[i] * 1.3),
                "total_return": float(sharpe[i] * 0.2),
                "annualized_return": float(sharpe[i] * 0.1),
                "max_drawdown": float(-abs(rng.normal(0.1, 0.05))),
                "win_rate": float(rng.uniform(0.3, 0.7)),
            },
            "params": {"fast": 5 + index % 50, "slow": 60 + (index // 50) % 100},
            "tags": {"sweep": "sw-bench", "symbol": f"S{index % 20:02d}", "point": f"p-{index}"},
        })  # fmt: skip
    return out


def median_time(
    func: Callable[[], Any], repeats: int, *, closed: bool = False
) -> tuple[float, Any]:
    """(median seconds, last value) of ``repeats`` calls; ``closed``: each after closing
    the files reads keep open a second (untimed), as a call after a pause."""
    times, value = [], None
    for _ in range(repeats):
        if closed:
            OPEN_FILES.clear()
        start = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


class Ops:
    """Server operations (simfs counters) around a call; None without simfs."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def count(self, func: Callable[[], Any]) -> int | None:
        if self.fs is None:
            func()
            return None
        self.fs.control.reset()
        func()
        return int(self.fs.control.reset().total(exclude=("release", "releasedir")))


def write_table(
    root: Path, runs: int, batch: int, *, vacuum_every: int, grace: float
) -> dict[str, Any]:
    """Commit ``runs`` in batches (each batch's merges included in its commit time); every
    ``vacuum_every`` batches (0: never) ``vacuum(grace=...)`` as a sweep's driver would."""
    store = Store(root)
    started = time.perf_counter()
    commit_s: list[float] = []
    vacuum_s: list[float] = []
    removed = 0
    for b in range(runs // batch):
        rows = runs_of(b, batch)
        t = time.perf_counter()
        store.results.save_batch(STRATEGY, rows)
        commit_s.append(time.perf_counter() - t)
        if vacuum_every and (b + 1) % vacuum_every == 0:
            t = time.perf_counter()
            removed += store.results.vacuum(STRATEGY, grace=grace)[0]
            vacuum_s.append(time.perf_counter() - t)
        if b % 100 == 0:
            print(f"  {(b + 1) * batch:>9,} runs committed", flush=True)
    wall = time.perf_counter() - started
    table = root / "results" / "tables" / STRATEGY
    data = list((table / "data").iterdir())
    manifests = list((table / "versions").rglob("v*.json"))
    live = store.results.files(STRATEGY)
    return {
        "runs": runs,
        "batch": batch,
        "write_s": round(wall, 2),
        "runs_per_s": round(runs / wall),
        "commit_ms_median": round(statistics.median(commit_s) * 1000, 2),
        "commit_ms_max": round(max(commit_s) * 1000, 1),
        "vacuum_every_batches": vacuum_every,
        "vacuum_grace_s": grace,
        "vacuum_ms_median": round(statistics.median(vacuum_s) * 1000, 1) if vacuum_s else None,
        "vacuum_removed_files": removed,
        "files_total": len(data) + len(manifests) + 1,  # + HEAD
        "data_files": len(data),
        "live_segments": len(live),
        "manifests": len(manifests),
        "live_bytes": sum(p.stat().st_size for p in live),
        "all_bytes": sum(p.stat().st_size for p in data + manifests),
    }


def threshold(root: Path) -> float:
    """The sharpe that ~1% of the runs reach."""
    frame = Store(root).results.query(STRATEGY, columns=["sharpe"])
    return float(np.quantile(frame["metrics.sharpe"], 0.99))


def queries(root: Path, t: float, repeats: int, ops: Ops) -> dict[str, Any]:
    results = Store(root).results
    where = [f"sharpe>={t}"]
    results.query(STRATEGY, where=where, columns=COLUMNS)  # warm: manifests, page cache
    filt_s, frame = median_time(
        lambda: results.query(STRATEGY, where=where, columns=COLUMNS), repeats
    )
    filt_closed_s, _ = median_time(
        lambda: results.query(STRATEGY, where=where, columns=COLUMNS), repeats, closed=True
    )
    top_s, top = median_time(
        lambda: results.query(STRATEGY, where=where, order_by="sharpe", ascending=False,
                              limit=100), repeats)  # fmt: skip
    all_s, everything = median_time(lambda: results.query(STRATEGY, columns=["sharpe"]), 1)
    ids = list(everything["run_id"])
    rng = random.Random(5)
    picks = [rng.choice(ids) for _ in range(50)]
    results.load(picks[0], strategy=STRATEGY)
    load_times, closed_times = [], []
    for run_id in picks:
        t0 = time.perf_counter()
        results.load(run_id, strategy=STRATEGY)
        load_times.append(time.perf_counter() - t0)
    position = {r: i for i, r in enumerate(ids)}
    # the run 100 places after each pick (the same segment but at its end): loaded right
    # after the pick, as a loop over a query's matches does, its sidecar still open
    neighbours = [(r, ids[min(position[r] + 100, len(ids) - 1)]) for r in picks]
    neighbour_times = []
    for run_id, neighbour in neighbours:
        results.load(run_id, strategy=STRATEGY)
        t0 = time.perf_counter()
        results.load(neighbour, strategy=STRATEGY)
        neighbour_times.append(time.perf_counter() - t0)
    for run_id in picks:  # each run's sidecar closed first (fences and manifest cached)
        OPEN_FILES.clear()
        t0 = time.perf_counter()
        results.load(run_id, strategy=STRATEGY)
        closed_times.append(time.perf_counter() - t0)

    def counted(func: Callable[[], Any], *, close_first: bool) -> int | None:
        if close_first:
            OPEN_FILES.clear()  # (its closes are not the call's)
        return ops.count(func)

    def median_ops(counts: list[int | None]) -> float | None:
        known = [c for c in counts if c is not None]
        return statistics.median(known) if known else None

    def loader(run_id: str) -> Callable[[], Any]:
        return lambda: results.load(run_id, strategy=STRATEGY)

    # server ops per load, medians over the same picks (counted apart from the timings)
    row_ops = median_ops([counted(loader(r), close_first=False) for r in picks])
    closed_ops = median_ops([counted(loader(r), close_first=True) for r in picks])
    neighbour_ops = []
    for run_id, neighbour in neighbours:
        results.load(run_id, strategy=STRATEGY)
        neighbour_ops.append(counted(loader(neighbour), close_first=False))

    def query() -> Any:
        return results.query(STRATEGY, where=where, columns=COLUMNS)

    query()
    filter_ops = counted(query, close_first=False)  # at once: the timed repeats' case
    filter_ops_closed = counted(query, close_first=True)
    FOOTERS.clear()  # a new process: no manifest, footer or fence cached, nothing open
    FENCES.clear()
    fresh = Store(root).results
    filter_ops_cold = counted(
        lambda: fresh.query(STRATEGY, where=where, columns=COLUMNS), close_first=True
    )
    return {
        "threshold": round(t, 4),
        "matched": len(frame),
        "filter_s": round(filt_s, 4),
        "top100_s": round(top_s, 4),
        "top_is_sorted": bool(top["metrics.sharpe"].is_monotonic_decreasing),
        "all_runs_one_column_s": round(all_s, 3),
        "load_by_id_ms": round(statistics.median(load_times) * 1000, 2),
        "load_by_id_closed_ms": round(statistics.median(closed_times) * 1000, 2),
        "filter_closed_s": round(filt_closed_s, 4),
        "filter_ops": filter_ops,
        "filter_ops_closed": filter_ops_closed,
        "filter_ops_cold": filter_ops_cold,
        "load_by_id_ops": row_ops,
        "load_by_id_closed_ops": closed_ops,
        "load_by_id_neighbour_ms": round(statistics.median(neighbour_times) * 1000, 2),
        "load_by_id_neighbour_ops": median_ops(neighbour_ops),
    }


def duckdb_floor(root: Path, scratch: Path, t: float, repeats: int) -> dict[str, Any]:
    import duckdb

    files = [str(p) for p in Store(root).results.files(STRATEGY)]
    one = scratch / "all-runs.parquet"
    table = pq.read_table(files, columns=["run_id", *(f"metrics.{c}" for c in COLUMNS[:3]),
                                          "params.fast", "params.slow"])  # fmt: skip
    pq.write_table(table, one, compression="zstd")
    sql = (
        'SELECT run_id, "metrics.sharpe", "metrics.total_return", "metrics.max_drawdown", '
        '"params.fast", "params.slow" FROM read_parquet($f) WHERE "metrics.sharpe" >= $t'
    )
    con = duckdb.connect()
    con.execute(sql, {"f": [str(one)], "t": t}).df()
    one_s, frame = median_time(lambda: con.execute(sql, {"f": [str(one)], "t": t}).df(), repeats)
    store_s, frame2 = median_time(lambda: con.execute(sql, {"f": files, "t": t}).df(), repeats)
    return {
        "one_file_s": round(one_s, 4),
        "one_file_matched": len(frame),
        "over_table_files_s": round(store_s, 4),
        "over_table_files_matched": len(frame2),
        "duckdb": duckdb.__version__,
    }


def _mlflow_template(uri: str) -> tuple[Any, str, str]:
    """A store at ``uri`` made by MLflow itself, with one experiment and one finished run
    logged through its API: the schema, the layout and the rows the bulk copy imitates."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bench")
    run = client.create_run(experiment, run_name="template")
    client.log_batch(
        run.info.run_id, metrics=[mlflow.entities.Metric("sharpe", 0.0, 0, 0)],
        params=[mlflow.entities.Param("fast", "5")], tags=[mlflow.entities.RunTag("sweep", "x")],
    )  # fmt: skip
    client.set_terminated(run.info.run_id)
    return client, experiment, run.info.run_id


def _mlflow_rows(runs: int, batch: int) -> Any:
    """(batch, run uuid, row) of the bench's runs (the same rows as the table's, batch by
    batch), in MLflow's terms."""
    import uuid

    for b in range(runs // batch):
        for i, row in enumerate(runs_of(b, batch)):
            yield b, uuid.UUID(int=(b * batch + i + 1) * 7919).hex, row


def build_mlflow_sqlite(path: Path, runs: int, batch: int) -> None:
    """MLflow's SQLite store holding ``runs`` runs, as ``create_run`` + ``log_batch`` would
    leave it: MLflow creates the schema and one template run; the rest are inserted in
    bulk with the template's column values (logging 100,000 runs through the API, one
    transaction per call, takes hours here)."""
    import sqlite3

    _, experiment, template = _mlflow_template(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    names = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    base = dict(zip(names, db.execute("SELECT * FROM runs WHERE run_uuid=?", (template,))
                    .fetchone(), strict=True))  # fmt: skip
    db.execute("DELETE FROM latest_metrics"), db.execute("DELETE FROM metrics")
    db.execute("DELETE FROM params"), db.execute("DELETE FROM tags")
    db.execute("DELETE FROM runs")
    now = int(time.time() * 1000)
    runs_rows, metrics, params, tags = [], [], [], []
    for _, run_uuid, row in _mlflow_rows(runs, batch):
        values = {
            **base,
            "run_uuid": run_uuid,
            "name": row["run_id"],
            "start_time": now,
            "end_time": now,
            "experiment_id": int(experiment),
            "artifact_uri": f"{base['artifact_uri'].rsplit('/', 2)[0]}/{run_uuid}/artifacts",
        }
        runs_rows.append(tuple(values[n] for n in names))
        for k, v in row["metrics"].items():
            metrics.append((k, v, now, run_uuid, 0, 0))
        for k, v in row["params"].items():
            params.append((k, str(v), run_uuid))
        tags.append(("mlflow.runName", row["run_id"], run_uuid))
        for k, v in row["tags"].items():
            tags.append((k, str(v), run_uuid))
    with db:
        db.executemany(f"INSERT INTO runs ({', '.join(names)}) VALUES "
                       f"({', '.join('?' * len(names))})", runs_rows)  # fmt: skip
        db.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) '
                       "VALUES (?, ?, ?, ?, ?, ?)", metrics)  # fmt: skip
        db.executemany('INSERT INTO latest_metrics ("key", value, timestamp, run_uuid, step, '
                       "is_nan) VALUES (?, ?, ?, ?, ?, ?)", metrics)  # fmt: skip
        db.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)', params)
        db.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)', tags)
    db.close()


def build_mlflow_files(root: Path, runs: int, batch: int) -> None:
    """MLflow's file store holding ``runs`` runs, in the layout its FileStore writes (a
    directory per run: meta.yaml, one file per metric, param and tag), copied from a
    template run MLflow logged itself."""
    import yaml

    _, experiment, template = _mlflow_template(f"file://{root}")
    folder = root / experiment
    meta = yaml.safe_load((folder / template / "meta.yaml").read_text())
    shutil.rmtree(folder / template)
    now = int(time.time() * 1000)
    for _, run_uuid, row in _mlflow_rows(runs, batch):
        run = folder / run_uuid
        for sub in ("metrics", "params", "tags", "artifacts"):
            (run / sub).mkdir(parents=True)
        body = {**meta, "run_id": run_uuid, "run_name": row["run_id"], "start_time": now,
                "end_time": now, "artifact_uri": f"file://{run}/artifacts"}  # fmt: skip
        (run / "meta.yaml").write_text(yaml.safe_dump(body))
        for k, v in row["metrics"].items():
            (run / "metrics" / k).write_text(f"{now} {v!r} 0\n")
        for k, v in row["params"].items():
            (run / "params" / k).write_text(str(v))
        (run / "tags" / "mlflow.runName").write_text(row["run_id"])
        for k, v in row["tags"].items():
            (run / "tags" / k).write_text(str(v))


def cached(kind: str, runs: int, batch: int, build: Callable[[Path], None], name: str) -> Path:
    """A built MLflow store under /var/cache/efsray/bench/<key>/ (key: kind, MLflow
    version, runs, this bench's row generator), built once; a scratch copy when the cache
    directory cannot be written."""
    import hashlib
    import inspect

    import mlflow

    source = "".join(
        inspect.getsource(f)
        for f in (runs_of, _mlflow_rows, _mlflow_template, build_mlflow_sqlite, build_mlflow_files)
    )
    key = hashlib.sha256(source.encode()).hexdigest()[:12]
    home = (
        Path("/var/cache/efsray/bench") / f"mlflow-{kind}-{mlflow.__version__}-{runs}x{batch}-{key}"
    )
    if (home / "done").exists():
        return home / name
    tmp = home.with_name(home.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    build(tmp / name)
    print(f"  built MLflow {kind} of {runs:,} runs in {time.perf_counter() - started:.0f} s")
    (tmp / "done").write_text("")
    try:
        tmp.rename(home)
    except OSError:  # another bench built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return home / name


def mlflow_search(uri: str, t: float, repeats: int, page_size: int) -> tuple[float, int]:
    """MLflow's ``search_runs`` with the metric filter, every page; (median s, matched)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    [experiment] = [e.experiment_id for e in client.search_experiments() if e.name == "bench"]

    def search() -> int:
        found, token = 0, None
        while True:
            page = client.search_runs(
                [experiment], filter_string=f"metrics.sharpe >= {t}", max_results=page_size,
                page_token=token,
            )  # fmt: skip
            found += len(page)
            token = page.token
            if not token:
                return found

    search()  # warm: imports, the page cache, SQLAlchemy's engine
    return median_time(search, repeats)


def mlflow_side(
    sqlite_runs: int, file_runs: int, batch: int, t: float, repeats: int
) -> dict[str, Any]:
    """The bench's runs in MLflow's SQLite store and file store, searched by metric."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # 3.x: maintenance mode, still there
    out: dict[str, Any] = {"mlflow": mlflow.__version__}
    db = cached("sqlite", sqlite_runs, batch,
                lambda p: build_mlflow_sqlite(p, sqlite_runs, batch), "mlflow.db")  # fmt: skip
    s, matched = mlflow_search(f"sqlite:///{db}", t, repeats, 50_000)
    out["sqlite_store"] = {"runs": sqlite_runs, "search_s": round(s, 4), "matched": matched}
    print(f"  mlflow sqlite store, {sqlite_runs:,} runs: {s:.3f} s, {matched} matched")
    if file_runs:
        files = cached("file", file_runs, batch,
                       lambda p: build_mlflow_files(p, file_runs, batch), "mlruns")  # fmt: skip
        s, matched = mlflow_search(f"file://{files}", t, 1, 1000)
        out["file_store"] = {"runs": file_runs, "search_s": round(s, 4), "matched": matched}
        print(f"  mlflow file store, {file_runs:,} runs: {s:.3f} s, {matched} matched")
    return out


def run(args: argparse.Namespace, root: Path, medium: str, fs: Any) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="efsray-bench-results-scratch-"))
    ops = Ops(fs)
    print(f"{medium}: {args.runs:,} runs in batches of {args.batch} into {root}")
    written = write_table(root, args.runs, args.batch, vacuum_every=args.vacuum_every,
                          grace=args.vacuum_grace)  # fmt: skip
    t = threshold(root)
    print(f"  written: {written}")
    measured = queries(root, t, args.repeats, ops)
    print(f"  queries: {measured}")
    floor = duckdb_floor(root, scratch, t, args.repeats)
    print(f"  duckdb: {floor}")
    out = {"medium": medium, "write": written, "query": measured, "duckdb": floor}
    if args.mlflow_runs:
        theirs = mlflow_side(args.mlflow_runs, args.mlflow_file_runs, args.batch, t, args.repeats)
        side: dict[str, Any] = {**theirs}
        for kind in ("sqlite_store", "file_store"):
            if kind not in theirs:
                continue
            runs = theirs[kind]["runs"]
            small = root.parent / f"store-{runs}"
            write_table(small, runs, args.batch, vacuum_every=0, grace=0)
            ours = queries(small, t, args.repeats, Ops(None))
            shutil.rmtree(small, ignore_errors=True)
            side[kind].update(
                efsray_filter_s=ours["filter_s"], efsray_matched=ours["matched"],
                speedup=round(theirs[kind]["search_s"] / ours["filter_s"], 1),
            )  # fmt: skip
            print(f"  efsray at {runs:,} runs: {ours['filter_s']:.4f} s, {ours['matched']} matched")
        out["mlflow"] = side
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def markdown(result: dict[str, Any], command: str) -> str:
    w, q, d = result["write"], result["query"], result["duckdb"]
    lines = [
        "# Results at sweep scale",
        "",
        f"Command: `{command}`. Medium: {result['medium']}. Machine shared with other jobs "
        f"(load average {result.get('load_start', '?')} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end): compare ratios within a run.",
        "",
        f"- {w['runs']:,} runs in batches of {w['batch']}: {w['write_s']} s "
        f"({w['runs_per_s']:,} runs/s, median commit {w['commit_ms_median']} ms)",
        f"- files: {w['files_total']:,} in all ({w['live_segments']} live segments, "
        f"{w['data_files']} data files incl. merged-away ones within the grace, "
        f"{w['manifests']} manifests); live bytes {w['live_bytes']:,}; "
        + (
            f"`vacuum(grace={w['vacuum_grace_s']:g} s)` every {w['vacuum_every_batches']} "
            f"batches (median {w['vacuum_ms_median']} ms, {w['vacuum_removed_files']:,} "
            "files removed in all)"
            if w["vacuum_every_batches"]
            else "no vacuum"
        ),
        f"- filter (~1% match, {q['matched']:,} runs, 5 columns): {q['filter_s'] * 1000:.1f} ms"
        + (f", {q['filter_ops']} server ops" if q["filter_ops"] is not None else "")
        + f" (repeated at once); {q['filter_closed_s'] * 1000:.1f} ms"
        + (f", {q['filter_ops_closed']} server ops" if q["filter_ops"] is not None else "")
        + " with its segments closed first"
        + (
            f"; {q['filter_ops_cold']} server ops in a new process (no footer cached)"
            if q["filter_ops"] is not None
            else ""
        ),
        f"- top 100 by sharpe: {q['top100_s'] * 1000:.1f} ms; one column of every run: "
        f"{q['all_runs_one_column_s']} s",
        f"- a run by id (50 random runs in a row): {q['load_by_id_ms']} ms"
        + (f", {q['load_by_id_ops']} server ops" if q["load_by_id_ops"] is not None else "")
        + f"; its sidecar closed first (not read in the last second): "
        f"{q['load_by_id_closed_ms']} ms"
        + (
            f", {q['load_by_id_closed_ops']} server ops"
            if q["load_by_id_closed_ops"] is not None
            else ""
        )
        + (
            f"; a run of the same segment right after another: {q['load_by_id_neighbour_ms']} ms"
            if "load_by_id_neighbour_ms" in q
            else ""
        )
        + (
            f", {q['load_by_id_neighbour_ops']} server ops"
            if q.get("load_by_id_neighbour_ops") is not None
            else ""
        ),
        f"- DuckDB floor (one Parquet file of the same rows): {d['one_file_s'] * 1000:.1f} ms; "
        f"DuckDB over the table's files: {d['over_table_files_s'] * 1000:.1f} ms",
    ]
    m = result.get("mlflow")
    if m:
        lines += [
            "",
            f"## Against MLflow {m['mlflow']} tracking (`search_runs`, every page)",
            "",
            "| store | runs | MLflow: `metrics.sharpe >= T` | efsray: same filter, same runs "
            "| matched | efsray faster by |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind, label in (("sqlite_store", "SQLite store"), ("file_store", "file store")):
            if kind in m:
                k = m[kind]
                lines.append(
                    f"| MLflow {label} | {k['runs']:,} | {k['search_s'] * 1000:.0f} ms | "
                    f"{k['efsray_filter_s'] * 1000:.1f} ms | {k['matched']} / "
                    f"{k['efsray_matched']} | **{k['speedup']}x** |"
                )
        lines += [
            "",
            "MLflow's stores are built once and cached under /var/cache/efsray/bench/: MLflow "
            "creates the schema (or layout) and logs one run through its API; the others are "
            "copied from it in bulk (logging 100,000 runs through the API takes hours here). "
            "The file store is measured at fewer runs: its search reads every run's files.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--mlflow-runs", type=int, default=10_000,
                        help="runs in MLflow's SQLite store (0: skip MLflow)")  # fmt: skip
    parser.add_argument("--mlflow-file-runs", type=int, default=2_000,
                        help="runs in MLflow's file store (0: skip it; a search reads every "
                        "run's files: ~16 ms a run here)")  # fmt: skip
    parser.add_argument("--vacuum-every", type=int, default=100, help="batches (0: never)")
    parser.add_argument("--vacuum-grace", type=float, default=30.0, help="seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--simfs", metavar="PROFILE", default=None)
    parser.add_argument("--attr-timeout", type=float, default=3.0)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--name", default=None, help="results file name (default: by medium)")
    args = parser.parse_args()
    if args.runs % args.batch:
        parser.error("--runs must be a multiple of --batch")
    command = "python bench/results_scale.py " + " ".join(sys.argv[1:])
    load_start = round(os.getloadavg()[0], 1)
    if args.simfs:
        from efsray.simfs import SimFSConfig, SimFSProcess

        base = Path(tempfile.mkdtemp(prefix="efsray-bench-simfs-"))
        (base / "mnt").mkdir()
        (base / "backing").mkdir()
        config = SimFSConfig(mountpoint=base / "mnt", backing=base / "backing",
                             profile=args.simfs, attr_timeout=args.attr_timeout)  # fmt: skip
        with SimFSProcess.start(config) as fs:
            medium = f"simulated EFS (simfs {args.simfs}, attribute cache {args.attr_timeout:g} s)"
            result = run(args, fs.path / "store", medium, fs)
        shutil.rmtree(base, ignore_errors=True)
        name = f"results_scale_simfs_{args.simfs.replace('-', '_')}"
    else:
        base = args.root or Path(tempfile.mkdtemp(prefix="efsray-bench-results-"))
        result = run(args, base / "store", "local disk", None)
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)
        name = "results_scale"
    name = args.name or name
    result = {"load_start": load_start, **result, "load_end": round(os.getloadavg()[0], 1)}
    path = write_results(name, {"command": command, **result}, markdown(result, command))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
