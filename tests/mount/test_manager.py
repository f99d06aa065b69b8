"""EFSMountManager against a real fake mount(8)/umount(8) first on PATH, real DNS, real sockets."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from efsray.errors import MountError
from efsray.mount import EFSMountConfig, EFSMountManager, check_availability
from efsray.mount.options import RECOMMENDED_OPTIONS
from tests.fixtures.fakemount import FakeMount, child_pids

DNS = "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"


@pytest.fixture
def mnt(tmp_path: Path) -> Path:
    return tmp_path / "mnt" / "efs"


def manager(
    fake: FakeMount, mount_path: Path, host: str = "127.0.0.1", **kw: Any
) -> EFSMountManager:
    config_kw = kw.pop("config", {})
    kw.setdefault("backoff", 0.0)
    return EFSMountManager(
        EFSMountConfig(host, str(mount_path), **config_kw), mountinfo_path=fake.mountinfo, **kw
    )


def test_mount_runs_the_exact_command(fake_mount: FakeMount, mnt: Path) -> None:
    m = manager(fake_mount, mnt)
    result = m.mount()
    assert fake_mount.calls("mount") == [m.config.mount_argv()]
    assert fake_mount.calls("mount")[0] == [
        "mount", "-t", "nfs4", "-o", ",".join(RECOMMENDED_OPTIONS), "127.0.0.1:/", str(mnt),
    ]  # fmt: skip
    assert mnt.is_dir()
    assert result.attempts == 1 and not result.already_mounted
    assert result.drift is not None and result.drift.ok
    assert m.is_mounted()
    live = m.live_options()
    assert "vers=4.1" in live.options and live.drift.ok


def test_retries_with_exponential_backoff_then_succeeds(fake_mount: FakeMount, mnt: Path) -> None:
    fake_mount.configure(fail_times=2)
    delays: list[float] = []
    m = manager(fake_mount, mnt, attempts=3, backoff=0.5, sleep=delays.append)
    assert m.mount().attempts == 3
    assert delays == [0.5, 1.0]
    assert len(fake_mount.calls("mount")) == 3


def test_backoff_is_capped(fake_mount: FakeMount, mnt: Path) -> None:
    fake_mount.configure(fail_times=4)
    delays: list[float] = []
    m = manager(fake_mount, mnt, attempts=5, backoff=1.0, max_backoff=3.0, sleep=delays.append)
    m.mount()
    assert delays == [1.0, 2.0, 3.0, 3.0]


def test_persistent_failure_raises_with_reason_and_hint(fake_mount: FakeMount, mnt: Path) -> None:
    fake_mount.configure(mode="fail", stderr="mount.nfs4: Connection timed out")
    m = manager(fake_mount, mnt, attempts=2)
    with pytest.raises(MountError) as info:
        m.mount()
    message = str(info.value)
    assert "after 2 attempt(s)" in message
    assert "Connection timed out" in message
    assert "TCP 2049" in message  # the hint
    assert m.config.mount_command() in message
    assert len(fake_mount.calls("mount")) == 2
    assert not m.is_mounted()


def test_seed_style_false_is_logged_with_its_cause(
    fake_mount: FakeMount, mnt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_mount.configure(mode="fail", stderr="mount.nfs4: access denied by server")
    m = manager(fake_mount, mnt, attempts=1)
    with caplog.at_level(logging.ERROR, logger="efsray.mount"):
        assert m.mount_efs() is False
    assert isinstance(m.last_error, MountError)
    assert "access denied by server" in str(m.last_error)
    assert "access denied by server" in caplog.text


def test_permission_errors_are_not_retried(fake_mount: FakeMount, mnt: Path) -> None:
    fake_mount.configure(mode="fail", exit_code=1, stderr="mount: only root can do that")
    m = manager(fake_mount, mnt, attempts=3)
    with pytest.raises(MountError, match="CAP_SYS_ADMIN"):
        m.mount()
    assert len(fake_mount.calls("mount")) == 1


def test_hanging_mount_is_killed_and_reaped_within_the_deadline(
    fake_mount: FakeMount, mnt: Path
) -> None:
    fake_mount.configure(mode="hang")
    before = child_pids()
    m = manager(fake_mount, mnt, attempts=2, mount_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(MountError, match="did not finish within 1 s"):
        m.mount()
    elapsed = time.monotonic() - started
    assert elapsed < 2 * (1.0 + 1.0) + 5.0  # 2 x (timeout + kill grace) + slack for a busy box
    assert len(fake_mount.calls("mount")) == 2
    assert fake_mount.alive_pids() == []
    assert child_pids() - before == set()


def test_missing_mount_binary(fake_mount: FakeMount, mnt: Path) -> None:
    m = manager(fake_mount, mnt, mount_binary=str(mnt.parent / "no-such-mount"))
    with pytest.raises(MountError, match="not found on PATH"):
        m.mount()


def test_already_mounted_with_matching_options_is_success(fake_mount: FakeMount, mnt: Path) -> None:
    manager(fake_mount, mnt).mount()
    again = manager(fake_mount, mnt).mount()
    assert again.already_mounted and again.attempts == 0
    assert len(fake_mount.calls("mount")) == 1


def test_already_mounted_with_other_options_is_an_error(
    fake_mount: FakeMount, mnt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_mount.configure(kernel_options={"rsize": "rsize=65536"})  # server negotiated down
    with caplog.at_level(logging.WARNING, logger="efsray.mount"):
        result = manager(fake_mount, mnt).mount()
    assert result.drift is not None and not result.drift.ok
    assert "rsize" in caplog.text
    with pytest.raises(MountError, match="other options"):
        manager(fake_mount, mnt).mount()


def test_something_else_mounted_there_is_an_error(fake_mount: FakeMount, mnt: Path) -> None:
    fake_mount.add_mount(f"70 27 0:70 / {mnt} rw - tmpfs tmpfs rw")
    with pytest.raises(MountError, match="not NFS"):
        manager(fake_mount, mnt).mount()
    fake_mount.add_mount(f"71 70 0:71 / {mnt} rw - nfs4 10.9.9.9:/ rw,vers=4.1")
    with pytest.raises(MountError, match=re.escape("not 127.0.0.1:/")):
        manager(fake_mount, mnt).mount()
    assert fake_mount.calls("mount") == []


def test_efs_helper_with_tls_and_mount_target_ip(fake_mount: FakeMount, mnt: Path) -> None:
    config = {"mount_type": "efs", "tls": True, "mount_target_ip": "127.0.0.1"}
    m = manager(fake_mount, mnt, host=DNS, config=config)  # the IP means no DNS lookup
    m.mount()
    argv = fake_mount.calls("mount")[0]
    assert argv[1:3] == ["-t", "efs"]
    assert argv[4].endswith(",tls,mounttargetip=127.0.0.1")
    assert argv[5] == "fs-0123456789abcdef0:/"
    assert manager(fake_mount, mnt, host=DNS, config=config).mount().already_mounted


def test_unmount(fake_mount: FakeMount, mnt: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = manager(fake_mount, mnt)
    m.mount()
    assert m.unmount() is True
    assert fake_mount.calls("umount") == [["umount", str(mnt)]]
    assert not m.is_mounted()
    with caplog.at_level(logging.INFO, logger="efsray.mount"):
        assert m.unmount() is False
    assert "nothing is mounted" in caplog.text
    with pytest.raises(MountError, match="nothing is mounted"):
        m.live_options()


def test_busy_unmount_goes_lazy(fake_mount: FakeMount, mnt: Path) -> None:
    m = manager(fake_mount, mnt)
    m.mount()
    fake_mount.configure(umount_mode="busy")
    with pytest.raises(MountError, match="target is busy"):
        m.unmount(lazy=False)
    assert m.unmount() is True
    assert fake_mount.calls("umount")[-2:] == [["umount", str(mnt)], ["umount", "-l", str(mnt)]]


# --- availability ----------------------------------------------------------------------------


def test_dns_resolution_through_the_resolver(fake_mount: FakeMount, mnt: Path) -> None:
    m = manager(fake_mount, mnt, host="localhost")
    assert m.validate_efs_availability() is True
    report = m.check_availability()
    assert report.ok and report.addresses and report.resolve_ms is not None


def test_unresolvable_name_is_false_with_a_reason(fake_mount: FakeMount, mnt: Path) -> None:
    m = manager(fake_mount, mnt, host="no-such-host.invalid", dns_timeout=10.0)
    assert m.validate_efs_availability() is False
    assert "does not resolve" in str(m.last_error) or "did not answer" in str(m.last_error)
    with pytest.raises(MountError, match=re.escape("no-such-host.invalid")):
        m.mount()
    assert fake_mount.calls("mount") == []  # never tried to mount


def test_hanging_resolver_times_out(fake_mount: FakeMount, mnt: Path) -> None:
    release = threading.Event()

    def stuck_resolver(*args: Any, **kw: Any) -> list:
        release.wait(60)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    m = manager(fake_mount, mnt, host="localhost", dns_timeout=0.5, resolver=stuck_resolver)
    started = time.monotonic()
    try:
        assert m.validate_efs_availability() is False
        assert time.monotonic() - started < 5.0
        assert "did not answer within 0.5 s" in str(m.last_error)
    finally:
        release.set()


def test_tcp_connect_to_the_nfs_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        report = check_availability("localhost", port=port, connect_timeout=5.0)
        assert report.ok and report.reachable is True and report.connect_ms is not None
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    report = check_availability("127.0.0.1", port=closed, connect_timeout=5.0)
    assert not report.ok and report.reachable is False
    assert "security group" in (report.error or "")


# --- the seed's API, called exactly as the seed defines it -------------------------------------


def test_seed_api(fake_mount: FakeMount, tmp_path: Path) -> None:
    mount_path = str(tmp_path / "data")
    config = EFSMountConfig(
        efs_dns_name="localhost",
        mount_path=mount_path,
        nfs_version="4.1",
        performance_mode="generalPurpose",
        throughput_mode="provisioned",
    )
    options: list[str] = config.get_mount_options()
    assert options[0] == "nfsvers=4.1" and "hard" in options and "intr" not in options
    mgr = EFSMountManager(mount_config=config)
    assert mgr.config is config
    assert isinstance(mgr.logger, logging.Logger)
    mgr.mountinfo_path = fake_mount.mountinfo  # the fake kernel's table (public attribute)
    assert mgr.validate_efs_availability() is True
    assert mgr.create_mount_point() is True
    assert Path(mount_path).is_dir()
    assert mgr.mount_efs() is True
    assert fake_mount.calls("mount")[0][:3] == ["mount", "-t", "nfs4"]
    assert fake_mount.calls("mount")[0][-2:] == ["localhost:/", mount_path]
    health = mgr.check_mount_health()
    assert health["status"] == "healthy"
    assert health["mount_path"] == mount_path
    assert health["accessible"] is True
    assert isinstance(health["write_time_ms"], float)
    assert isinstance(health["read_time_ms"], float)
    assert "error" not in health
    # the seed's failure shapes
    fake_mount.configure(mode="fail", exit_code=1, stderr="mount: only root can do that")
    assert (
        EFSMountManager(EFSMountConfig("localhost", str(tmp_path / "other"))).mount_efs() is False
    )
    bad = EFSMountManager(EFSMountConfig("localhost", str(tmp_path / "missing" / "x")))
    (tmp_path / "missing").write_text("a file where a directory should be")
    assert bad.create_mount_point() is False
    assert "cannot create mount point" in str(bad.last_error)
    sick = bad.check_mount_health()
    assert sick["status"] == "error" and sick["accessible"] is False and sick["error"]
