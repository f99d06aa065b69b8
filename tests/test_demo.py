"""`efsray demo` end to end: a small market, a real local Ray, the real store."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--symbols", "2", "--years", "0.25"]
HAS_CHECKPOINTS = importlib.util.find_spec("efsray.store.checkpoints") is not None


@pytest.mark.ray
@pytest.mark.slow
def test_demo_end_to_end_on_the_embedded_default(tmp_path: Path, cli) -> None:
    store = tmp_path / "efs-data"
    # A private, short Ray temp dir (socket paths must stay short) and a private HOME: the
    # embedded Ray must not need or touch ~/.ray.
    private = Path(tempfile.mkdtemp(prefix="efr-demo-", dir="/tmp"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "EFS_", "EFSRAY_"))}
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            HOME=str(private),
            RAY_TMPDIR=str(private),
            RAY_USAGE_STATS_ENABLED="0",
            EFS_MOUNT_PATH=str(store),  # the default root comes from the settings
        )
        proc = subprocess.run(
            [sys.executable, "-m", "efsray.cli.app", "demo", *SMALL, "--num-cpus", "2", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        first = json.loads(proc.stdout)
        assert not (private / ".ray").exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)

    assert first["root"] == str(store)
    assert [s["symbol"] for s in first["series"]] == ["ALPHA", "BRAVO"]
    assert first["ingest"]["written"] == ["ALPHA", "BRAVO"]
    assert first["health"]["status"] == "healthy"
    sweeps = first["sweeps"]
    assert [s["summary"]["strategy"] for s in sweeps] == [
        "ma_crossover",
        "momentum",
        "mean_reversion",
    ]
    for sweep in sweeps:
        summary = sweep["summary"]
        assert summary["executor"] == "ray" and summary["failed_tasks"] == 0
        assert summary["points"] == summary["expected_points"] == summary["computed"] > 0
        assert sweep["ranking"][0]["rank"] == 1 and Path(sweep["results"]).is_dir()
        listed = cli("results", "ls", "--root", store, "--strategy", summary["strategy"],
                     "--tag", f"sweep={summary['sweep_id']}", "--json")  # fmt: skip
        assert len(listed.json()) == summary["points"]  # one stored run per backtest

    checkpoints = first["checkpoints"]
    assert len(checkpoints) == 3
    if HAS_CHECKPOINTS:
        assert [c["model_id"] for c in checkpoints] == [
            "ma_crossover-1h", "momentum-1h", "mean_reversion-1h",
        ]  # fmt: skip
        assert all(c["created"] and c["alias"] == "best" for c in checkpoints)
    else:
        assert checkpoints == [None, None, None]

    # Re-running is safe and fast: same bars (not rewritten), every backtest reused.
    again = cli("demo", "--root", store, *SMALL, "--local", "--json")
    assert again.code == 0, again.err
    second = again.json()
    assert second["ingest"]["unchanged"] == ["ALPHA", "BRAVO"] and second["ingest"]["written"] == []
    for before, after in zip(sweeps, second["sweeps"], strict=True):
        assert after["summary"]["sweep_id"] == before["summary"]["sweep_id"]
        assert after["summary"]["computed"] == 0
        assert after["summary"]["reused"] == before["summary"]["points"]
        assert after["ranking"] == before["ranking"]
    if HAS_CHECKPOINTS:  # and the same checkpoints, not new identical versions
        assert [(c["version"], c["created"]) for c in second["checkpoints"]] == [(1, False)] * 3
