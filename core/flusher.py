"""The flush loop: ships dirty rows as deltas, schedules snapshots, renews the lease, and wakes waiters.

One task. Every `flush_interval` (or at once when `flush()`/`snapshot()`/`close()` asks) it renews the
writer lease, and if anything is dirty captures a change set at a consistent cut and hands it to
`Replica.write_delta`. Captures are numbered; `flush()` waits for the capture that will contain its
caller's writes to become durable.

Failure is backpressure, not loss: on a storage error the keys of the captured change set are marked
dirty again at once, so the next capture re-reads their newest images (and the change set itself is
dropped: memory stays bounded by the live data). Retries back off exponentially, honouring
`retry_after`.

A snapshot image is prepared off the event loop (`core.snapcopy`): a worker thread copies the live
database with SQLite's online backup API in small steps (the loop waits at most one step), then every
change set captured after the copy completed is applied to the copy too; once one of those is durable
with seq S the copy equals the state after delta S exactly, and it is written in the background with
base_seq = S while deltas keep flowing. A schema statement during the copy restarts it; after a few
restarts, or if the copy fails, the next snapshot serializes the image inside the synchronous cut as
before (it then equals the state after that cut's delta; the loop stalls for the copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from core import snapcopy
from core.config import StoreConfig
from core.tracker import Tracker
from snapshot import image as image_mod
from snapshot.changes import ChangeSet
from snapshot.errors import BackendError, FencedError, OversizeRow, copy_error
from snapshot.replica import Replica, SnapshotReceipt

log = logging.getLogger("tgsnap.core")

#: how often to re-check when someone ran a raw BEGIN outside `store.transaction()`.
_RAW_TRANSACTION_POLL = 0.05


class Flusher:
    def __init__(
        self,
        conn: sqlite3.Connection,
        tracker: Tracker,
        replica: Replica,
        config: StoreConfig,
        tx_idle: asyncio.Event,
        on_fence: Callable[[FencedError], None],
    ):
        self._conn = conn
        self._tracker = tracker
        self._replica = replica
        self._config = config
        self._tx_idle = tx_idle  # set while no `store.transaction()` is open
        self._on_fence = on_fence

        # Capture numbering: flush() waits until a capture with number >= its target is durable.
        self._capture_no = 0
        self._durable_no = 0
        #: future -> the capture number it waits for (a dict: a waiter leaves in O(1); a bot under load
        #: holds two per update waiting to be confirmed, and leaving a list was O(waiters) each).
        self._waiters: dict[asyncio.Future[None], int] = {}

        self._in_flight: ChangeSet | None = None
        self._in_flight_no = 0
        self._in_flight_since: float | None = None

        #: unix time of the oldest write not yet captured (None when none); Store.execute sets it.
        self.dirty_since: float | None = None
        #: conn.total_changes right after the last capture; a different value means "maybe dirty".
        self.changes_mark = conn.total_changes

        self._snapshot_requests: list[asyncio.Future[SnapshotReceipt]] = []
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_retry_at = 0.0
        #: set when a cut held a row no delta can carry (OversizeRow): the next cut ships as a snapshot.
        self._oversize: str | None = None
        #: the snapshot being prepared off the loop (see `core.snapcopy`), or None.
        self._copy: _CopyJob | None = None
        self._copy_restarts = 0
        #: True: the next snapshot serializes inside the cut (the copy kept failing or restarting).
        self._sync_image = False

        self._wake = asyncio.Event()
        self._stopping = False
        self._next_tick = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._task: asyncio.Task[None] | None = None

        self.fenced: FencedError | None = None
        self.last_flush_at: float | None = None
        self.last_error: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_tick = loop.time() + self._config.flush_interval
        self._task = loop.create_task(self._run(), name="tgsnap-flush-loop")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, within: float | None) -> None:
        """Let the loop finish its current step, then wait (bounded) for a snapshot being written."""
        self._stopping = True
        self._wake.set()
        await self._drop_copy(keep_writing=True)
        tasks = [t for t in (self._task, self._snapshot_task) if t is not None and not t.done()]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=within)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._fail_waiters(None)

    async def abandon(self) -> None:
        """Stop at once, as a crash would: nothing more is shipped, nothing is released."""
        self._stopping = True
        await self._drop_copy(keep_writing=False)
        tasks = [t for t in (self._task, self._snapshot_task) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_waiters(None)

    # ---- what callers wait on --------------------------------------------------------------------

    async def flush(self, within: float | None) -> None:
        if self.fenced is not None:
            raise copy_error(self.fenced)
        target = self._flush_target()
        if target is None:
            return
        if not self.running:
            from core.errors import StoreClosed

            raise StoreClosed("the store is closed; its un-flushed rows can no longer be shipped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[fut] = target
        self._wake.set()
        try:
            async with asyncio.timeout(within):
                await fut
        except TimeoutError:
            raise TimeoutError(
                f"flush did not become durable within {within}s ({self.last_error or 'upload still running'});"
                f" the rows stay dirty and ship with a later delta"
            ) from None
        finally:
            self._waiters.pop(fut, None)

    # ---- durable confirmation (tickets) ----------------------------------------------------------

    def write_ticket(self) -> int:
        """The capture number that holds every write committed so far (0: nothing is pending).

        Cheap (no capture, no I/O): a bot takes one after each handler, before confirming its update.
        """
        target = self._flush_target()
        return 0 if target is None else target

    async def wait_durable(self, ticket: int, hurry: bool) -> None:
        """Until a capture numbered >= `ticket` is durable. Without `hurry` the loop keeps its own pace
        (the interval, the rate budget): a bot confirming updates late must not spend the budget early."""
        if ticket <= self._durable_no:
            return
        if self.fenced is not None:
            raise FencedError(str(self.fenced))
        if not self.running:
            from core.errors import StoreClosed

            raise StoreClosed("the store is closed; its un-flushed rows can no longer be shipped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[fut] = ticket
        if hurry:
            self._wake.set()
        try:
            await fut
        finally:
            self._waiters.pop(fut, None)

    def hurry(self) -> None:
        """Ship what is dirty as soon as the backoff and the backend's budget allow."""
        self._wake.set()

    def hurry_wait(self) -> float | None:
        """What a hurried flush would cost in rate budget: None when the backend has none (a local
        directory, memory: a flush costs only I/O), else the seconds until every budget a flush draws
        on has a free slot (0: at once). Backends carry their budget as `.budget` (Bot API, MTProto),
        a multi-channel one per lane (`.lanes`); the most conservative of them is reported, since a
        Bot API delta also edits the manifest in the first lane."""
        backend = self._replica.backend
        found = [getattr(backend, "budget", None)]
        found += [getattr(lane, "budget", None) for lane in getattr(backend, "lanes", ())]
        budgets = [b for b in found if b is not None]
        if not budgets:
            return None
        return max(b.next_slot_in() for b in budgets)

    async def snapshot(self, within: float | None) -> SnapshotReceipt:
        if self.fenced is not None:
            raise copy_error(self.fenced)
        if not self.running:
            from core.errors import StoreClosed

            raise StoreClosed("the store is closed")
        fut: asyncio.Future[SnapshotReceipt] = asyncio.get_running_loop().create_future()
        self._snapshot_requests.append(fut)
        self._wake.set()
        try:
            async with asyncio.timeout(within):
                return await fut
        finally:
            if fut in self._snapshot_requests:
                self._snapshot_requests.remove(fut)

    def _flush_target(self) -> int | None:
        if self.maybe_dirty():
            return self._capture_no + 1
        if self._in_flight is not None:
            return self._in_flight_no
        return None

    def maybe_dirty(self) -> bool:
        """True if a capture now could ship something (cheap: a look at the in-memory mark sets)."""
        if self._tracker.any_dirty():
            if self.dirty_since is None:  # written through something other than Store.execute
                self.dirty_since = time.time()
            return True
        if self.dirty_since is not None and not self._conn.in_transaction:
            self.dirty_since = None  # the writes touched no tracked row
            self.changes_mark = self._conn.total_changes
        return False

    # ---- observations for stats -----------------------------------------------------------------

    @property
    def in_flight_rows(self) -> int:
        return len(self._in_flight) if self._in_flight is not None else 0

    @property
    def snapshot_in_progress(self) -> bool:
        return self._snapshot_task is not None or self._copy is not None

    def oldest_unflushed(self) -> float | None:
        return _earliest(self.dirty_since, self._in_flight_since)

    # ---- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping and self.fenced is None:
            await self._sleep()
            if self._stopping or self.fenced is not None:
                break
            self._next_tick = loop.time() + self._config.flush_interval
            try:
                await self._renew()
                if loop.time() >= self._retry_at:
                    self._wake.clear()
                    await self._ship()
            except FencedError as exc:
                self.fence(exc)
            except Exception as exc:  # a bug must not silently end durability: log, back off, go on
                log.exception("tgsnap flush loop step failed; retrying")
                self._failed(exc)

    async def _sleep(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            now = loop.time()
            in_backoff = self._retry_at > now
            if self._wake.is_set() and not in_backoff:
                return
            due = min(self._next_tick, self._retry_at) if in_backoff else self._next_tick
            if now >= due:
                return
            if self._wake.is_set():
                await asyncio.sleep(due - now)  # asked to hurry, but storage told us to wait
            else:
                try:
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _renew(self) -> None:
        try:
            await self._replica.renew()
        except BackendError as exc:
            log.warning("tgsnap: could not renew the writer lease (%s); will retry", exc)
            self.last_error = f"lease renewal: {exc}"

    def _snapshot_wanted(self) -> bool:
        if self._snapshot_task is not None or self._copy is not None:
            return False
        if self._snapshot_requests:
            return True
        return time.monotonic() >= self._snapshot_retry_at and self._replica.snapshot_due()

    async def _ship(self) -> None:
        if self._oversize is not None or self._tracker.bypassed:
            await self._ship_as_snapshot()
            return
        want_snapshot = self._snapshot_wanted()
        if not (self.maybe_dirty() or want_snapshot or self._catching_up() is not None):
            return
        await self._outside_transaction()
        if self._snapshot_task is None and self._copy is None and self._tracker.schema_drifted():
            # A schema change that bypassed Store (a raw connection) is in no delta: only an image after
            # this cut makes it durable.
            want_snapshot = True
        if want_snapshot and not self._sync_image:
            # Off the loop: the copy starts after this cut, so this capture is not one it needs.
            want_snapshot = not self._begin_copy()
        # Every capture made while a copy is being made or brought forward goes to it (captures made
        # before it completed too: the rows they hold may have changed again before the copy ended, but
        # then they are marked and a later capture carries them). Only a capture made after the copy
        # completed can finish it: its cut is after the copy's instant.
        copy = self._copy if self._copy is not None and not self._copy.finishing else None
        final = copy is not None and copy.copied
        # ---- one synchronous step: the consistent cut ----
        if self._tracker.check_bypass():
            # A write no one marked (see Tracker.check_bypass): a delta would not carry it, and its
            # waiters must not be released by one. The next step ships this state as a snapshot.
            self._wake.set()
            return
        # The image first: capture() only writes TEMP tables, so the image equals the state after this
        # capture; and a failing serialize then leaves every mark in place. (The other order took the
        # marks and lost them when serialize raised, and a later capture satisfied their waiters.)
        image = image_mod.capture(self._conn) if want_snapshot else None
        if image is not None:
            self._sync_image, self._copy_restarts = False, 0  # the next snapshot tries the copy again
        changes = self._tracker.capture()
        requests = list(self._snapshot_requests) if (want_snapshot or final) else []
        self._capture_no += 1
        number = self._capture_no
        since = self.dirty_since
        self.dirty_since = None
        self.changes_mark = self._conn.total_changes
        # ---- end of the cut ----
        if changes.is_empty():
            self._became_durable(number)
            if image is not None:
                self._start_snapshot(image, self._replica.status().last_seq, changes.captured_at, requests)
            elif copy is not None and final:
                # Nothing changed since the last cut and nothing is in flight: live == copy == durable.
                copy.finish(self._replica.status().last_seq, changes.captured_at, requests)
            return
        if copy is not None:
            copy.feed(changes)  # applied even if its upload fails: the re-capture is a superset
        self._in_flight, self._in_flight_no, self._in_flight_since = changes, number, since
        if changes.version_changed:
            self._replica.schema_version = changes.user_version
        try:
            receipt = await self._replica.write_delta(changes)
        except FencedError:
            raise
        except OversizeRow as exc:
            # No delta can carry this cut: keep its keys dirty and ship the next cut as a snapshot at once
            # (its parts split at any byte), rather than retry a delta that can never succeed.
            self._tracker.remark(changes)
            self.dirty_since = _earliest(self.dirty_since, since)
            self._oversize = str(exc)
            self.last_error = f"OversizeRow: {exc}"
            log.warning("tgsnap: %s; shipping this cut as a snapshot instead", exc)
            self._wake.set()
            return
        except (Exception, asyncio.CancelledError) as exc:
            # Nothing advanced in storage: mark the keys dirty again; the next capture re-reads them.
            self._tracker.remark(changes)
            self.dirty_since = _earliest(self.dirty_since, since)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._failed(exc)
            return
        finally:
            self._in_flight = self._in_flight_since = None
        self._backoff = 0.0
        self.last_error = None
        self.last_flush_at = time.time()
        self._became_durable(number)
        if image is not None:
            self._start_snapshot(image, receipt.seq, changes.captured_at, requests)
        elif final and copy is not None and copy is self._copy:
            copy.finish(receipt.seq, changes.captured_at, requests)

    async def _ship_as_snapshot(self) -> None:
        """One cut made durable by a snapshot instead of a delta (a row over the document limit, or a write
        that bypassed the marks while the triggers were off, see Tracker.check_bypass): the
        image at the cut, based on the last durable delta, holds the rows no delta could. Deltas wait
        meanwhile, and this cut's waiters are released only once the snapshot is durable: a later
        delta does not hold this cut's rows, so its durability must not stand in for theirs. On
        failure the cut's keys are marked dirty again and the next step tries again."""
        # A copy being made off the loop would miss this cut's change set (it is shipped by no delta):
        # drop it; this snapshot supersedes it. One that is already an image is written first.
        await self._drop_copy(keep_writing=True)
        if self._snapshot_task is not None:
            await asyncio.wait([self._snapshot_task])  # one snapshot at a time (base seqs only grow)
        await self._outside_transaction()
        # ---- one synchronous step: the consistent cut (image first, as in _ship) ----
        image = image_mod.capture(self._conn)
        changes = self._tracker.capture()
        bypassed = self._tracker.take_bypass()  # the image holds whatever bypassed the marks
        requests = list(self._snapshot_requests)
        for fut in requests:
            self._snapshot_requests.remove(fut)
        self._capture_no += 1
        number = self._capture_no
        since = self.dirty_since
        self.dirty_since = None
        self.changes_mark = self._conn.total_changes
        # ---- end of the cut ----
        if changes.version_changed:
            self._replica.schema_version = changes.user_version
        self._in_flight, self._in_flight_no, self._in_flight_since = changes, number, since
        try:
            receipt = await self._replica.write_snapshot(image, self._replica.last_seq, changes.captured_at)
        except FencedError as exc:
            _settle(requests, exc)
            raise
        except (Exception, asyncio.CancelledError) as exc:
            self._tracker.remark(changes)
            self._tracker.bypassed |= bypassed
            self.dirty_since = _earliest(self.dirty_since, since)
            if isinstance(exc, asyncio.CancelledError):
                for fut in requests:
                    fut.cancel()
                raise
            _settle(requests, exc)
            self._failed(exc)
            return
        finally:
            self._in_flight = self._in_flight_since = None
        log.info("tgsnap: a cut too large for a delta is durable as a snapshot at seq %d (%d parts)",
                 receipt.base_seq, receipt.parts)
        self._oversize = None
        self._backoff = 0.0
        self.last_error = None
        self.last_flush_at = time.time()
        self._became_durable(number)
        for fut in requests:
            if not fut.done():
                fut.set_result(receipt)

    async def _outside_transaction(self) -> None:
        while self._conn.in_transaction:
            if self._tx_idle.is_set():
                await asyncio.sleep(_RAW_TRANSACTION_POLL)  # a raw BEGIN run through store.execute
            else:
                await self._tx_idle.wait()

    def _failed(self, exc: Exception) -> None:
        retry_after = exc.retry_after if isinstance(exc, BackendError) else None
        self._backoff = min(self._config.retry_max, max(self._config.retry_min, self._backoff * 2))
        delay = max(self._backoff, retry_after or 0.0)
        self._retry_at = asyncio.get_running_loop().time() + delay
        self._wake.set()  # work is pending: go again as soon as the backoff allows, not a tick later
        self.last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, BackendError):
            level = logging.WARNING if exc.retryable else logging.ERROR
            log.log(level, "tgsnap: delta upload failed (%s); rows stay dirty, retry in %.1fs", exc, delay)

    def _became_durable(self, number: int) -> None:
        self._durable_no = max(self._durable_no, number)
        for fut, target in self._waiters.items():
            if target <= self._durable_no and not fut.done():
                fut.set_result(None)

    # ---- snapshots -------------------------------------------------------------------------------

    def _start_snapshot(
        self, image: bytes, base_seq: int, captured_at: float, requests: list[asyncio.Future[SnapshotReceipt]]
    ) -> None:
        for fut in requests:
            if fut in self._snapshot_requests:
                self._snapshot_requests.remove(fut)
        self._snapshot_task = asyncio.get_running_loop().create_task(
            self._write_snapshot(image, base_seq, captured_at, requests), name="tgsnap-snapshot"
        )

    async def _write_snapshot(
        self, image: bytes, base_seq: int, captured_at: float, requests: list[asyncio.Future[SnapshotReceipt]]
    ) -> None:
        try:
            receipt = await self._replica.write_snapshot(image, base_seq, captured_at)
        except FencedError as exc:
            _settle(requests, exc)
            self.fence(exc)
        except asyncio.CancelledError:
            for fut in requests:
                fut.cancel()
            raise
        except Exception as exc:
            # The previous snapshot and its deltas stay valid; try again later.
            log.warning("tgsnap: snapshot at seq %d failed (%s); will retry", base_seq, exc)
            self.last_error = f"snapshot: {type(exc).__name__}: {exc}"
            self._snapshot_retry_at = time.monotonic() + self._config.retry_max
            _settle(requests, exc)
        else:
            log.info("tgsnap: snapshot at seq %d stored (%d parts, %d bytes)", base_seq, receipt.parts, receipt.size)
            for fut in requests:
                if not fut.done():
                    fut.set_result(receipt)
        finally:
            self._snapshot_task = None
            if self._snapshot_requests:
                self._wake.set()
            if isinstance(image, mmap.mmap):
                # Unmapping a whole-database mapping takes ~100 ms at 10 M users: not on the loop. (A
                # buffer still exported, which no caller keeps, would raise BufferError: then GC frees it.)
                with contextlib.suppress(BufferError):
                    await asyncio.to_thread(image.close)

    # ---- snapshots prepared off the loop (core.snapcopy) -----------------------------------------

    def _catching_up(self) -> _CopyJob | None:
        """The copy, if it is complete and waiting for change sets captured after it."""
        job = self._copy
        return job if job is not None and job.copied and not job.finishing else None

    def _begin_copy(self) -> bool:
        """Start copying the live database in a worker thread; False if it cannot (then serialize now)."""
        try:
            scratch = snapcopy.ScratchCopy(self._conn)
        except (OSError, sqlite3.Error) as exc:
            log.warning("tgsnap: cannot make a scratch copy for the snapshot (%s); serializing in the cut", exc)
            return False
        job = _CopyJob(scratch, self._tracker.schema_version())
        self._copy = job
        job.task = asyncio.get_running_loop().create_task(self._run_copy(job), name="tgsnap-snapshot-copy")
        # A task cancelled before it first runs never enters its `finally`: close the scratch then, or its
        # file stays in TMPDIR (closing twice is harmless).
        job.task.add_done_callback(lambda t: job.scratch.close() if t.cancelled() else None)
        return True

    async def _run_copy(self, job: _CopyJob) -> None:
        try:
            await job.in_thread(job.scratch.copy)
            if self._tracker.schema_version() != job.cookie:
                raise snapcopy.CopyAbandoned("the schema changed while the database was copied")
            job.copied = True
            self._wake.set()  # the next capture (even an empty one) brings the copy forward
            while True:
                item = await job.queue.get()
                if isinstance(item, ChangeSet):
                    await job.in_thread(job.scratch.apply, item)
                else:
                    break
            base_seq, captured_at, requests = item
            image = await job.in_thread(job.scratch.image)
        except snapcopy.CopyAbandoned as exc:
            self._copy_restarts += 1
            if self._copy_restarts >= _COPY_RESTARTS:
                self._sync_image = True
            log.info("tgsnap: snapshot copy restarted (%s)", exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Marks and waiters were never touched by the copy: the snapshot is simply tried again, in
            # the cut this time.
            log.warning("tgsnap: snapshot copy failed (%s); the next snapshot is serialized in the cut", exc)
            self.last_error = f"snapshot copy: {type(exc).__name__}: {exc}"
            self._sync_image = True
            return
        finally:
            await job.close()
            if self._copy is job:
                self._copy = None
            if self._snapshot_requests:
                self._wake.set()
        self._copy_restarts = 0
        self._start_snapshot(image, base_seq, captured_at, requests)

    async def _drop_copy(self, keep_writing: bool) -> None:
        """Stop a copy that is not yet an image (stop/abandon); nothing it holds is needed."""
        job = self._copy
        if job is None or job.task is None:
            return
        if keep_writing and job.finishing:
            await asyncio.wait([job.task])  # only the file read is left; then the snapshot task writes it
            return
        job.scratch.abort()
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)

    # ---- fencing ---------------------------------------------------------------------------------

    def fence(self, exc: FencedError) -> None:
        if self.fenced is not None:
            return
        self.fenced = exc
        self._on_fence(exc)
        if self._copy is not None and self._copy.task is not None and not self._copy.finishing:
            self._copy.scratch.abort()  # no delta will bring it forward now
            self._copy.task.cancel()
        self._stopping = True
        self._wake.set()
        log.error("tgsnap: this writer was fenced (%s); it refuses writes from now on", exc)
        self._fail_waiters(exc)

    def _fail_waiters(self, exc: BaseException | None) -> None:
        from core.errors import StoreClosed

        error = exc or StoreClosed("the store stopped before these writes became durable")
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(_copy(error))
        _settle(self._snapshot_requests, error)


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _settle(futures: list[asyncio.Future[SnapshotReceipt]], exc: BaseException) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(_copy(exc))


