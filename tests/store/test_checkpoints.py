"""Model checkpoints: damaged and tampered files, checksum algorithms, retention races and
orphans.

Saving, loading, aliases, prune and concurrent savers through the public API are the
conformance suite's, run on every backend (tests/conformance/cases/checkpoints.py and
concurrency.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from efsray.errors import (
    CorruptionError,
    InvalidDataError,
)
from efsray.store import RetentionPolicy, Store
from efsray.store.hashing import available_algorithms
from efsray.store.nfs import _with_checksum, is_temp_name
from tests.store import _ckpt_workers as w

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _flip_byte(path: Path, offset: int = 0) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- save and load ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", available_algorithms())
def test_flipped_byte_is_detected_naming_the_file(tmp_path: Path, algorithm: str) -> None:
    from efsray.store import CheckpointStore

    store = Store(tmp_path / "store")
    ckpts = CheckpointStore(store.layout, algorithm=algorithm)
    info = ckpts.save("m", w.payload("x", 20_000_000))
    assert info.files[0].digest.startswith(algorithm + ":")
    _flip_byte(Path(info.path), 12_345_678)
    with pytest.raises(CorruptionError, match=r"checkpoint\.bin.*does not match its checksum"):
        ckpts.load_bytes("m")
    with pytest.raises(CorruptionError, match=r"checkpoint\.bin.*does not match its checksum"):
        ckpts.map_bytes("m")
    with pytest.raises(CorruptionError):
        ckpts.verify("m")
    with pytest.raises(CorruptionError):
        ckpts.load_directory("m", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-copied is left behind
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


def test_sizes_around_the_write_slices_round_trip(store: Store, tmp_path: Path) -> None:
    """Local writes go in LOCAL_WRITE_SIZE slices of 1 MiB chunks: files of every size
    around both boundaries come back whole, with the digest of their bytes."""
    from efsray.store.hashing import CHUNK_SIZE, LOCAL_WRITE_SIZE, hash_buffer

    sizes = [0, 1, LOCAL_WRITE_SIZE - 1, LOCAL_WRITE_SIZE + 1, CHUNK_SIZE + 3, 3 * CHUNK_SIZE - 5]
    src = tmp_path / "src"
    src.mkdir()
    blobs = {f"f{size}.bin": os.urandom(size) for size in sizes}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
        info = store.checkpoints.save(name, data)
        assert info.files[0].digest == hash_buffer(data, store.checkpoints.algorithm)
        assert store.checkpoints.load_bytes(name)[0] == data
    saved = store.checkpoints.save_directory("dir", src)
    assert {f.path: f.bytes for f in saved.files} == {n: len(d) for n, d in blobs.items()}
    store.checkpoints.load_directory("dir", tmp_path / "out")
    for name, data in blobs.items():
        assert (tmp_path / "out" / name).read_bytes() == data


def test_damaged_file_in_a_directory_checkpoint_is_named(store: Store, tmp_path: Path) -> None:
    w.make_source_dir(tmp_path / "src", "d")
    info = store.checkpoints.save_directory("m", tmp_path / "src")
    victim = Path(info.directory) / "sub" / "f1.bin"
    os.chmod(victim, 0o644)
    with open(victim, "ab") as f:
        f.write(b"!")
    with pytest.raises(CorruptionError, match=r"sub/f1\.bin.*longer than recorded"):
        store.checkpoints.verify("m")
    with pytest.raises(CorruptionError, match=r"sub/f1\.bin"):
        store.checkpoints.load_directory("m", tmp_path / "out")


def test_truncated_file_is_detected(store: Store) -> None:
    info = store.checkpoints.save("m", b"0123456789")
    os.chmod(info.path, 0o644)
    Path(info.path).write_bytes(b"01234")
    with pytest.raises(CorruptionError, match="shorter than recorded"):
        store.checkpoints.load_bytes("m")
    with pytest.raises(CorruptionError, match="shorter than recorded"):
        store.checkpoints.map_bytes("m")


def test_tampered_manifest_cannot_escape_the_store(store: Store) -> None:
    info = store.checkpoints.save("m", b"x")
    vlog_path = store.checkpoints._model("m").log.path(info.version)
    manifest = json.loads(vlog_path.read_bytes())
    manifest["files"][0]["path"] = "../../../../etc/passwd"
    manifest.pop("checksum")
    # A manifest rewritten with a fresh checksum (whoever can write the share can): the path
    # check must still refuse it.
    vlog_path.chmod(0o644)  # committed manifests are read-only
    vlog_path.write_bytes(_with_checksum(manifest))
    with pytest.raises(CorruptionError, match="unsafe file path"):
        Store(store.root).checkpoints.load_bytes("m")  # another process: nothing cached


# --- aliases -------------------------------------------------------------------------------------


# --- retention -------------------------------------------------------------------------------


def test_retention_policy_validation() -> None:
    with pytest.raises(InvalidDataError):
        RetentionPolicy(keep_last=0)
    with pytest.raises(InvalidDataError):
        RetentionPolicy(keep_best=2)
    with pytest.raises(InvalidDataError):
        RetentionPolicy(mode="median")  # type: ignore[arg-type]


def test_alias_set_during_removal_wins(store: Store) -> None:
    """Retention unpublishes a version, then re-reads the aliases: an alias that arrived in
    between makes it put the manifest back (this is the race, staged deterministically)."""
    c = store.checkpoints
    for i in range(3):
        c.save("m", bytes([i]))
    m = c._model("m")
    manifest = m.log.read(1)
    c.set_alias("m", "production", 1)  # lands after retention decided to remove v1
    assert c._remove_version(m, 1, manifest) is False
    assert c.load_bytes("m", alias="production")[0] == b"\x00"


def test_orphaned_data_of_crashed_saves_is_removed_after_grace(store: Store) -> None:
    c = store.checkpoints
    c.save("m", b"committed")
    orphan = store.layout.checkpoints / "m" / "data" / "01ZZZ" / "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    orphan.mkdir(parents=True)
    (orphan / "part.bin").write_bytes(b"x" * 10)
    (orphan / ".efsray-tmp.more.bin.h.1.abcd").write_bytes(b"y" * 5)
    assert c.prune("m").orphans == 0  # too recent: maybe a save in progress
    result = c.prune("m", now=time.time() + 2 * HOUR)
    assert result.orphans == 1 and result.bytes == 15
    assert not orphan.exists()
    assert c.load_bytes("m")[0] == b"committed"


# --- concurrency -------------------------------------------------------------------------------


# --- the seed's face ---------------------------------------------------------------------------
