"""Model checkpoints: saving, loading with verification, aliases, retention, concurrency."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from efsray.errors import (
    CommitConflictError,
    CorruptionError,
    InvalidDataError,
    InvalidNameError,
    NotFoundError,
    VersionNotFoundError,
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


def test_bytes_round_trip_with_metadata(store: Store) -> None:
    data = w.payload("a", 3_000_000)
    info = store.checkpoints.save("m", data, {"epoch": 3, "loss": float("nan"), "tags": ["x"]})
    assert info.version == 1 and info.kind == "bytes" and info.bytes == len(data)
    got, loaded = store.checkpoints.load_bytes("m")
    assert got == data and isinstance(got, bytes)
    assert loaded.metadata["epoch"] == 3 and loaded.metadata["tags"] == ["x"]
    assert loaded.metadata["loss"] != loaded.metadata["loss"]  # NaN survives
    assert Path(info.path).read_bytes() == data
    assert os.stat(info.path).st_mode & 0o777 == 0o444  # immutable once saved


def test_map_bytes_is_a_verified_read_only_view(store: Store, tmp_path: Path) -> None:
    data = w.payload("a", 3_000_000)
    store.checkpoints.save("m", data)
    view, info = store.checkpoints.map_bytes("m")
    assert view.readonly and view.nbytes == len(data) and view == data and info.version == 1
    with pytest.raises(TypeError):
        view[0] = 0  # type: ignore[index]
    store.checkpoints.save("m", b"")  # an empty file cannot be mapped: an empty view
    assert store.checkpoints.map_bytes("m")[0] == b""
    assert store.checkpoints.map_bytes("m", 1)[0] == data
    store.checkpoints.save_directory("d", _one_file_dir(tmp_path))
    with pytest.raises(InvalidDataError, match="directory checkpoint"):
        store.checkpoints.map_bytes("d")


def _one_file_dir(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.bin").write_bytes(b"x")
    return tmp_path / "src"


def test_versions_and_explicit_loads(store: Store) -> None:
    for i in range(3):
        store.checkpoints.save("m", f"v{i + 1}".encode())
    assert store.checkpoints.load_bytes("m", 2)[0] == b"v2"
    assert store.checkpoints.load_bytes("m")[0] == b"v3"
    assert [i.version for i in store.checkpoints.list("m")] == [1, 2, 3]
    with pytest.raises(VersionNotFoundError):
        store.checkpoints.load_bytes("m", 9)
    with pytest.raises(NotFoundError, match="no checkpoints"):
        store.checkpoints.load_bytes("other")
    with pytest.raises(InvalidDataError):
        store.checkpoints.load_bytes("m", 0)


def test_directory_round_trip(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    digest = w.make_source_dir(src, "d", files=7, size=200_000)
    info = store.checkpoints.save_directory("m", src, {"step": 10})
    assert info.kind == "directory" and "empty" in info.dirs
    assert {f.path for f in info.files} >= {"f0.bin", "sub/f1.bin", "sub/deeper/.metadata.json"}
    out = tmp_path / "out"
    store.checkpoints.load_directory("m", out)
    assert w.tree_hash(out) == digest
    with pytest.raises(InvalidDataError, match="directory checkpoint"):
        store.checkpoints.load_bytes("m")
    with pytest.raises(InvalidDataError, match="not an empty directory"):
        store.checkpoints.load_directory("m", out)
    # The in-store directory is verified and can be handed out as is.
    assert w.tree_hash(store.checkpoints.path("m")) == digest


def test_bytes_checkpoint_loads_into_a_directory(store: Store, tmp_path: Path) -> None:
    store.checkpoints.save("m", b"abc")
    (tmp_path / "empty").mkdir()
    store.checkpoints.load_directory("m", tmp_path / "empty")
    assert (tmp_path / "empty" / "checkpoint.bin").read_bytes() == b"abc"


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


@pytest.mark.parametrize(
    "metadata",
    [{"x": object()}, {1: "a"}, {"b": b"bytes"}, {"s": {1, 2}}, {"$float": "NaN"}, "not a dict"],
)
def test_bad_metadata_is_refused_before_writing(store: Store, metadata: object) -> None:
    with pytest.raises(InvalidDataError):
        store.checkpoints.save("m", b"x", metadata)  # type: ignore[arg-type]
    assert store.checkpoints.latest_version("m") is None
    assert not (store.layout.checkpoints / "m" / "data").exists()


def test_bad_names_and_data(store: Store, tmp_path: Path) -> None:
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(InvalidNameError):
            store.checkpoints.save(bad, b"x")
    with pytest.raises(InvalidDataError, match="must be bytes"):
        store.checkpoints.save("m", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError, match="does not exist"):
        store.checkpoints.save_directory("m", tmp_path / "nope")
    src = tmp_path / "src"
    src.mkdir()
    (src / ".efsray-tmp.x").write_bytes(b"")
    with pytest.raises(InvalidNameError, match="reserved"):
        store.checkpoints.save_directory("m", src)
    with pytest.raises(InvalidDataError, match="more than"):
        store.checkpoints.save("m", b"x", {"big": "x" * (2 << 20)})


# --- aliases -------------------------------------------------------------------------------------


def test_aliases_move_atomically_and_conditionally(store: Store) -> None:
    c = store.checkpoints
    for i in range(3):
        c.save("m", bytes([i]))
    assert c.set_alias("m", "production", 1) is None
    assert c.set_alias("m", "best", 2) is None
    assert c.set_alias("m", "production", 3, expect=1) == 1
    with pytest.raises(CommitConflictError, match="points at 3, not 1"):
        c.set_alias("m", "production", 2, expect=1)
    assert c.aliases("m") == {"production": 3, "best": 2}
    assert c.load_bytes("m", alias="best")[0] == bytes([1])
    assert c.info("m", 3).aliases == ("production",)
    assert c.remove_alias("m", "best") == 2
    with pytest.raises(NotFoundError, match="no alias 'best'"):
        c.load_bytes("m", alias="best")
    with pytest.raises(VersionNotFoundError):
        c.set_alias("m", "x", 42)
    with pytest.raises(InvalidNameError):
        c.set_alias("m", "../x", 1)


def test_concurrent_alias_moves_keep_both_changes(store: Store) -> None:
    """Two processes move different aliases at once: neither move is lost (a single JSON
    file rewritten by both would lose one); of moves of the same alias the later wins."""
    c = store.checkpoints
    for i in range(4):
        c.save("m", bytes([i]))
    ctx = w.fork_context()
    procs = []
    for alias, version in (("a", 2), ("b", 3), ("c", 4), ("d", 1)):
        p = ctx.Process(target=_set_alias, args=(str(store.root), alias, version))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert c.aliases("m") == {"a": 2, "b": 3, "c": 4, "d": 1}


def _set_alias(root: str, alias: str, version: int) -> None:
    for _ in range(20):
        Store(root, create=False).checkpoints.set_alias("m", alias, version)


# --- retention -------------------------------------------------------------------------------


def test_prune_keeps_latest_aliased_keep_last_and_best(store: Store) -> None:
    c = store.checkpoints
    losses = [0.9, 0.1, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4]
    for i, loss in enumerate(losses):
        c.save("m", bytes([i]), {"val_loss": loss})
    c.set_alias("m", "production", 1)
    policy = RetentionPolicy(keep_last=2, keep_best=2, metric="val_loss", mode="min")
    later = time.time() + 2 * HOUR
    dry = c.prune("m", policy=policy, now=later, dry_run=True)
    assert dry.removed == (3, 4, 6) and dry.dry_run
    assert len(c.list("m")) == 8  # dry run changed nothing
    result = c.prune("m", policy=policy, now=later)
    assert result.removed == (3, 4, 6)
    assert result.reasons[1] == "alias production"
    assert result.reasons[2].startswith("keep-best") and result.reasons[5].startswith("keep-best")
    assert result.reasons[8] == "latest" and result.reasons[7].startswith("keep-last")
    assert [i.version for i in c.list("m")] == [1, 2, 5, 7, 8]
    assert result.files == 6 and result.bytes == 3
    for v in (1, 2, 5, 7, 8):
        assert c.load_bytes("m", v)[0] == bytes([v - 1])
    with pytest.raises(VersionNotFoundError):
        c.load_bytes("m", 3)
    # Only the files of removed versions went.
    assert len(list((store.layout.checkpoints / "m" / "data").glob("*/*"))) == 5


def test_prune_respects_the_grace_period(store: Store) -> None:
    c = store.checkpoints
    for i in range(5):
        c.save("m", bytes([i]))
    result = c.prune("m", policy=RetentionPolicy(keep_last=1))
    assert result.removed == ()  # all were superseded just now: a reader may be reading them
    assert set(result.reasons.values()) >= {"latest", "within the grace period"}
    assert c.prune("m", policy=RetentionPolicy(keep_last=1), grace=0).removed == (1, 2, 3, 4)


def test_stored_policy_is_used_by_cleanup(store: Store) -> None:
    c = store.checkpoints
    for i in range(6):
        c.save("m", bytes([i]))
    c.set_retention("m", RetentionPolicy(keep_last=3))
    c.set_alias("m", "production", 2)  # setting an alias keeps the policy
    assert c.retention("m") == RetentionPolicy(keep_last=3)
    report = store.cleanup(days=0, now=time.time() + 2 * HOUR)
    assert [i.version for i in c.list("m")] == [2, 4, 5, 6]
    assert report.areas["checkpoints"].files == 4  # 2 manifests + 2 data files


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


def test_eight_processes_get_distinct_gap_free_versions(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    writers, count = 8, 6
    pipes, procs = [], []
    for writer in range(writers):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=w.save_many, args=(str(root), writer, count, 50_000, go, send))
        p.start()
        procs.append(p)
        pipes.append(recv)
    go.set()
    versions: list[int] = []
    for recv, p in zip(pipes, procs, strict=True):
        assert recv.poll(120), "a saver did not finish"
        status, value = recv.recv()
        assert status == "ok", value
        versions.extend(value)
        p.join(10)
    assert sorted(versions) == list(range(1, writers * count + 1))
    store = Store(root)
    for v in versions:
        data, info = store.checkpoints.load_bytes(w.MODEL, v)
        assert data == w.expected_content(info.metadata)


# --- the seed's face ---------------------------------------------------------------------------


def test_seed_face_save_and_load_model_checkpoint(tmp_path: Path) -> None:
    import asyncio

    from efsray.store import EFSDataManager

    manager = EFSDataManager(tmp_path / "store")
    assert asyncio.run(manager.load_model_checkpoint("lstm")) is None
    metadata = {"accuracy": 0.93, "epoch": 12}
    path = asyncio.run(manager.save_model_checkpoint("lstm", b"\x80\x04opaque", metadata))
    assert Path(path).read_bytes() == b"\x80\x04opaque"  # stored as is, never unpickled
    assert metadata["checkpoint_path"] == path and isinstance(metadata["saved_at"], float)
    data, meta = asyncio.run(manager.load_model_checkpoint("lstm"))
    assert data == b"\x80\x04opaque"
    assert meta == {"accuracy": 0.93, "epoch": 12, "saved_at": metadata["saved_at"],
                    "checkpoint_path": path}  # fmt: skip
    # Saving again with the same (stamped) dict makes a new version; the latest wins.
    path2 = asyncio.run(manager.save_model_checkpoint("lstm", b"second", metadata))
    assert path2 != path and asyncio.run(manager.load_model_checkpoint("lstm"))[0] == b"second"
    _flip_byte(Path(path2))
    with pytest.raises(CorruptionError):
        asyncio.run(manager.load_model_checkpoint("lstm"))