def _copy(exc: BaseException) -> BaseException:
    # One exception object raised in many tasks would collect everyone's tracebacks; the copy keeps
    # every field (retryable, retry_after, ref, ...).
    return copy_error(exc)


#: copies abandoned in a row (schema statements while copying) before a snapshot is serialized in the cut.
_COPY_RESTARTS = 3


class _CopyJob:
    """One snapshot copy: the scratch, its task, and the change sets handed to it in capture order."""

    def __init__(self, scratch: snapcopy.ScratchCopy, cookie: int):
        self.scratch = scratch
        self.cookie = cookie  # PRAGMA schema_version when the copy began
        self.task: asyncio.Task[None] | None = None
        self.copied = False
        self.finishing = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._thread: asyncio.Future[Any] | None = None

    def feed(self, changes: ChangeSet) -> None:
        self.queue.put_nowait(changes)

    def finish(self, base_seq: int, captured_at: float, requests: list[asyncio.Future[SnapshotReceipt]]) -> None:
        """The last change set fed (or none, for an empty capture) is durable at `base_seq`."""
        self.finishing = True
        self.queue.put_nowait((base_seq, captured_at, requests))

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Kept, so a cancelled task can still wait for the thread before closing the scratch under it.
        self._thread = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return await self._thread

    async def close(self) -> None:
        thread = self._thread
        if thread is not None and not thread.done():
            self.scratch.abort()
            await asyncio.wait([thread])
        await asyncio.get_running_loop().run_in_executor(None, self.scratch.close)
