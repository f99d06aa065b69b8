"""nfs-ganesha as a real NFSv4 server on 127.0.0.1, and what Debian's libnfs 4.0 client can do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from efsray.simfs.ganesha import GaneshaServer

LIBNFS_V4_MAX_WRITE = 3944  # bytes of data in one NFSv4 WRITE that libnfs 4.0 can encode

needs_libnfs_utils = pytest.mark.skipif(
    shutil.which("nfs-cp") is None, reason="needs libnfs-utils (nfs-cp, nfs-cat, nfs-ls)"
)


def nfs_url(server: GaneshaServer, name: str) -> str:
    return server.url.replace("/export?", f"/export/{name}?")


def nfs_cp(src: str, dst: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nfs-cp", src, dst], capture_output=True, text=True, timeout=60)


@needs_libnfs_utils
def test_ganesha_serves_nfsv4_on_loopback(nfs: GaneshaServer, tmp_path: Path) -> None:
    (nfs.export_dir / "from-server.txt").write_text("server side\n")
    listing = subprocess.run(["nfs-ls", nfs.url], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "from-server.txt" in listing.stdout
    cat = subprocess.run(
        ["nfs-cat", nfs_url(nfs, "from-server.txt")], capture_output=True, timeout=60
    )
    assert cat.stdout == b"server side\n"
    big = os.urandom(300_000)
    (nfs.export_dir / "big.bin").write_bytes(big)
    cat = subprocess.run(["nfs-cat", nfs_url(nfs, "big.bin")], capture_output=True, timeout=60)
    assert cat.stdout == big  # reads of any size work
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(LIBNFS_V4_MAX_WRITE))
    done = nfs_cp(str(small), nfs_url(nfs, "small.bin"))
    assert done.returncode == 0, done.stderr
    assert (nfs.export_dir / "small.bin").read_bytes() == small.read_bytes()


@needs_libnfs_utils
def test_libnfs_4_0_cannot_write_more_than_3944_bytes_at_once_over_nfsv4(
    nfs: GaneshaServer, tmp_path: Path
) -> None:
    """Debian's libnfs 4.0 encodes every NFSv4 COMPOUND into a fixed 4 KiB buffer (its v4
    WRITE passes no size hint), so a WRITE carrying more than 3944 bytes fails on the client
    with "ZDR error: Failed to encode COMPOUND4args" and never reaches the server. If this
    test fails, libnfs was fixed: lift the chunking workaround."""
    data = tmp_path / "one-more.bin"
    data.write_bytes(os.urandom(LIBNFS_V4_MAX_WRITE + 1))
    done = nfs_cp(str(data), nfs_url(nfs, "one-more.bin"))
    assert done.returncode != 0
    assert (nfs.export_dir / "one-more.bin").stat().st_size == 0  # created, nothing written


def test_stop_ends_the_server_by_pid(tmp_path: Path) -> None:
    from efsray.simfs.ganesha import ganesha_unavailable_reason

    if (reason := ganesha_unavailable_reason()) is not None:
        pytest.skip(f"needs nfs-ganesha: {reason}")
    (tmp_path / "e").mkdir()
    (tmp_path / "s").mkdir()
    with GaneshaServer.start(tmp_path / "e", tmp_path / "s") as server:
        assert server.alive()
        pid = server.pid
    assert not server.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "NFS SERVER INITIALIZED" in server.log_path.read_text()
