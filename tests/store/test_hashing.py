"""The streaming hash pipeline computes exactly the digest of the bytes, in order."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from efsray.store.hashing import (
    CHUNK_SIZE,
    available_algorithms,
    copy_fd,
    hash_buffer,
    hash_file,
    read_verified,
    write_buffer,
)

MIB = 1 << 20
# Around the chunk size and the inline/threaded threshold: a small last chunk after big ones
# is where an out-of-order hash would hide.
SIZES = [0, 1, 255 << 10, 256 << 10, MIB - 1, MIB, MIB + 1, 3 * MIB + 100, 5 * MIB + (200 << 10),
         CHUNK_SIZE * 7 + 12_345, 17 * MIB]  # fmt: skip


def _reference(data: bytes, algorithm: str) -> str:
    if algorithm == "sha256":
        return "sha256:" + hashlib.sha256(data).hexdigest()
    if algorithm == "xxh3-128":
        import xxhash

        return "xxh3-128:" + xxhash.xxh3_128(data).hexdigest()
    import blake3

    return "blake3:" + blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("algorithm", available_algorithms())
def test_every_path_agrees_with_a_one_shot_hash(tmp_path: Path, algorithm: str) -> None:
    for size in SIZES:
        data = os.urandom(size)
        expected = _reference(data, algorithm)
        for attempt in range(3):  # a race would show up as an occasional wrong digest
            src = tmp_path / f"src-{size}-{attempt}"
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            assert write_buffer(fd, data, algorithm) == expected, (size, "write_buffer")
            os.close(fd)
            assert src.read_bytes() == data
            dst = tmp_path / f"dst-{size}-{attempt}"
            s = os.open(src, os.O_RDONLY)
            d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            assert copy_fd(s, d, algorithm, size_hint=size) == (size, expected), (size, "copy")
            os.close(s)
            os.close(d)
            assert dst.read_bytes() == data
            assert hash_file(dst, algorithm) == (size, expected)
            assert read_verified(dst, size, expected, what="x") == data
            assert hash_buffer(data, algorithm) == expected
            src.unlink()
            dst.unlink()


def test_copy_with_a_wrong_size_hint(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 7)
    (tmp_path / "f").write_bytes(data)
    for hint in (0, 10, MIB, 10 * MIB):
        s = os.open(tmp_path / "f", os.O_RDONLY)
        size, digest = copy_fd(s, None, "sha256", size_hint=hint)
        os.close(s)
        assert (size, digest) == (len(data), _reference(data, "sha256"))
