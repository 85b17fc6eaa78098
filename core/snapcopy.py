"""A snapshot image prepared off the event loop: an online-backup copy brought forward by deltas.

Why: `conn.serialize()` of the live database inside the synchronous cut stops the event loop for the
whole copy (hundreds of milliseconds at 10 M users). Instead:

1. **Copy.** A worker thread copies the live database into a scratch database file with SQLite's online
   backup API, `pages` pages per step. Each step holds the live connection's mutex (SQLite's serialized
   threading mode) and releases the GIL, and the thread pauses after each step with the mutex free (a
   waiter would otherwise lose it to the next step), so the event loop waits at most one step. Writes the loop makes
   through the *same* connection between steps are applied to the copy as they happen (sqlite.org/
   backup.html; checked for tgsnap's memdb live database by tests/core/test_snapcopy.py). A step while
   the live connection holds a write transaction (`store.transaction()` spanning awaits, a statement
   not yet reset) returns SQLITE_BUSY and is retried after `sleep`: the copy never sees uncommitted
   pages. So when the copy completes (time Tc) it equals the live state at Tc: not a cut.
2. **Catch up.** Every change set captured after the copy began (c1, c2, ...; the cut just before it
   is c0) is applied to the copy once it is complete (worker thread, `snapshot.apply`), in capture
   order, whether or not its upload succeeds. After applying c1..ck, where ck was captured after Tc,
   the copy equals the live state at ck's cut: a row in some ci holds its image at the last such ci's
   cut, and it did not change after that cut (a change marks it, and a later capture up to ck, or the
   re-capture of a failed one, carries it); a row in none did not change between c0's cut and ck's, so
   its value at Tc is right. (Only captures after Tc could miss writes made between the last step and
   the loop noticing the end, which is why the earlier ones are applied too: a property test found it.)
   Full row images and deletes are idempotent, so an older image applied first is overwritten later.
   Once such a ck is durable with seq S, the copy equals the state after delta S exactly: it becomes the
   image (`base_seq = S`, `captured_at` = that cut). An empty ck means live == copy == the durable state.
3. **Restart.** Schema statements are not idempotent: a statement that ran while the copy was made is
   already in the copy and would be replayed again by the delta that carries it. So a change set that
   carries schema statements, or a schema cookie that moved while copying (DDL, VACUUM), abandons the
   copy; the flusher starts again (and after a few restarts falls back to the synchronous image).

Memory: the scratch is a temporary file in the temporary directory (`TMPDIR`), as large as the
database; the image is that file mapped read-only, so the transient extra copy lives in the OS page
cache (file-backed, reclaimable) instead of the process heap that `serialize()` used.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable

from snapshot.apply import apply_changes
from snapshot.changes import ChangeSet

log = logging.getLogger("tgsnap.core")

#: pages per backup step: a step copies pages * page_size bytes (1 MiB at 4 KiB pages) while holding the
#: live connection's mutex; the event loop waits at most one step.
STEP_PAGES = 256
#: how long a step waits before retrying when the live connection holds a write transaction.
BUSY_SLEEP = 0.002
#: the pause after each step, with the live connection's mutex free. Without it the copying thread takes
#: the mutex again microseconds after releasing it, before the event loop's thread, blocked on it in an
#: `execute`, has woken: measured at 10 M users, a click waited 33-77 ms across dozens of 2 ms steps (the
#: bench's 80-200 ms stalls); with 0.3 ms, at most 4 ms. It adds ~0.15 s to a 10 M copy, off the loop.
STEP_PAUSE = 0.0003


class CopyAbandoned(Exception):
    """The copy cannot become an exact image (a schema statement ran); start a new one."""


class ScratchCopy:
    """The scratch copy of one snapshot attempt. Its methods block: call them from a worker thread,
    one at a time (the flusher chains them)."""

    def __init__(self, live: sqlite3.Connection, directory: str | None = None):
        self._live = live
        fd, self.path = tempfile.mkstemp(prefix="tgsnap-snapshot-", suffix=".sqlite", dir=directory)
        os.close(fd)
        self._abort = threading.Event()
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, check_same_thread=False,
                                                                isolation_level=None)
        # A scratch: nothing to recover after a crash, so no journal and no fsync.
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute("PRAGMA synchronous = OFF")
        self.steps = 0
        #: called in the copying thread after each step (tests use it to write between steps).
        self.on_step: Callable[[int, int], None] | None = None

    def abort(self) -> None:
        """Make a running `copy` stop after its current step (thread-safe)."""
        self._abort.set()

    def copy(self, pages: int | None = None, sleep: float = BUSY_SLEEP) -> None:
        assert self._conn is not None
        pages = pages or STEP_PAGES
        limit: list[int] = []

        def progress(status: int, remaining: int, total: int) -> None:
            self.steps += 1
            if self._abort.is_set():
                raise CopyAbandoned("the copy was abandoned")
            # A source that restarts the backup at every commit (a plain ":memory:" database, not memdb)
            # would never finish under load: give up after far more steps than the size needs.
            if not limit:
                limit.append(0)
            limit[0] = max(limit[0], 4 * (total // max(pages, 1)) + 1000)
            if self.steps > limit[0]:
                raise CopyAbandoned(f"the backup restarted too often ({self.steps} steps for {total} pages)")
            if self.on_step is not None and remaining:
                self.on_step(remaining, total)
            if remaining:
                time.sleep(STEP_PAUSE)  # the mutex is free here: let a waiting writer have it

        self._live.backup(self._conn, pages=pages, progress=progress, sleep=sleep)

    def apply(self, changes: ChangeSet) -> None:
        assert self._conn is not None
        if changes.schema:
            raise CopyAbandoned("a change set with schema statements arrived while the copy was brought "
                                "forward (they may be in the copy already)")
        apply_changes(self._conn, changes, what="snapshot catch-up")

    def image(self) -> bytes | mmap.mmap:
        """The copy's database file as the image (the same bytes as `serialize()` would give).

        Mapped, not read: a `bytes`/`bytearray` of the whole image would be allocated and filled while
        holding the GIL (a stall of its own at 10 M users); the mapping is filled by page faults in the
        threads that hash and compress it, which release the GIL. The file is unlinked at `close`; the
        mapping keeps its pages until the image is garbage.
        """
        assert self._conn is not None
        self._conn.close()
        self._conn = None
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""  # an empty database (SQLite cannot serialize one either)
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)
