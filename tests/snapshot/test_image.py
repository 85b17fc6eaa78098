"""SQLite image ↔ shards ↔ parts, with tiny sizes so every boundary is crossed."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot import image
from snapshot.errors import ConfigError, RestoreError


def _db(n=300):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, clicks INTEGER)")
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(i, f"имя {i}", i * 7) for i in range(n)])
    conn.commit()
    return conn


def _frames(built, part_body):
    return [(b"".join(bytes(p) for p in sh.cut(part_body)), sh.raw_size, sh.sha256) for sh in built.shards]


def _parts(built, part_body):
    """Frames as restore hands them over: the list of part bodies of each shard."""
    return [([bytes(p) for p in sh.cut(part_body)], sh.raw_size, sh.sha256) for sh in built.shards]


@pytest.mark.parametrize("digest", image.DIGESTS)
@pytest.mark.parametrize("shard_size, part_body", [(1000, 100), (4096, 4096), (1 << 20, 50), (7, 3)])
def test_round_trip_through_tiny_shards_and_parts(shard_size, part_body, digest):
    src = _db()
    img = image.capture(src)
    built = image.build(img, shard_size=shard_size, level=1, parallelism=3, digest=digest)
    want = hashlib.sha256(img).digest() if digest == image.DIGEST_IMAGE else hashlib.sha256(
        b"".join(hashlib.sha256(img[i:i + shard_size]).digest() for i in range(0, len(img), shard_size))).digest()
    assert built.image_size == len(img) and built.image_sha256 == want and built.digest == digest
    assert len(built.shards) == -(-len(img) // shard_size)
    for sh in built.shards:
        assert all(0 < len(p) <= part_body for p in sh.cut(part_body))
    for frames in (_frames(built, part_body), _parts(built, part_body)):
        back = image.assemble(frames, image_size=len(img), image_sha256=built.image_sha256, digest=digest)
        assert back == img
    conn = image.load(back)
    assert sorted(conn.execute("SELECT * FROM users")) == sorted(src.execute("SELECT * FROM users"))
    conn.execute("INSERT INTO users VALUES (100000, 'writable', 0)")  # a restored database is writable


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=5000), shard=st.integers(1, 2000), part=st.integers(1, 500),
       digest=st.sampled_from(image.DIGESTS))
def test_any_bytes_round_trip(data, shard, part, digest):
    built = image.build(data, shard_size=shard, level=1, parallelism=2, digest=digest)
    assert image.assemble(_parts(built, part), image_size=len(data), image_sha256=built.image_sha256,
                          digest=digest) == data
    with pytest.raises(RestoreError, match="state digest mismatch"):  # the digest's kind is not guessed
        image.assemble(_parts(built, part), image_size=len(data), image_sha256=built.image_sha256,
                       digest=3 - digest)


def test_empty_database_image():
    conn = sqlite3.connect(":memory:")
    img = image.capture(conn)
    assert img == b""
    for digest in image.DIGESTS:  # both digests of the empty image are SHA-256 of no bytes
        built = image.build(img, shard_size=100, digest=digest)
        assert built.shards == [] and built.image_sha256 == hashlib.sha256(b"").digest()
        assert image.load(image.assemble([], image_size=0, image_sha256=built.image_sha256, digest=digest)
                          ).execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


@pytest.mark.parametrize("digest", image.DIGESTS)
def test_damage_is_named_by_shard_and_digest(digest):
    img = image.capture(_db())
    built = image.build(img, shard_size=2048, digest=digest)
    frames = _frames(built, 10**6)

    def check(bad, match):
        with pytest.raises(RestoreError, match=match):
            image.assemble(bad, image_size=len(img), image_sha256=built.image_sha256, digest=digest)

    def with_frame(i, frame):
        bad = list(frames)
        bad[i] = (frame, bad[i][1], bad[i][2])
        return bad

    check(with_frame(1, b"\x00" + frames[1][0][1:]), "shard 1 does not decompress")
    bad = list(frames)
    bad[2] = (bad[2][0], bad[2][1], bytes(32))
    check(bad, "shard 2: SHA-256")
    check(with_frame(0, frames[0][0][:-4]), "shard 0")  # truncated frame
    check(with_frame(0, frames[0][0] + b"junk"), "shard 0 does not decompress")  # trailing garbage
    check(with_frame(0, frames[0][0] + frames[0][0]), "shard 0 is more than")  # a second frame after it
    other = image.build(img[:1000], shard_size=2048).shards[0].compressed
    check(with_frame(0, other), "shard 0: its zstd frame says 1000 bytes")
    with pytest.raises(RestoreError, match="state digest mismatch"):
        image.assemble(frames, image_size=len(img), image_sha256=bytes(32), digest=digest)
    with pytest.raises(RestoreError, match="raw sizes"):
        image.assemble(frames, image_size=len(img) + 1, image_sha256=built.image_sha256, digest=digest)
    swapped = [frames[1], frames[0], *frames[2:]]
    check(swapped, "SHA-256")
    if digest == image.DIGEST_SHARDS:
        # shards and their digests swapped together still fail: the state digest fixes their order
        swapped = [(frames[1][0], frames[1][1], frames[1][2]), (frames[0][0], frames[0][1], frames[0][2]),
                   *frames[2:]]
        check(swapped, "state digest mismatch")


def test_not_a_database():
    with pytest.raises(RestoreError, match="not a SQLite database"):
        image.load(os.urandom(4096)).execute("SELECT * FROM sqlite_master")


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError):
        image.build(b"abc", shard_size=0)
    built = image.build(b"abc" * 100, shard_size=100)
    with pytest.raises(ConfigError):
        built.shards[0].cut(0)
