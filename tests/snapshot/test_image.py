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


@pytest.mark.parametrize("shard_size, part_body", [(1000, 100), (4096, 4096), (1 << 20, 50), (7, 3)])
def test_round_trip_through_tiny_shards_and_parts(shard_size, part_body):
    src = _db()
    img = image.capture(src)
    built = image.build(img, shard_size=shard_size, level=1, parallelism=3)
    assert built.image_size == len(img) and built.image_sha256 == hashlib.sha256(img).digest()
    assert len(built.shards) == -(-len(img) // shard_size)
    for sh in built.shards:
        assert all(0 < len(p) <= part_body for p in sh.cut(part_body))
    back = image.assemble(_frames(built, part_body), image_size=len(img), image_sha256=built.image_sha256)
    assert back == img
    conn = image.load(back)
    assert sorted(conn.execute("SELECT * FROM users")) == sorted(src.execute("SELECT * FROM users"))
    conn.execute("INSERT INTO users VALUES (100000, 'writable', 0)")  # a restored database is writable


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=5000), shard=st.integers(1, 2000), part=st.integers(1, 500))
def test_any_bytes_round_trip(data, shard, part):
    built = image.build(data, shard_size=shard, level=1, parallelism=2)
    assert image.assemble(_frames(built, part), image_size=len(data), image_sha256=built.image_sha256) == data


def test_empty_database_image():
    conn = sqlite3.connect(":memory:")
    img = image.capture(conn)
    assert img == b""
    built = image.build(img, shard_size=100)
    assert built.shards == [] and built.image_sha256 == hashlib.sha256(b"").digest()
    assert image.load(image.assemble([], image_size=0, image_sha256=built.image_sha256)).execute(
        "SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_damage_is_named_by_shard_and_digest():
    img = image.capture(_db())
    built = image.build(img, shard_size=2048)
    frames = _frames(built, 10**6)
    with pytest.raises(RestoreError, match="shard 1 does not decompress"):
        bad = list(frames)
        bad[1] = (b"\x00" + bad[1][0][1:], bad[1][1], bad[1][2])
        image.assemble(bad, image_size=len(img), image_sha256=built.image_sha256)
    with pytest.raises(RestoreError, match="shard 2: SHA-256"):
        bad = list(frames)
        bad[2] = (bad[2][0], bad[2][1], bytes(32))
        image.assemble(bad, image_size=len(img), image_sha256=built.image_sha256)
    with pytest.raises(RestoreError, match="state digest mismatch"):
        image.assemble(frames, image_size=len(img), image_sha256=bytes(32))
    swapped = [frames[1], frames[0], *frames[2:]]
    with pytest.raises(RestoreError):
        image.assemble(swapped, image_size=len(img), image_sha256=built.image_sha256)


def test_not_a_database():
    with pytest.raises(RestoreError, match="not a SQLite database"):
        image.load(os.urandom(4096)).execute("SELECT * FROM sqlite_master")


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError):
        image.build(b"abc", shard_size=0)
    built = image.build(b"abc" * 100, shard_size=100)
    with pytest.raises(ConfigError):
        built.shards[0].cut(0)
