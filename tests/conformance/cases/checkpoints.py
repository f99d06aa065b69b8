"""Checkpoints through the public API: bytes and directories, map_bytes, versions, aliases,
metadata and name validation, prune and stored retention policies."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from efsray.errors import (
    CommitConflictError,
    InvalidDataError,
    InvalidNameError,
    NotFoundError,
    VersionNotFoundError,
)
from efsray.store import RetentionPolicy, Store
from tests.conformance.site import Site, case
from tests.store import _ckpt_workers as w

HOUR = 3600.0


@case("checkpoints")
def bytes_round_trip_with_metadata(site: Site) -> None:
    store = site.store()
    data = w.payload("a", 3_000_000)
    info = store.checkpoints.save("m", data, {"epoch": 3, "loss": float("nan"), "tags": ["x"]})
    assert info.version == 1 and info.kind == "bytes" and info.bytes == len(data)
    got, loaded = site.store().checkpoints.load_bytes("m")
    assert got == data and isinstance(got, bytes)
    assert loaded.metadata["epoch"] == 3 and loaded.metadata["tags"] == ["x"]
    assert loaded.metadata["loss"] != loaded.metadata["loss"]  # NaN survives
    assert Path(info.path).read_bytes() == data
    assert os.stat(info.path).st_mode & 0o777 == 0o444  # immutable once saved


@case("checkpoints")
def map_bytes_is_a_verified_read_only_view(site: Site) -> None:
    store = site.store()
    data = w.payload("a", 3_000_000)
    store.checkpoints.save("m", data)
    view, info = store.checkpoints.map_bytes("m")
    assert view.readonly and view.nbytes == len(data) and view == data and info.version == 1
    with pytest.raises(TypeError):
        view[0] = 0  # type: ignore[index]
    store.checkpoints.save("m", b"")  # an empty file cannot be mapped: an empty view
    assert store.checkpoints.map_bytes("m")[0] == b""
    assert store.checkpoints.map_bytes("m", 1)[0] == data
    src = site.scratch / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"x")
    store.checkpoints.save_directory("d", src)
    with pytest.raises(InvalidDataError, match="directory checkpoint"):
        store.checkpoints.map_bytes("d")


@case("checkpoints")
def versions_and_explicit_loads(site: Site) -> None:
    store = site.store()
    for i in range(3):
        store.checkpoints.save("m", f"v{i + 1}".encode())
    assert store.checkpoints.load_bytes("m", 2)[0] == b"v2"
    assert store.checkpoints.load_bytes("m")[0] == b"v3"
    assert [i.version for i in store.checkpoints.list("m")] == [1, 2, 3]
    assert store.checkpoints.latest_version("m") == 3
    assert site.store().checkpoints.info("m", 2).version == 2
    with pytest.raises(VersionNotFoundError):
        store.checkpoints.load_bytes("m", 9)
    with pytest.raises(NotFoundError, match="no checkpoints"):
        store.checkpoints.load_bytes("other")
    with pytest.raises(InvalidDataError):
        store.checkpoints.load_bytes("m", 0)


@case("checkpoints")
def directory_round_trip(site: Site) -> None:
    store = site.store()
    src = site.scratch / "src"
    digest = w.make_source_dir(src, "d", files=7, size=200_000)
    info = store.checkpoints.save_directory("m", src, {"step": 10})
    assert info.kind == "directory" and "empty" in info.dirs
    assert {f.path for f in info.files} >= {"f0.bin", "sub/f1.bin", "sub/deeper/.metadata.json"}
    out = site.scratch / "out"
    site.store().checkpoints.load_directory("m", out)
    assert w.tree_hash(out) == digest
    with pytest.raises(InvalidDataError, match="directory checkpoint"):
        store.checkpoints.load_bytes("m")
    with pytest.raises(InvalidDataError, match="not an empty directory"):
        store.checkpoints.load_directory("m", out)
    # The in-store directory is verified and can be handed out as is.
    assert w.tree_hash(store.checkpoints.path("m")) == digest
    assert store.checkpoints.verify("m").version == 1


@case("checkpoints")
def bytes_checkpoint_loads_into_a_directory(site: Site) -> None:
    store = site.store()
    store.checkpoints.save("m", b"abc")
    (site.scratch / "empty").mkdir()
    store.checkpoints.load_directory("m", site.scratch / "empty")
    assert (site.scratch / "empty" / "checkpoint.bin").read_bytes() == b"abc"


@case("checkpoints")
def bad_metadata_is_refused_before_writing(site: Site) -> None:
    store = site.store()
    for metadata in ({"x": object()}, {1: "a"}, {"b": b"bytes"}, {"s": {1, 2}},
                     {"$float": "NaN"}, "not a dict"):  # fmt: skip
        with pytest.raises(InvalidDataError):
            store.checkpoints.save("m", b"x", metadata)  # type: ignore[arg-type]
        assert store.checkpoints.latest_version("m") is None, metadata
    assert store.checkpoints.list("m") == []


@case("checkpoints")
def bad_names_and_data(site: Site) -> None:
    store = site.store()
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(InvalidNameError):
            store.checkpoints.save(bad, b"x")
    with pytest.raises(InvalidDataError, match="must be bytes"):
        store.checkpoints.save("m", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError, match="does not exist"):
        store.checkpoints.save_directory("m", site.scratch / "nope")
    src = site.scratch / "src"
    src.mkdir()
    (src / ".efsray-tmp.x").write_bytes(b"")
    with pytest.raises(InvalidNameError, match="reserved"):
        store.checkpoints.save_directory("m", src)
    with pytest.raises(InvalidDataError, match="more than"):
        store.checkpoints.save("m", b"x", {"big": "x" * (2 << 20)})
    assert store.checkpoints.latest_version("m") is None


@case("checkpoints")
def aliases_move_atomically_and_conditionally(site: Site) -> None:
    c = site.store().checkpoints
    for i in range(3):
        c.save("m", bytes([i]))
    assert c.set_alias("m", "production", 1) is None
    assert c.set_alias("m", "best", 2) is None
    assert c.set_alias("m", "production", 3, expect=1) == 1
    with pytest.raises(CommitConflictError, match="points at 3, not 1"):
        c.set_alias("m", "production", 2, expect=1)
    assert c.aliases("m") == {"production": 3, "best": 2}
    assert site.store().checkpoints.aliases("m") == {"production": 3, "best": 2}
    assert c.load_bytes("m", alias="best")[0] == bytes([1])
    assert c.info("m", 3).aliases == ("production",)
    assert c.remove_alias("m", "best") == 2
    with pytest.raises(NotFoundError, match="no alias 'best'"):
        c.load_bytes("m", alias="best")
    with pytest.raises(VersionNotFoundError):
        c.set_alias("m", "x", 42)
    with pytest.raises(InvalidNameError):
        c.set_alias("m", "../x", 1)


def _set_alias(root: str, alias: str, version: int) -> None:
    for _ in range(20):
        Store(root, create=False).checkpoints.set_alias("m", alias, version)


@case("checkpoints", needs=("processes",))
def concurrent_alias_moves_keep_both_changes(site: Site) -> None:
    """Two processes move different aliases at once: neither move is lost (a single JSON
    file rewritten by both would lose one); of moves of the same alias the later wins."""
    c = site.store().checkpoints
    for i in range(4):
        c.save("m", bytes([i]))
    ctx = w.fork_context()
    procs = []
    for alias, version in (("a", 2), ("b", 3), ("c", 4), ("d", 1)):
        p = ctx.Process(target=_set_alias, args=(str(site.root), alias, version))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert c.aliases("m") == {"a": 2, "b": 3, "c": 4, "d": 1}


@case("checkpoints")
def prune_keeps_latest_aliased_keep_last_and_best(site: Site) -> None:
    c = site.store().checkpoints
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
    fresh = site.store().checkpoints
    assert [i.version for i in fresh.list("m")] == [1, 2, 5, 7, 8]
    assert result.files == 6 and result.bytes == 3  # 3 manifests and 3 one-byte data files
    for v in (1, 2, 5, 7, 8):
        assert fresh.load_bytes("m", v)[0] == bytes([v - 1])
    with pytest.raises(VersionNotFoundError):
        fresh.load_bytes("m", 3)


@case("checkpoints")
def prune_respects_the_grace_period(site: Site) -> None:
    c = site.store().checkpoints
    for i in range(5):
        c.save("m", bytes([i]))
    result = c.prune("m", policy=RetentionPolicy(keep_last=1))
    assert result.removed == ()  # all were superseded just now: a reader may be reading them
    assert set(result.reasons.values()) >= {"latest", "within the grace period"}
    assert c.prune("m", policy=RetentionPolicy(keep_last=1), grace=0).removed == (1, 2, 3, 4)
    assert [i.version for i in site.store().checkpoints.list("m")] == [5]


@case("checkpoints")
def stored_policy_is_used_by_cleanup(site: Site) -> None:
    store = site.store()
    c = store.checkpoints
    for i in range(6):
        c.save("m", bytes([i]))
    c.set_retention("m", RetentionPolicy(keep_last=3))
    c.set_alias("m", "production", 2)  # setting an alias keeps the policy
    assert c.retention("m") == RetentionPolicy(keep_last=3)
    report = store.cleanup(days=0, now=time.time() + 2 * HOUR)
    assert [i.version for i in site.store().checkpoints.list("m")] == [2, 4, 5, 6]
    assert report.areas["checkpoints"].files == 4  # 2 manifests + 2 data files
