"""Ray Train interop: a stored version as a ``ray.train.Checkpoint`` and back.

Needs no running Ray: ``Checkpoint`` is a directory handle. Skips if Ray Train is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from efsray.store import Store
from tests.store import _ckpt_workers as w

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def checkpoint_cls():
    try:
        from ray.train import Checkpoint
    except ImportError as exc:
        pytest.skip(f"Ray Train is not installed ({exc}); pip install 'efsray[ray]'")
    return Checkpoint


def test_stored_version_as_ray_checkpoint(checkpoint_cls, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    digest = w.make_source_dir(tmp_path / "src", "r")
    info = store.checkpoints.save_directory("policy", tmp_path / "src", {"iteration": 7})

    ckpt = store.checkpoints.to_ray("policy")  # zero copy: the verified store directory
    assert isinstance(ckpt, checkpoint_cls) and Path(ckpt.path) == Path(info.directory)
    with ckpt.as_directory() as local:
        assert w.tree_hash(Path(local)) == digest

    copied = store.checkpoints.to_ray("policy", copy_to=tmp_path / "copy")
    assert Path(copied.path) == tmp_path / "copy"
    assert w.tree_hash(tmp_path / "copy") == digest


def test_ray_checkpoint_saved_into_the_store(checkpoint_cls, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "ray_ckpt"
    src.mkdir()
    (src / "model.pt").write_bytes(w.payload("weights", 100_000))
    ckpt = checkpoint_cls.from_directory(str(src))
    ckpt.set_metadata({"epoch": 3})  # Ray keeps it in a hidden file inside the directory
    info = store.checkpoints.save_ray("policy", ckpt, {"epoch": 3})
    assert info.version == 1 and "model.pt" in {f.path for f in info.files}
    out = tmp_path / "restored"
    store.checkpoints.load_directory("policy", out)
    assert w.tree_hash(out) == w.tree_hash(src)
    restored = checkpoint_cls.from_directory(str(out))
    assert restored.get_metadata() == {"epoch": 3}
    # A path works too.
    assert store.checkpoints.save_ray("policy", str(src)).version == 2
