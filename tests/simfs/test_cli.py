"""``efsray simulate`` and ``efsray simfs ...`` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import efsray
from efsray.simfs import default_control_path, fuse_unavailable_reason, is_mounted

SRC = str(Path(efsray.__file__).resolve().parents[1])


def efsray_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "efsray.cli.app", *args]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        efsray_cmd(*args), capture_output=True, text=True, timeout=120, env=env, check=False
    )


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*extra.pop("prepend", "").split(os.pathsep), SRC])
    env["COLUMNS"] = "250"  # one message per line
    env.update(extra)
    return env


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    mnt, backing = tmp_path / "mnt", tmp_path / "backing"
    mnt.mkdir()
    backing.mkdir()
    yield mnt, backing
    if is_mounted(mnt):  # a failed test must not leave a mount behind
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def wait_for_line(fd: int, needle: str, timeout: float) -> str:
    """Read the pipe ``fd`` until a line containing ``needle`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        for line in buffer.decode(errors="replace").splitlines():
            if needle in line:
                return line
    raise AssertionError(f"no line with {needle!r} within {timeout} s; got: {buffer!r}")


def test_foreground_simulate_unmounts_on_sigint(dirs) -> None:
    if (reason := fuse_unavailable_reason()) is not None:
        pytest.skip(f"needs FUSE: {reason}")
    mnt, backing = dirs
    proc = subprocess.Popen(
        efsray_cmd("simulate", str(mnt), "--backing", str(backing), "--profile", "none"),
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        line = wait_for_line(proc.stderr.fileno(), "mounted", timeout=60)
        assert str(mnt) in line and "Ctrl-C" in line
        assert is_mounted(mnt)
        (mnt / "hello").write_text("world")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not is_mounted(mnt)
    assert (backing / "hello").read_text() == "world"


def test_background_simulate_and_the_control_commands(dirs) -> None:
    if (reason := fuse_unavailable_reason()) is not None:
        pytest.skip(f"needs FUSE: {reason}")
    mnt, backing = dirs
    env = child_env()
    started = subprocess.run(
        efsray_cmd("simulate", str(mnt), "--backing", str(backing), "--background", "--json",
                   "--profile", "efs-gp", "--latency", "write=1ms", "--jitter", "0.1"),
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    try:
        assert is_mounted(mnt)
        assert info["control"] == str(default_control_path(mnt))
        status = json.loads(run("simfs", "status", str(mnt), "--json", env=env).stdout)
        assert status["pid"] == info["pid"]
        assert status["profile"]["write"] == pytest.approx(0.001)
        assert status["profile"]["jitter"] == pytest.approx(0.1)

        armed = run("simfs", "fault", str(mnt), "ENOSPC", "--ops", "create", env=env)
        assert armed.returncode == 0, armed.stderr
        with pytest.raises(OSError) as exc_info:
            (mnt / "full").write_bytes(b"x")
        assert exc_info.value.errno == 28

        counters = json.loads(run("simfs", "counters", str(mnt), "--json", env=env).stdout)
        assert counters["faults_injected"] == {"create:ENOSPC": 1}
        assert counters["ops"]["create"] == 1

        bad = run("simfs", "fault", str(mnt), "ENOSYS", env=env)
        assert bad.returncode == 2 and "cannot inject 'ENOSYS'" in bad.stderr

        stopped = run("simfs", "stop", str(mnt), env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            os.kill(info["pid"], signal.SIGKILL)


def test_control_commands_without_a_simulator_say_so(tmp_path: Path) -> None:
    done = run("simfs", "counters", str(tmp_path), env=child_env())
    assert done.returncode == 5
    assert "did not answer" in done.stderr and "efsray simulate" in done.stderr


def test_simulate_refuses_clearly_without_mfusepy(dirs, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "mfusepy.py").write_text("raise ImportError('mfusepy hidden by the test')\n")
    mnt, backing = dirs
    done = run("simulate", str(mnt), "--backing", str(backing),
               env=child_env(prepend=str(shadow)))  # fmt: skip
    if fuse_unavailable_reason() is None:
        assert done.returncode == 5, done.stderr
        assert "mfusepy is not importable" in done.stderr
        assert "pip install" in done.stderr
    else:
        assert done.returncode == 5 and "cannot start the simulated filesystem" in done.stderr
    assert "Traceback" not in done.stderr
    assert not is_mounted(mnt)


def test_simulate_refuses_bad_paths_and_profiles(dirs) -> None:
    mnt, backing = dirs
    env = child_env()
    nested = run("simulate", str(mnt), "--backing", str(mnt), env=env)
    if fuse_unavailable_reason() is None:
        assert nested.returncode == 2 and "must not contain each other" in nested.stderr
    bad = run("simulate", str(mnt), "--backing", str(backing), "--profile", "efs-turbo", env=env)
    assert bad.returncode == 2 and "efs-gp, efs-maxio, none" in bad.stderr
