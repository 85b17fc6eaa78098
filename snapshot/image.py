"""A whole SQLite image as shards and parts, and back (see docs/formats.md, "Snapshot").

The image (`conn.serialize()`, or core's scratch copy) is cut into shards of `shard_size` raw bytes; each
shard is zstd-compressed on its own, in parallel threads (zstandard and hashlib release the GIL), and its
compressed frame is cut into part bodies small enough that a part *document* stays within the part size
limit. Every shard's raw bytes are hashed (SHA-256); the **state digest** restore checks is, for
snapshots written now (digest 2), the SHA-256 of those shard digests in index order, so no thread has to
hash the whole image in one serial pass; snapshots of digest 1 (SHA-256 of the whole image) still
restore. No per-row Python work happens here.

Restore decompresses every shard straight into its place in one preallocated buffer (no per-shard
`bytes`, no join), in parallel, and hashes it there.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from snapshot.errors import ConfigError, RestoreError

#: state digest 1: SHA-256 of the whole image (written before manifest format 4; read).
DIGEST_IMAGE = 1
#: state digest 2: SHA-256 of the concatenated 32-byte SHA-256 digests of the raw shards, in index order
#: (what writers write; an empty image has no shards, so both digests of it are SHA-256 of no bytes).
DIGEST_SHARDS = 2
DIGESTS = (DIGEST_IMAGE, DIGEST_SHARDS)


def shards_digest(shard_sha256s: Sequence[bytes]) -> bytes:
    """The digest-2 state digest of an image whose raw shards have these SHA-256 digests."""
    return hashlib.sha256(b"".join(shard_sha256s)).digest()


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
    #: the state digest (of kind `digest`).
    image_sha256: bytes
    shards: list[Shard]
    digest: int = DIGEST_SHARDS

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


#: how much nicer than the process the threads compressing a snapshot run (Linux: per thread).
BACKGROUND_NICE = 10


def _background_thread() -> None:
    """Lower the calling thread's CPU priority (an initializer of the compressing pool).

    A snapshot's compression is background work that keeps every core busy for seconds at 10 M users;
    on a machine with as many runnable threads as cores the event-loop thread would wait its turn behind
    them (a stall measured as the loop's lateness). Nicer threads yield the CPU to the loop whenever it
    is runnable and take whatever is left otherwise. Only raising niceness is asked for, which needs no
    privilege; where the platform has no per-thread priority, nothing changes.
    """
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))


def _compress(index: int, raw: memoryview, level: int) -> Shard:
    frame = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)
    return Shard(index, len(raw), hashlib.sha256(raw).digest(), frame)


def build(image: bytes | memoryview, *, shard_size: int, level: int = 3, parallelism: int = 4,
          executor: Executor | None = None, digest: int = DIGEST_SHARDS) -> Built:
    """Shard, compress and hash `image` in parallel; the state digest of kind `digest` (2 unless a test
    writes old storage: 1 hashes the whole image once more, in one thread)."""
    if shard_size <= 0:
        raise ConfigError("shard_size must be positive")
    if digest not in DIGESTS:
        raise ConfigError(f"unknown state digest {digest}")
    mv = memoryview(image)
    spans = [mv[i:i + shard_size] for i in range(0, len(mv), shard_size)]
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(spans) + 1)),
                                          thread_name_prefix="tgsnap-compress", initializer=_background_thread)
    try:
        whole = pool.submit(lambda: hashlib.sha256(mv).digest()) if digest == DIGEST_IMAGE else None
        futures = [pool.submit(_compress, i, raw, level) for i, raw in enumerate(spans)]
        shards = [f.result() for f in futures]
        state = whole.result() if whole is not None else shards_digest([s.sha256 for s in shards])
    finally:
        if own:
            pool.shutdown(wait=True)
    return Built(len(image), state, shards, digest)


Frame = bytes | memoryview | Sequence[bytes | memoryview]


def _buffer(size: int) -> mmap.mmap:
    """A writable anonymous mapping of `size` bytes, its pages faulted in up front where Linux can
    (MAP_POPULATE: one pass in the kernel, measured 25 % cheaper than the decompressing threads faulting
    4 KiB pages one at a time, and far cheaper than zero-filling a `bytearray` in Python)."""
    populate = getattr(mmap, "MAP_POPULATE", 0)
    if populate:
        with contextlib.suppress(OSError, ValueError):
            return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    return mmap.mmap(-1, size)


def _inflate_into(index: int, frame: Frame, dest: memoryview, sha256: bytes) -> None:
    """Decompress shard `index` (one zstd frame, or the part bodies it was cut into) into `dest`, which is
    exactly its raw size, and check it against the SHA-256 the manifest lists."""
    n = len(dest)
    if not isinstance(frame, bytes | memoryview):
        frame = frame[0] if len(frame) == 1 else b"".join(frame)  # a shard of several parts (rare)
    try:
        said = zstandard.frame_content_size(frame)
        if said != n:
            raise RestoreError(f"snapshot shard {index}: its zstd frame says {said} bytes, the manifest "
                               f"says {n}")
        # read_across_frames: anything after the frame is read as another frame, so trailing bytes are
        # an error or extra output below, never silently ignored.
        reader = zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=True)
        got = 0
        while got < n:
            k = reader.readinto(dest[got:])
            if not k:
                break
            got += k
        extra = reader.read(1) if got == n else b""
    except zstandard.ZstdError as e:
        raise RestoreError(f"snapshot shard {index} does not decompress ({e})") from None
    if got != n or extra:
        raise RestoreError(f"snapshot shard {index} is {'more than ' if extra else ''}{got} bytes after "
                           f"decompression, the manifest says {n}")
    if hashlib.sha256(dest).digest() != sha256:
        raise RestoreError(f"snapshot shard {index}: SHA-256 of the decompressed shard does not match "
                           "the manifest")


def inflate_shard(index: int, frame: Frame, raw_size: int, sha256: bytes) -> bytes:
    """One shard's zstd frame decompressed and checked against its size and SHA-256 (verify)."""
    out = bytearray(raw_size)
    _inflate_into(index, frame, memoryview(out), sha256)
    return bytes(out)


def assemble(frames: Sequence[tuple[Frame, int, bytes]], *, image_size: int, image_sha256: bytes,
             digest: int = DIGEST_IMAGE, parallelism: int = 4, executor: Executor | None = None) -> memoryview:
    """Decompress shards `(frame, raw_size, sha256)` in parallel into one buffer, verify each shard and the
    state digest (of kind `digest`, as the manifest says); the image.

    `frame` is the shard's zstd frame or the list of its part bodies in order. Every shard lands at its
    offset in a buffer of `image_size` bytes allocated once; the caller loads that buffer as it is. The
    buffer is an anonymous mapping (`_buffer`), not a `bytearray`, which is zero-filled by Python in the
    calling thread first (165 ms at 10 M users). It is unmapped once the returned view is garbage.
    """
    if digest not in DIGESTS:
        raise RestoreError(f"unknown state digest {digest}")
    total = sum(n for _f, n, _h in frames)
    if total != image_size:
        raise RestoreError(f"rebuilt image is {total} bytes (the shards' raw sizes), the manifest says "
                           f"{image_size}")
    mv = memoryview(_buffer(image_size)) if image_size else memoryview(b"")
    spans, off = [], 0
    for _f, n, _h in frames:
        spans.append(mv[off:off + n])
        off += n
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, parallelism))
    futures: list = []
    try:
        futures = [pool.submit(_inflate_into, i, f, spans[i], h) for i, (f, _n, h) in enumerate(frames)]
        if digest == DIGEST_IMAGE:
            # The whole-image hash is one serial pass: run it here, shard by shard as each one lands,
            # while the pool decompresses the later ones.
            whole = hashlib.sha256()
            for f, span in zip(futures, spans, strict=True):
                f.result()
                whole.update(span)
            state = whole.digest()
        else:
            for f in futures:
                f.result()
            state = shards_digest([h for _f, _n, h in frames])
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        if own:
            pool.shutdown(wait=True)
    if state != image_sha256:
        raise RestoreError("state digest mismatch: the rebuilt image's digest "
                           f"({'SHA-256 of the image' if digest == DIGEST_IMAGE else 'SHA-256 of its shards'}"
                           ") differs from the manifest's")
    for span in spans:
        span.release()
    return mv


def connect() -> sqlite3.Connection:
    """The in-memory connection restore hands back (usable from any thread the caller serialises).

    A memdb-VFS database (private: the name has no leading "/"), as `deserialize()` makes, even when
    nothing is deserialized into it: SQLite's online backup of a plain ":memory:" database restarts at
    every commit (its pager is in-memory mode), so a copy made in steps beside live writes (core's
    snapshot copy) would never finish; a memdb database's commits update the copy instead.
    """
    return sqlite3.connect("file:tgsnap-live?vfs=memdb", uri=True, check_same_thread=False)


def load(image: bytes | bytearray | memoryview, conn: sqlite3.Connection | None = None) -> sqlite3.Connection:
    """Replace `conn`'s main database (a new in-memory one if None) with `image`."""
    conn = conn or connect()
    if image:
        try:
            conn.deserialize(image)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header page only
        except sqlite3.Error as e:
            raise RestoreError(f"the snapshot image is not a SQLite database SQLite accepts: {e}") from None
    return conn
