"""``efsray bench`` (one probe, a table) and ``efsray monitor`` (the metrics service).

Exit codes of both follow the mount's status: 0 ok, 10 degraded, 11 failing, 12 hung
(efsray errors keep their own codes: 2 for a bad setting, ...).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from efsray.cli._common import EnvFileOpt, JsonOpt, console, err_console, print_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from efsray.monitor import MountReport

__all__ = ["register"]

# Paths are plain str on purpose: click's Path type stats its value, which would block on
# the very hung mount the command is meant to report.
PathArg = Annotated[
    str | None,
    typer.Argument(help="Directory to probe. Default: EFS_MOUNT_PATH.", show_default=False),
]
PathsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Directories to monitor. Default: EFSRAY_MONITOR_MOUNT_PATHS, else EFS_MOUNT_PATH.",
        show_default=False,
    ),
]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples", help="Timed 4 KiB reads, writes and fsyncs (0: skip).", min=0, max=1_000_000
    ),
]
FilesOpt = Annotated[
    int | None,
    typer.Option(
        "--metadata-files",
        help="Files created/stat'ed/renamed/unlinked (0: skip).",
        min=0,
        max=1_000_000,
    ),
]
FileSizeOpt = Annotated[
    str | None,
    typer.Option("--file-size", help="Sequential read/write file size, e.g. 256M (0: skip)."),
]
BlockSizeOpt = Annotated[
    str | None, typer.Option("--block-size", help="Sequential I/O block size, e.g. 1M.")
]
DirectOpt = Annotated[
    str,
    typer.Option(
        "--direct",
        help="O_DIRECT: auto (if the filesystem allows), always, never (fsync + fadvise).",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout", help="Probe deadline in seconds; past it: hung.", min=0.001, max=86400
    ),
]


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
    app.command("monitor")(monitor_cmd)


def bench_cmd(
    path: PathArg = None,
    samples: SamplesOpt = None,
    metadata_files: FilesOpt = None,
    file_size: FileSizeOpt = None,
    block_size: BlockSizeOpt = None,
    direct: DirectOpt = "auto",
    timeout: TimeoutOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Probe one mount once: latency percentiles, metadata ops/s, throughput, space."""
    import logging

    from efsray.monitor import EFSPerformanceMonitor

    logging.basicConfig(level=logging.ERROR)  # the report says what went wrong
    settings = _load(
        env_file,
        efsray_monitor_latency_samples=samples,
        efsray_monitor_metadata_files=metadata_files,
        efsray_monitor_throughput_bytes=file_size,
        efsray_monitor_block_bytes=block_size,
        efsray_monitor_probe_timeout=timeout,
    )
    target = path if path is not None else str(settings.efs_mount_path)
    monitor = EFSPerformanceMonitor.from_settings(settings, [target])
    monitor.config = _with_direct(monitor.config, direct)
    report = monitor.probe(target)
    if json_out:
        print_json(report.to_dict())
    else:
        _print_report(report)
    return report.status.exit_code


def monitor_cmd(
    paths: PathsArg = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="Port of /metrics and /healthz (0: any free).", min=0, max=65535
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default 127.0.0.1).")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between probe runs.", min=0.1, max=86400),
    ] = None,
    timeout: TimeoutOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> int:
    """Serve Prometheus /metrics and JSON /healthz, probing every --interval seconds.

    Stops cleanly on SIGTERM or SIGINT (running probes are killed, the port is released).
    """
    import asyncio
    import json
    import logging
    import signal
    import sys

    from prometheus_client import CollectorRegistry
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    from efsray.monitor import EFSPerformanceMonitor, MetricsServer, MonitorMetrics, MonitorService

    settings = _load(
        env_file,
        efsray_monitor_port=port,
        efsray_monitor_host=host,
        efsray_monitor_interval=interval,
        efsray_monitor_probe_timeout=timeout,
    )
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    monitor = EFSPerformanceMonitor.from_settings(settings, paths or None)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    every = settings.efsray_monitor_interval
    metrics = MonitorMetrics(
        registry, stale_after=3 * every + settings.efsray_monitor_probe_timeout
    )

    def show(reports: Sequence[MountReport]) -> None:
        if json_out:
            line = {"event": "collection", "mounts": [r.to_dict() for r in reports]}
            sys.stdout.write(json.dumps(line, default=str) + "\n")
        else:
            for r in reports:
                sys.stdout.write(_one_line(r) + "\n")
        sys.stdout.flush()

    service = MonitorService(monitor, metrics, interval=every, on_collection=show)
    server = MetricsServer(
        metrics,
        registry,
        host=settings.efsray_monitor_host,
        port=settings.efsray_monitor_port,
    )
    try:
        server.start()
    except OSError as exc:
        from efsray.errors import ConfigError

        raise ConfigError(
            f"cannot serve metrics on {settings.efsray_monitor_host}:"
            f"{settings.efsray_monitor_port}: {exc.strerror or exc}; choose another --port "
            "(EFSRAY_MONITOR_PORT) or --host"
        ) from None
    mounts = ", ".join(monitor.mount_paths)
    if json_out:
        event = {"event": "listening", "url": server.url, "mounts": monitor.mount_paths}
        sys.stdout.write(json.dumps(event) + "\n")
    else:
        sys.stdout.write(f"listening on {server.url}/metrics, probing {mounts} every {every:g} s\n")
    sys.stdout.flush()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    try:
        asyncio.run(main())
    finally:
        server.stop()
        logging.getLogger("efsray.monitor").info(
            "stopped after %d collection(s)", service.collections
        )
    return 0


