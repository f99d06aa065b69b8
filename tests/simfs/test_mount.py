"""The simulated filesystem, mounted for real: latency, counters, faults, hangs, NFS behaviour."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from efsray.deadline import run_in_child
from efsray.errors import DeadlineExceeded
from efsray.simfs import SimFSProcess, is_mounted

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old))


def stat_child(path: Path) -> subprocess.Popen[bytes]:
    """A separate process that stats ``path`` (and so blocks while the mount hangs)."""
    return subprocess.Popen([sys.executable, "-c", f"import os; os.stat({str(path)!r})"])


def stat_path(path: str) -> dict:  # runs in a deadline child
    return {"size": os.stat(path).st_size}


# --- the basics ---------------------------------------------------------------------------


def test_files_pass_through_to_the_backing_directory(simfs: SimFSProcess) -> None:
    (simfs.path / "sub").mkdir()
    (simfs.path / "sub" / "a.bin").write_bytes(b"hello")
    assert (simfs.backing / "sub" / "a.bin").read_bytes() == b"hello"
    (simfs.backing / "b.txt").write_text("from the server side")
    assert (simfs.path / "b.txt").read_text() == "from the server side"
    assert sorted(os.listdir(simfs.path)) == ["b.txt", "sub"]
    assert is_mounted(simfs.path)
    status = simfs.control.status()
    assert status["mounted"] and status["pid"] == simfs.pid
    assert status["backing"] == str(simfs.backing.resolve())


def test_counters_are_exact_for_known_syscalls(simfs: SimFSProcess) -> None:
    p, ctl = simfs.path, simfs.control
    ctl.reset()
    fd = os.open(p / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, b"x" * (3 << 20))  # 3 MiB in one call: three 1 MiB WRITEs, like wsize=1M
    os.fsync(fd)
    os.close(fd)
    os.mkdir(p / "d")
    os.rename(p / "f", p / "d" / "g")
    os.close(os.open(p / "d" / "g", os.O_RDONLY))
    os.unlink(p / "d" / "g")
    os.rmdir(p / "d")
    assert os.listdir(p) == []
    counts = ctl.counters()
    exact = {
        "create": 1,
        "write": 3,
        "fsync": 1,
        "flush": 2,
        "mkdir": 1,
        "rename": 1,
        "open": 1,
        "unlink": 1,
        "rmdir": 1,
        "opendir": 1,
        "readdir": 1,
    }
    assert {kind: counts[kind] for kind in exact} == exact
    assert counts["getattr"] >= 5  # lookups: their number depends on the kernel's cache clock
    assert counts["read"] == 0
    assert counts.bytes_written == 3 << 20
    assert counts.faults_total == 0 and counts.open_append == 0
    ctl.start_trace()
    (p / "t").write_bytes(b"x")
    os.rename(p / "t", p / "u")
    trace = [entry for entry in ctl.stop_trace() if entry[0] != "getattr"]
    assert trace == [("create", "/t"), ("write", "/t"), ("flush", "/t"), ("rename", "/t", "/u")]
    assert ctl.reset().total() >= counts.total()
    assert ctl.counters()["create"] == 0


def test_latency_is_added_per_operation(simfs_factory) -> None:
    handle = simfs_factory(profile="none", latency={"write": 0.05, "fsync": 0.05})
    fd = os.open(handle.path / "slow", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        started = time.monotonic()
        for _ in range(4):
            os.write(fd, b"x" * 100)
        os.fsync(fd)
        elapsed = time.monotonic() - started
    finally:
        os.close(fd)
    assert elapsed >= 5 * 0.05  # a lower bound: a sleep never ends early
    # switched at run time: the EFS General Purpose profile charges >= 2.7 ms per write
    handle.control.set_profile("efs-gp")
    fd = os.open(handle.path / "slow", os.O_WRONLY)
    try:
        started = time.monotonic()
        for _ in range(10):
            os.write(fd, b"y")
        assert time.monotonic() - started >= 10 * 0.0027
    finally:
        os.close(fd)
    assert handle.control.status()["profile"]["name"] == "efs-gp"


# --- NFS-like behaviour -------------------------------------------------------------------


def test_renameat2_flags_fail_with_einval_like_nfs(simfs: SimFSProcess) -> None:
    a, b = simfs.path / "a", simfs.path / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    # What delta-rs and friends do to commit: "rename unless the target exists".
    with pytest.raises(OSError) as info:
        renameat2(a, simfs.path / "absent", RENAME_NOREPLACE)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        renameat2(a, b, RENAME_EXCHANGE)
    assert info.value.errno == errno.EINVAL
    # An existing target is refused by the VFS before the filesystem is asked (also on NFS).
    with pytest.raises(FileExistsError):
        renameat2(a, b, RENAME_NOREPLACE)
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"
    assert not (simfs.path / "absent").exists()
    os.rename(a, b)  # plain rename replaces atomically
    assert b.read_bytes() == b"A" and not a.exists()
    counts = simfs.control.counters()
    assert counts.renames_rejected == 2
    assert counts["rename"] == 1


def test_o_append_is_not_trusted_across_two_clients(simfs_factory) -> None:
    first = simfs_factory()
    second = simfs_factory(backing=first.backing)  # two NFS clients of one server
    (first.path / "log").write_bytes(b"")
    fd1 = os.open(first.path / "log", os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(second.path / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd1, b"A" * 10)
        os.write(fd2, b"B" * 10)  # the second client still believes the file is empty
    finally:
        os.close(fd1)
        os.close(fd2)
    assert (first.backing / "log").read_bytes() == b"B" * 10  # the A's are lost, as on NFS
    assert first.control.counters().open_append == 1
    assert second.control.counters().open_append == 1
    # within one client the kernel serialises appends
    fd1 = os.open(first.path / "log", os.O_WRONLY | os.O_APPEND)
    fd2 = os.open(first.path / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd1, b"C")
        os.write(fd2, b"D")
    finally:
        os.close(fd1)
        os.close(fd2)
    assert (first.backing / "log").read_bytes() == b"B" * 10 + b"CD"


def test_locks_are_advisory_and_local_to_a_mount(simfs_factory) -> None:
    first = simfs_factory()
    second = simfs_factory(backing=first.backing)
    (first.path / "lockfile").write_bytes(b"")
    with (
        open(first.path / "lockfile", "rb") as a,
        open(first.path / "lockfile", "rb") as a2,
        open(second.path / "lockfile", "rb") as b,
        open(first.path / "lockfile", "r+b") as writer,
    ):
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(a2, fcntl.LOCK_EX | fcntl.LOCK_NB)  # same client: excluded
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another client: not excluded
        writer.write(b"advisory")  # and nobody is stopped from writing
    assert (first.backing / "lockfile").read_bytes() == b"advisory"


@pytest.mark.skipif(os.geteuid() != 0, reason="creating files as another uid needs root")
def test_new_files_belong_to_the_caller(simfs_factory) -> None:
    # Other users reach a FUSE mount only with allow_other, and through directories they
    # may traverse (pytest's tmp root is private): mount under a world-readable directory.
    base = Path(tempfile.mkdtemp(prefix="efsray-simfs-owner-"))
    try:
        base.chmod(0o755)
        (base / "mnt").mkdir()
        (base / "backing").mkdir(mode=0o755)
        handle = simfs_factory(backing=base / "backing", mountpoint=base / "mnt", allow_other=True)
        shared = handle.path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        # /bin/sh, not this Python: the interpreter may live where uid 65534 cannot read it
        write = ["/bin/sh", "-c", 'echo x > "$1"', "sh"]
        subprocess.run([*write, str(shared / "mine")], user=65534, group=65534, check=True, cwd="/")
        st = os.stat(base / "backing" / "shared" / "mine")
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        denied = subprocess.run(
            [*write, str(handle.path / "rootonly")],
            user=65534,
            capture_output=True,
            check=False,
            cwd="/",
        )
        assert denied.returncode != 0 and b"Permission denied" in denied.stderr
        assert not (base / "backing" / "rootonly").exists()
        handle.stop()
    finally:
        shutil.rmtree(base)


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["EIO", "ENOSPC", "EDQUOT", "ESTALE"])
def test_each_fault_kind_reaches_the_application(simfs: SimFSProcess, error: str) -> None:
    code = getattr(errno, error)
    p, ctl = simfs.path, simfs.control
    (p / "f").write_bytes(b"committed")

    ctl.inject(error, ops="write", path="/f")
    fd = os.open(p / "f", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, b"new")
        assert info.value.errno == code
        os.write(fd, b"NEW")  # the fault fired once; the next write goes through
    finally:
        os.close(fd)
    assert (simfs.backing / "f").read_bytes() == b"NEWmitted"

    ctl.inject(error, ops="fsync")
    fd = os.open(p / "f", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno == code
    finally:
        os.close(fd)

    ctl.inject(error, ops="flush")  # close() reports it, as NFS reports write errors there
    fd = os.open(p / "f", os.O_WRONLY)
    os.write(fd, b"x")
    with pytest.raises(OSError) as info:
        os.close(fd)
    assert info.value.errno == code

    # The VFS retries a path operation once on ESTALE (for NFS): fail it twice to be seen.
    path_times = 2 if error == "ESTALE" else 1
    ctl.inject(error, ops="rename", times=path_times)
    with pytest.raises(OSError) as info:
        os.rename(p / "f", p / "g")
    assert info.value.errno == code
    assert (simfs.backing / "f").exists() and not (simfs.backing / "g").exists()

    # persistent (times=None): also a kernel retry fails, as when the volume stays full
    ctl.inject(error, ops="create,mkdir", times=None)
    with pytest.raises(OSError) as info:
        (p / "new").write_bytes(b"")
    assert info.value.errno == code
    with pytest.raises(OSError) as info:
        (p / "dir").mkdir()
    assert info.value.errno == code
    assert ctl.clear_faults() == 5  # spent rules stay listed (with "fired") until cleared
    (p / "dir").mkdir()

    fired = ctl.counters().faults_injected
    assert fired[f"write:{error}"] == 1 and fired[f"rename:{error}"] == path_times
    assert sum(fired.values()) >= 6


def test_nth_matching_operation_and_path_filter(simfs: SimFSProcess) -> None:
    p, ctl = simfs.path, simfs.control
    (p / "a").mkdir()
    (p / "b").mkdir()
    ctl.inject("EIO", ops="create", path="/a/*", nth=3)
    created = []
    for i in range(5):
        for d in ("a", "b"):
            try:
                (p / d / str(i)).write_bytes(b"")
                created.append(f"{d}{i}")
            except OSError as exc:
                assert exc.errno == errno.EIO
    assert created == ["a0", "b0", "a1", "b1", "b2", "a3", "b3", "a4", "b4"]
    assert ctl.status()["faults"][0]["fired"] == 1


def test_read_fault_can_be_absorbed_by_a_kernel_retry(simfs: SimFSProcess) -> None:
    p, ctl = simfs.path, simfs.control
    (simfs.backing / "data").write_bytes(b"d" * 100_000)
    ctl.inject("EIO", ops="read", path="/data", times=None)
    with pytest.raises(OSError) as info:
        (p / "data").read_bytes()
    assert info.value.errno == errno.EIO
    ctl.clear_faults()
    assert (p / "data").read_bytes() == b"d" * 100_000


def test_estale_once_on_open_is_retried_by_the_kernel(simfs: SimFSProcess) -> None:
    """Linux retries a path walk once on ESTALE (for NFS); a second ESTALE reaches the app."""
    p, ctl = simfs.path, simfs.control
    (p / "x").write_bytes(b"x")
    ctl.reset()
    ctl.inject("ESTALE", ops="open", times=1)
    assert (p / "x").read_bytes() == b"x"
    assert ctl.counters()["open"] == 2
    ctl.inject("ESTALE", ops="open", times=2)
    with pytest.raises(OSError) as info:
        (p / "x").read_bytes()
    assert info.value.errno == errno.ESTALE


def test_probability_faults(simfs: SimFSProcess) -> None:
    p, ctl = simfs.path, simfs.control
    ctl.inject("EIO", ops="mkdir", probability=0.5, times=None)
    failed = 0
    for i in range(60):
        try:
            (p / f"d{i}").mkdir()
        except OSError as exc:
            assert exc.errno == errno.EIO
            failed += 1
    assert 0 < failed < 60
    assert ctl.counters().faults_injected == {"mkdir:EIO": failed}
    assert len(os.listdir(simfs.backing)) == 60 - failed


# --- hangs --------------------------------------------------------------------------------


def test_hang_blocks_until_released(simfs: SimFSProcess) -> None:
    ctl = simfs.control
    (simfs.path / "x").write_bytes(b"x")
    ctl.hang(ops="getattr", path="/x")
    child = stat_child(simfs.path / "x")
    try:
        assert ctl.wait_hung(1, timeout=20) == 1
        assert child.poll() is None
        assert ctl.counters().hung_pids == (child.pid,)
        assert os.stat(simfs.path).st_mode  # other paths are not held
        assert ctl.release() == 1
        assert child.wait(timeout=20) == 0
    finally:
        ctl.release()
        child.wait(timeout=20)


def test_control_answers_while_every_fuse_worker_is_hung(simfs: SimFSProcess) -> None:
    ctl = simfs.control
    ctl.hang()
    children = [stat_child(simfs.path / f"f{i}") for i in range(12)]  # libfuse: 10 workers
    try:
        assert ctl.wait_hung(10, timeout=30) >= 10
        assert ctl.counters().hung_now >= 10
        assert all(c.poll() is None for c in children)
        ctl.release()
        for child in children:
            assert child.wait(timeout=30) == 1  # the files do not exist: FileNotFoundError
    finally:
        ctl.release()
        for child in children:
            child.wait(timeout=30)


def test_a_hung_mount_gives_a_deadline_error(simfs: SimFSProcess) -> None:
    (simfs.path / "x").write_bytes(b"abc")
    assert run_in_child(
        "tests.simfs.test_mount:stat_path", {"path": str(simfs.path / "x")}, timeout=30
    ) == {"size": 3}
    simfs.control.hang()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        run_in_child(
            "tests.simfs.test_mount:stat_path", {"path": str(simfs.path / "x")}, timeout=1.0
        )
    assert time.monotonic() - started < 20
    simfs.control.release()


def test_stop_while_hung_releases_and_unmounts(simfs_factory) -> None:
    handle = simfs_factory()
    handle.control.hang()
    child = stat_child(handle.path / "missing")
    try:
        handle.control.wait_hung(1, timeout=20)
        handle.stop()
        assert child.wait(timeout=20) in (0, 1)  # released, then answered (or ENOTCONN)
    finally:
        child.kill()
        child.wait()
    assert not is_mounted(handle.path)


def test_stop_with_files_still_open_ends_the_session(simfs_factory) -> None:
    handle = simfs_factory()
    with open(handle.path / "held", "wb") as held:
        held.write(b"x")
        held.flush()
        handle.stop()
        assert not is_mounted(handle.path)
        with pytest.raises(OSError) as info:
            held.write(b"y")
            held.flush()
        assert info.value.errno == errno.ENOTCONN
        held.close = lambda: None  # type: ignore[method-assign]  # the fd is already dead


# --- process lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(simfs_factory, sig: signal.Signals) -> None:
    handle = simfs_factory()
    (handle.path / "kept").write_bytes(b"k")
    os.kill(handle.pid, sig)
    assert handle.wait(timeout=20) == 0
    assert not is_mounted(handle.path)
    assert (handle.backing / "kept").read_bytes() == b"k"
    assert not handle.control.socket_path.exists()


def test_killed_server_leaves_enotconn_and_teardown_still_unmounts(simfs_factory) -> None:
    handle = simfs_factory()
    handle.kill()
    with pytest.raises(OSError) as info:
        os.stat(handle.path / "anything")
    assert info.value.errno == errno.ENOTCONN
    handle.stop()
    assert not is_mounted(handle.path)
