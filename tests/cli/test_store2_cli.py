"""``efsray checkpoints``, ``efsray results`` and ``efsray cleanup`` from the shell."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from efsray.store import Store


def test_checkpoints_ls_show_alias_prune(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(root)
    for i in range(4):
        store.checkpoints.save("net", bytes([i]) * 10, {"val_loss": 1.0 / (i + 1), "epoch": i})
    models = cli("checkpoints", "ls", "--root", root, "--json")
    assert models.code == 0, models.err
    assert models.json() == [{"model": "net", "latest": 4, "aliases": {}}]
    assert "net" in cli("checkpoints", "ls", "--root", root).out

    res = cli("checkpoints", "alias", "net", "production", "2", "--root", root, "--json")
    assert res.json() == {"model": "net", "alias": "production", "version": 2, "previous": None}
    res = cli("checkpoints", "alias", "net", "production", "3", "--expect", "1", "--root", root)
    assert res.code != 0 and "points at 2, not 1" in res.err
    assert (
        cli("checkpoints", "alias", "net", "production", "--root", root, "--json").json()["version"]
        == 2
    )

    versions = cli("checkpoints", "ls", "net", "--root", root, "--json").json()
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
    assert versions[1]["aliases"] == ["production"] and versions[3]["metadata"]["epoch"] == 3

    shown = cli("checkpoints", "show", "net", "--alias", "production", "--verify", "--root", root,
                "--json")  # fmt: skip
    assert shown.code == 0, shown.err
    assert shown.json()["version"] == 2 and shown.json()["verified"] is True
    assert "all files verified" in cli("checkpoints", "show", "net", "--verify", "--root", root).out

    dry = cli("checkpoints", "prune", "net", "--keep-last", "1", "--grace", "0", "--dry-run",
              "--root", root, "--json").json()  # fmt: skip
    assert dry["removed"] == [1, 3] and dry["dry_run"] is True
    refused = cli("checkpoints", "prune", "net", "--keep-last", "1", "--grace", "0", "--root", root)
    assert refused.code != 0 and "--force" in refused.err  # a grace below the safe minimum
    res = cli("checkpoints", "prune", "net", "--keep-last", "1", "--grace", "0", "--force",
              "--save-policy", "--root", root)  # fmt: skip
    assert res.code == 0 and "removed v1, v3" in res.out
    assert [v.version for v in Store(root).checkpoints.list("net")] == [2, 4]
    assert Store(root).checkpoints.retention("net").keep_last == 1

    missing = cli("checkpoints", "show", "net", "--version", "3", "--root", root)
    assert missing.code == 3 and "no version 3" in missing.err
    bad = cli("checkpoints", "ls", "../etc", "--root", root)
    assert bad.code == 2 and "invalid model id" in bad.err


def test_results_ls_and_show(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(root)
    ids = [
        store.results.save("mom", metrics={"sharpe": s, "pnl": s * 10}, params={"k": s},
                           trades=pd.DataFrame({"px": [1.0, 2.0]})).run_id
        for s in (0.5, 1.5, 2.5)
    ]  # fmt: skip
    listed = cli("results", "ls", "--root", root, "--json")
    assert listed.code == 0, listed.err
    assert [r["run_id"] for r in listed.json()] == sorted(ids)
    best = cli("results", "ls", "--root", root, "--where", "sharpe>1", "--sort", "sharpe",
               "--desc", "-n", "1", "--json").json()  # fmt: skip
    assert [r["run_id"] for r in best] == [ids[2]]
    assert "3 runs" in cli("results", "ls", "--root", root).out
    bad = cli("results", "ls", "--root", root, "--where", "sharpe>>1")
    assert bad.code == 2 and "in the filter" in bad.err

    shown = cli("results", "show", ids[0], "--root", root, "--json").json()
    assert shown["metrics"] == {"sharpe": 0.5, "pnl": 5.0}
    assert shown["table_shapes"]["trades"] == {"rows": 2, "columns": ["px"]}
    assert "trades: 2 rows" in cli("results", "show", ids[0], "--root", root).out


def test_cleanup_reports_per_area_and_dry_run_changes_nothing(cli, tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = Store(root)
    old_log = store.layout.logs / "old.log"
    old_log.write_bytes(b"x" * 123)
    old = time.time() - 30 * 86400
    import os

    os.utime(old_log, (old, old))
    dry = cli("cleanup", "--days", "7", "--dry-run", "--root", root, "--json")
    assert dry.code == 0, dry.err
    report = dry.json()
    assert report["dry_run"] is True and report["areas"]["logs"] == {"files": 1, "bytes": 123}
    assert old_log.exists()
    real = cli("cleanup", "--days", "7", "--root", root)
    assert real.code == 0 and "freed 123 bytes in 1 files" in real.out
    assert not old_log.exists()
    assert cli("cleanup", "--days", "-1", "--root", root).code == 2
    not_a_store = cli("cleanup", "--root", tmp_path / "nothing")
    assert not_a_store.code == 4 and "not an efsray store" in not_a_store.err
