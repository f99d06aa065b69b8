"""`efsray compose token`: the file the containers (uid 1000, gid 100) must read, for each kind
of caller: root, the containers' uid, a member of their group, anyone else. Real users, real
files (the callers other than root are real child processes with other uids)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from efsray.compose import TokenFile, write_token
from efsray.compose.token import CONTAINER_GID, CONTAINER_UID

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root")


def _write_as(path: Path, uid: int, gid: int, groups: list[int]) -> list[object]:
    """write_token in a forked child that really runs as uid/gid (the interpreter lives under
    /root, which other uids cannot exec, so fork rather than start a new one)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid/gid, write, report, exit without cleanup
        status = 1
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            t = write_token(path)
            os.write(write_end, json.dumps([t.mode, t.uid, t.gid, t.container_readable]).encode())
            status = 0
        except BaseException as exc:
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer


@needs_root
def test_root_chowns_the_token_to_the_containers_user(tmp_path: Path) -> None:
    written = write_token(tmp_path / "secrets" / "ray_auth_token")
    st = written.path.stat()
    assert (st.st_uid, st.st_gid) == (CONTAINER_UID, CONTAINER_GID)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert written.container_readable and "1000:100" in written.note


@needs_root
@pytest.mark.parametrize(
    ("uid", "gid", "groups", "expected"),
    [
        (CONTAINER_UID, CONTAINER_GID, [], [0o600, CONTAINER_UID, CONTAINER_GID, True]),
        (4242, 4242, [CONTAINER_GID], [0o640, 4242, CONTAINER_GID, True]),
        (4242, 4242, [], [0o644, 4242, 4242, True]),
    ],
    ids=["the-containers-uid", "member-of-gid-100", "anyone-else"],
)
def test_other_callers_get_a_file_the_containers_can_read(
    uid: int, gid: int, groups: list[int], expected: list[object]
) -> None:
    # pytest's tmp_path lies under root's 0700 directory; other uids need a reachable one
    with tempfile.TemporaryDirectory(prefix="efsray-token-") as top:
        os.chmod(top, 0o755)
        _check_caller(Path(top) / "home", uid, gid, groups, expected)


def _check_caller(
    home: Path, uid: int, gid: int, groups: list[int], expected: list[object]
) -> None:
    home.mkdir()
    os.chown(home, uid, gid)
    secrets = home / "secrets"
    assert _write_as(secrets / "ray_auth_token", uid, gid, groups) == expected
    if expected[0] == 0o644:
        # world-readable only inside a directory other host users cannot enter
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700


def test_an_unreadable_combination_is_reported_as_such(tmp_path: Path) -> None:
    assert not TokenFile(tmp_path, 0o600, 0, 0, "").container_readable
    assert TokenFile(tmp_path, 0o640, 0, CONTAINER_GID, "").container_readable
    assert not TokenFile(tmp_path, 0o600, 0, CONTAINER_GID, "").container_readable
