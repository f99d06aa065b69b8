"""The benchmarks run end to end, tiny, on local disk and the EFS-like mount, and report
round trips by kind with a modelled EFS time (they are what the performance docs quote)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.simfs import require_fuse

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.fuse


def bench(script: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    require_fuse()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--results-dir", str(tmp_path),
         "--name", "out", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out.md").read_text().strip()
    return dict(json.loads((tmp_path / "out.json").read_text()))


def test_market_data_on_local_disk_and_the_efs_like_mount(tmp_path: Path) -> None:
    result = bench(
        "market_data.py", tmp_path, "--rows", "4000", "--appends", "2", "--ingests", "1",
        "--reads", "2", "--tails", "2", "--efs-rows", "4000", "--efs-appends", "2",
        "--efs-reads", "2", "--efs-tails", "2", "--no-strace", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert set(result["media"]) == {"local", "efs-like"}
    local, efs = result["media"]["local"], result["media"]["efs-like"]
    assert local["counters"] is None and "round_trips" not in local["systems"]["efsray"]["ops"]
    for name in ("efsray", "seed-json"):
        for op in ("append", "full read", "tail(1000)"):
            o = efs["systems"][name]["ops"][op]
            if (name, op) == ("efsray", "tail(1000)"):
                # a warm handle's repeated tail: cached manifest and verified segment bytes,
                # one probe for a newer version (answered from the client's lookup cache)
                assert o["round_trips"] <= 4 and o["modelled_s"] >= 0, o
            else:
                assert o["round_trips"] > 0 and o["modelled_s"] > 0, (name, op)
    append = efs["systems"]["efsray"]["ops"]["append"]
    assert append["ops"]["create"] >= 1 and append["bytes_written"] > 0
    e = efs["systems"]["efsray"]
    assert 0 < e["live_segment_bytes"] <= e["disk_bytes"]
    goals = {g["goal"] for g in efs["goals"]}
    assert any("30x the seed" in g for g in goals)


def test_checkpoints_counts_round_trips_against_the_budget(tmp_path: Path) -> None:
    result = bench(
        "checkpoints.py", tmp_path, "--mib", "2", "--reps", "1", "--efs-mib", "1",
        "--efs-reps", "1", "--algorithms", "sha256", "--efs-algorithms", "sha256",
        "--no-drop-caches", "--dir", str(tmp_path),
    )  # fmt: skip
    cases = result["media"]["efs-like"]["cases"]
    save = cases["save_bytes/dd"]["sha256"]
    assert save["budget"] == 11 and save["round_trips"] > 0
    assert isinstance(save["within_budget"], bool)
    assert cases["load_bytes/dd"]["baseline_counts"]["ops"]["read"] >= 1
    assert "budget" not in cases["save_dir/cp"]["sha256"]


@pytest.mark.slow  # ten Python processes that import pyarrow and pandas: about a minute
def test_readers_compares_a_crowd_with_a_lone_reader(tmp_path: Path) -> None:
    result = bench(
        "readers.py", tmp_path, "--readers", "2", "--series", "2", "--reads", "1",
        "--rows", "2000", "--workdir", str(tmp_path),
    )  # fmt: skip
    phases = {p["phase"]: p for p in result["phases"]}
    # each crowd runs beside lone readers on mounts of their own, at the same time
    assert set(phases) == {
        "same", "same: lone S00", "different", "different: lone S00", "different: lone S01",
    }  # fmt: skip
    assert phases["same"]["reads"] == 2 and phases["same: lone S00"]["reads"] == 1
    for p in phases.values():
        assert p["round_trips_per_read"] > 0 and p["bytes"] > 0
        assert p["lone_round_trips_per_read"] > 0
    # the crowd of S00 is compared with the lone reader of S00 beside it
    same, lone = phases["same"], phases["same: lone S00"]
    assert same["lone_round_trips_per_read"] == lone["round_trips_per_read"]


@pytest.mark.slow  # a local Ray and the plain processes: about half a minute
def test_sweep_reports_the_machine_ceiling_beside_ray(tmp_path: Path) -> None:
    result = bench(
        "sweep.py", tmp_path, "--simfs", "efs-gp", "--workers", "1", "--repeats", "1",
        "--symbols", "2", "--bars", "3000",
    )  # fmt: skip
    assert result["results_identical_to_single_process"] is True
    (row,) = result["ray"]
    assert row["workers"] == 1 and row["backtests_per_s"] > 0
    assert row["ceiling_wall_s"] > 0 and row["ceiling_speedup_vs_1"] == 1.0
    assert row["backtests_per_s_of_ceiling"] > 0 and row["plain_processes_wall_s"] > 0
    assert 0 <= row["exposed_write_share_of_wall"] < 1 and row["tail_idle_share_of_wall"] >= 0
    assert row["server_cpu_share"] > 0 and row["local_disk_wall_s"] is None
    assert result["goals"]["ceiling_speedup_2"] == 1.0
