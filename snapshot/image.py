"""A whole SQLite image as shards and parts, and back (see docs/formats.md, "Snapshot").

The image (`conn.serialize()`) is cut into shards of `shard_size` raw bytes; each shard is zstd-compressed
on its own, in parallel threads (zstandard releases the GIL), and its compressed frame is cut into part
bodies small enough that a part *document* stays within the part size limit. SHA-256 of the whole image
is the state digest restore checks. No per-row Python work happens here.
"""

from __future__ import annotations

import hashlib
import sqlite3
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from snapshot.errors import ConfigError, RestoreError


@dataclass
class Shard:
    index: int
    raw_size: int
    #: SHA-256 of the raw (uncompressed) shard bytes.
    sha256: bytes
    #: the zstd frame.
    compressed: bytes

    def cut(self, part_body_size: int) -> list[memoryview]:
        """The compressed frame as consecutive part bodies of at most `part_body_size` bytes."""
        if part_body_size <= 0:
            raise ConfigError("part size leaves no room for a payload after the envelope")
        mv = memoryview(self.compressed)
        return [mv[i:i + part_body_size] for i in range(0, max(len(mv), 1), part_body_size)]


@dataclass
class Built:
    image_size: int
    image_sha256: bytes
    shards: list[Shard]

    @property
    def compressed_size(self) -> int:
        return sum(len(s.compressed) for s in self.shards)


def capture(conn: sqlite3.Connection) -> bytes:
    """The consistent image of `conn`'s main database (call between transactions)."""
    try:
        return conn.serialize()
    except sqlite3.OperationalError:
        # SQLite cannot serialize a database that has no pages yet; its image is empty.
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            return b""
        raise


def _compress(index: int, raw: memoryview, level: int) -> Shard:
    frame = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    return Shard(index, len(raw), hashlib.sha256(raw).digest(), frame)


def build(image: bytes, *, shard_size: int, level: int = 3, parallelism: int = 4,
          executor: Executor | None = None) -> Built:
    """Shard and compress `image` in parallel; hash every shard and the whole image."""
    if shard_size <= 0:
        raise ConfigError("shard_size must be positive")
    mv = memoryview(image)
    spans = [mv[i:i + shard_size] for i in range(0, len(mv), shard_size)]
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(spans) + 1)))
    try:
        whole = pool.submit(lambda: hashlib.sha256(mv).digest())
        futures = [pool.submit(_compress, i, raw, level) for i, raw in enumerate(spans)]
        shards = [f.result() for f in futures]
        digest = whole.result()
    finally:
        if own:
            pool.shutdown(wait=True)
    return Built(len(image), digest, shards)


def inflate_shard(index: int, frame: bytes, raw_size: int, sha256: bytes) -> bytes:
    """One shard's zstd frame decompressed and checked against its size and SHA-256 (restore, verify)."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=raw_size)
    except zstandard.ZstdError as e:
        raise RestoreError(f"snapshot shard {index} does not decompress ({e})") from None
    if len(raw) != raw_size:
        raise RestoreError(f"snapshot shard {index} is {len(raw)} bytes after decompression, the manifest "
                           f"says {raw_size}")
    if hashlib.sha256(raw).digest() != sha256:
        raise RestoreError(f"snapshot shard {index}: SHA-256 of the decompressed shard does not match "
                           "the manifest")
    return raw


def assemble(frames: list[tuple[bytes, int, bytes]], *, image_size: int, image_sha256: bytes,
             parallelism: int = 4, executor: Executor | None = None) -> bytes:
    """Decompress shards `(frame, raw_size, sha256)` in parallel, verify each and the state digest."""
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, parallelism))
    try:
        futures = [pool.submit(inflate_shard, i, f, n, h) for i, (f, n, h) in enumerate(frames)]
        raws = [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown(wait=True)
    image = b"".join(raws)
    if len(image) != image_size:
        raise RestoreError(f"rebuilt image is {len(image)} bytes, the manifest says {image_size}")
    if hashlib.sha256(image).digest() != image_sha256:
        raise RestoreError("state digest mismatch: the rebuilt image's SHA-256 differs from the manifest's")
    return image


def connect() -> sqlite3.Connection:
    """The in-memory connection restore hands back (usable from any thread the caller serialises).

    A memdb-VFS database (private: the name has no leading "/"), as `deserialize()` makes, even when
    nothing is deserialized into it: SQLite's online backup of a plain ":memory:" database restarts at
    every commit (its pager is in-memory mode), so a copy made in steps beside live writes (core's
    snapshot copy) would never finish; a memdb database's commits update the copy instead.
    """
    return sqlite3.connect("file:tgsnap-live?vfs=memdb", uri=True, check_same_thread=False)


def load(image: bytes, conn: sqlite3.Connection | None = None) -> sqlite3.Connection:
    """Replace `conn`'s main database (a new in-memory one if None) with `image`."""
    conn = conn or connect()
    if image:
        try:
            conn.deserialize(image)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header page only
        except sqlite3.Error as e:
            raise RestoreError(f"the snapshot image is not a SQLite database SQLite accepts: {e}") from None
    return conn