def _load(env_file: Path | None, **options: Any) -> Any:
    """Settings from the environment and ``env_file``, with the options that were given."""
    from efsray.config import load_settings

    return load_settings(env_file, **{k: v for k, v in options.items() if v is not None})


def _with_direct(config: Any, direct: str) -> Any:
    import dataclasses

    from efsray.errors import ConfigError

    if direct not in ("auto", "always", "never"):
        raise ConfigError(f"--direct={direct!r}: use auto, always or never")
    return dataclasses.replace(config, direct_io=direct)


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "-"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f}"


_STYLE = {"ok": "green", "degraded": "yellow", "failing": "red", "hung": "bold red"}


def _one_line(r: MountReport) -> str:
    head = f"{r.timestamp:%Y-%m-%dT%H:%M:%SZ} {r.mount_path} {r.status.value}"
    m = r.metrics
    if m is None:
        return f"{head}: {r.error}"
    return (
        f"{head} read p99 {_fmt(m.read_latency_p99_ms)} ms, write p99 "
        f"{_fmt(m.write_latency_p99_ms)} ms, fsync p99 {_fmt(m.fsync_latency_p99_ms)} ms, "
        f"read {_fmt(m.read_throughput_mbps, 0)} MiB/s, write {_fmt(m.write_throughput_mbps, 0)} "
        f"MiB/s, free {_size(m.disk_free_bytes)}"
        + (f" ({'; '.join(r.reasons)})" if r.reasons else "")
    )


def _print_report(r: MountReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    style = _STYLE[r.status.value]
    console.print(f"[bold]{escape(r.mount_path)}[/]: [{style}]{r.status.value}[/]")
    for reason in r.reasons:
        console.print(f"  - {escape(reason)}")
    m = r.metrics
    if m is None:
        err_console.print(f"[red]{escape(r.error or 'no measurement')}[/]")
        return
    mode = "O_DIRECT" if m.direct_io else "fsync + fadvise(DONTNEED), no O_DIRECT"
    console.print(
        f"{m.latency_samples} × 4 KiB reads/writes/fsyncs, {m.metadata_files} files, "
        f"{_size(m.throughput_bytes)} sequential in {_size(m.block_bytes)} blocks; {mode}"
    )
    lat = Table(title="latency, ms", title_justify="left")
    for col in ("operation", "p50", "p95", "p99"):
        lat.add_column(col, justify="left" if col == "operation" else "right")
    for op in ("read", "write", "fsync"):
        lat.add_row(op, *(_fmt(getattr(m, f"{op}_latency_p{q}_ms"), 3) for q in (50, 95, 99)))
    console.print(lat)
    ops = ("create", "stat", "rename", "unlink")
    meta = Table(title="metadata, operations/s", title_justify="left")
    for op in ops:
        meta.add_column(op, justify="right")
    meta.add_row(*(_fmt(getattr(m, f"{op}_ops_per_second"), 0) for op in ops))
    console.print(meta)
    seq = Table(title="sequential, MiB/s", title_justify="left")
    seq.add_column("write", justify="right")
    seq.add_column("read", justify="right")
    seq.add_row(_fmt(m.write_throughput_mbps, 1), _fmt(m.read_throughput_mbps, 1))
    console.print(seq)
    space = Table(title="space", title_justify="left")
    for col in ("", "total", "used", "free"):
        space.add_column(col, justify="right")
    space.add_row(
        "bytes", _size(m.disk_total_bytes), _size(m.disk_used_bytes), _size(m.disk_free_bytes)
    )
    space.add_row("inodes", f"{m.inodes_total:,}", f"{m.inodes_used:,}", f"{m.inodes_free:,}")
    console.print(space)
    console.print(f"probe took {_fmt(m.probe_seconds, 2)} s")
