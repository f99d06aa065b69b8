"""``efsray mount | unmount | mounts | health`` as real processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from efsray.mount import EFSMountConfig
from tests.fixtures.fakemount import FakeMount

DNS = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"


def efsray(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def test_dry_run_prints_the_exact_command(tmp_path: Path) -> None:
    mount_path = str(tmp_path / "efs")
    env = {"EFS_DNS_NAME": DNS, "EFS_MOUNT_PATH": mount_path, "EFS_MOUNT_OPTIONS": "intr"}
    proc = efsray("mount", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    expected = EFSMountConfig(DNS, mount_path)
    assert proc.stdout.splitlines()[0] == expected.mount_command()
    assert "intr" in proc.stderr and "dropped" in proc.stderr  # the warning, on stderr
    env_file = tmp_path / ".env.cloud"
    env_file.write_text(f"EFS_DNS_NAME={DNS}\nEFS_EXPORT_PATH=/models\n")
    proc = efsray("mount", "--dry-run", "--json", "--env-file", str(env_file))
    plan = json.loads(proc.stdout)
    assert plan["argv"][-2] == f"{DNS}:/models"
    assert shlex.split(plan["command"]) == plan["argv"]
    assert plan["compose_driver_opts"]["device"] == ":/models"
    assert plan["fstab_line"].endswith("_netdev,nofail 0 0")


def test_mount_mounts_unmount_cycle(fake_mount: FakeMount, tmp_path: Path) -> None:
    mount_path = tmp_path / "efs"
    env = {"EFS_DNS_NAME": "127.0.0.1", "EFS_MOUNT_PATH": str(mount_path)}
    table = ["--mountinfo", str(fake_mount.mountinfo)]
    proc = efsray("mount", *table, env=env)
    assert proc.returncode == 0, proc.stderr
    command = EFSMountConfig("127.0.0.1", str(mount_path)).mount_command()
    assert proc.stdout.splitlines()[0] == f"$ {command}"
    assert fake_mount.calls("mount") == [shlex.split(command)]

    listed = json.loads(efsray("mounts", "--json", *table).stdout)
    assert [m["mount_point"] for m in listed] == [str(mount_path)]
    assert listed[0]["drift_ok"] is True and "vers=4.1" in listed[0]["options"]

    proc = efsray("mount", "--json", *table, env=env)  # again: already mounted, same options
    assert proc.returncode == 0 and json.loads(proc.stdout)["already_mounted"] is True

    proc = efsray("unmount", *table, env=env)
    assert proc.returncode == 0 and "unmounted" in proc.stdout
    proc = efsray("unmount", "--json", *table, env=env)
    assert json.loads(proc.stdout)["unmounted"] is False


def test_mount_failure_is_a_message_and_exit_code(fake_mount: FakeMount, tmp_path: Path) -> None:
    fake_mount.configure(mode="fail", exit_code=32, stderr="mount.nfs4: access denied by server")
    env = {"EFS_DNS_NAME": "127.0.0.1", "EFS_MOUNT_PATH": str(tmp_path / "efs")}
    proc = efsray("mount", "--attempts", "1", "--mountinfo", str(fake_mount.mountinfo), env=env)
    assert proc.returncode == 5
    assert "access denied by server" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = efsray("mount", env={"EFS_MOUNT_PATH": str(tmp_path)})
    assert proc.returncode == 2 and "EFS_DNS_NAME is not set" in proc.stderr


def test_mounts_lists_nfs_mounts_with_drift(tmp_path: Path) -> None:
    from tests.mount.test_mountinfo import EFS_BAD, EFS_KERNEL, FUSE, ROOT

    table = tmp_path / "mountinfo"
    table.write_text("\n".join([ROOT, EFS_KERNEL, FUSE, EFS_BAD]) + "\n")
    rows = json.loads(efsray("mounts", "--json", "--mountinfo", str(table)).stdout)
    assert [r["mount_point"] for r in rows] == ["/mnt/efs", "/mnt/my efs"]
    assert rows[0]["drift_ok"] is True
    assert rows[1]["drift_ok"] is False
    assert {"option": "rsize", "kind": "different"}.items() <= rows[1]["drift"][1].items()
    human = efsray("mounts", "--mountinfo", str(table))
    assert human.returncode == 0 and "/mnt/my efs" in human.stdout and "soft" in human.stdout
    empty = tmp_path / "empty"
    empty.write_text(ROOT + "\n")
    assert "no NFS or EFS mounts" in efsray("mounts", "--mountinfo", str(empty)).stdout


def test_health_exit_codes(tmp_path: Path) -> None:
    proc = efsray("health", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("healthy")
    proc = efsray("health", "--json", "--timeout", "20", env={"EFS_MOUNT_PATH": str(tmp_path)})
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["status"] == "healthy" and report["timeout_s"] == 20
    proc = efsray("health", "--json", str(tmp_path / "missing"))
    assert proc.returncode == 1 and json.loads(proc.stdout)["status"] == "error"
