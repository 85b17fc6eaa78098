"""follow: a PostgreSQL replica that equals the restored state after every pass, through a writer crash and
takeover, a superseded delta, a compaction, schema changes, a PostgreSQL restart and a second follower."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from snapshot.apply import apply_changes
from snapshot.backends.local import LocalDirBackend
from snapshot.changes import ChangeSet, TableChanges
from snapshot.delta import encode_delta
from snapshot.naming import delta_name
from snapshot.postgres_follow import Follower, FollowError
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import plan, restore
from tests.postgres.conftest import query
from tests.tools.chain import COLUMNS, DDL, _changes
from tools import follow as follow_cli


def pg_rows(url: str, schema: str, table: str = "users") -> list[tuple]:
    out = []
    for r in query(url, f'SELECT * FROM "{schema}"."{table}" ORDER BY 1'):
        out.append(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r))
    return out


async def restored(path) -> list[tuple]:
    r = await restore(LocalDirBackend(path, fsync=False))
    try:
        return r.conn.execute("SELECT * FROM users ORDER BY 1").fetchall()
    finally:
        r.conn.close()


def follower(path, url, schema, **kw) -> Follower:
    async def open_backend():
        return LocalDirBackend(path, fsync=False)

    return Follower(open_backend, None, url, schema=schema, location=f"local:{path}", **kw)


def writer(path, writer_id="bot", lease=30.0) -> Replica:
    cfg = ReplicaConfig(lease_seconds=lease, part_size=2000, shard_size=8192)
    return Replica(LocalDirBackend(path, fsync=False), cfg, writer_id=writer_id)


async def write(r: Replica, first: int, last: int, model: sqlite3.Connection | None = None) -> None:
    for seq in range(first, last + 1):
        cs = _changes(seq, time.time())
        await r.write_delta(cs)
        if model is not None:
            apply_changes(model, cs)


async def test_seeds_then_applies_each_delta_in_place(tmp_path, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    await write(w, 1, 4)
    f = follower(tmp_path, pg_url, schema)
    try:
        s = await f.step()
        assert s.reseeded and "seeding" in s.reseeded and s.seq == 4 and s.lag == 0
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        await write(w, 5, 11)  # seq 5 and 10 delete rows
        s = await f.step()
        assert (s.applied, s.reseeded, s.seq) == (7, None, 11)
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        assert (await f.step()).applied == 0  # nothing new: nothing done
        seq, hsh, storage = query(pg_url, f'SELECT seq, hash, storage FROM "{schema}"._tgsnap_follow')[0]
        assert seq == 11 and storage.startswith(f"local:{tmp_path}")
    finally:
        await f.close()
        await w.release()


async def test_writer_crash_takeover_superseded_delta_and_compaction(tmp_path, pg_url, schema):
    a = writer(tmp_path, "bot-a", lease=0.4)
    await a.acquire()
    await write(a, 1, 5)
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        # writer A dies without releasing; B takes over once the lease runs out
        await asyncio.sleep(0.5)
        b = writer(tmp_path, "bot-b")
        await b.acquire()
        # A was only frozen: it resumes and stores a late delta seq 6 on its old epoch
        tip = (await plan(LocalDirBackend(tmp_path, fsync=False))).tip  # (seq 5, its hash, epoch of B)
        late = ChangeSet(time.time(), {"users": TableChanges("users", DDL, COLUMNS, ["chatid"],
                                                              [(1, "late write of a fenced writer", 1, None)], [])})
        await LocalDirBackend(tmp_path).put(delta_name(6), encode_delta(late, epoch=1, seq=6, prev=tip[1]))
        s = await f.step()  # a document of a superseded claim never enters the chain (reader rules)
        assert s.seq == 5 and s.reseeded is None
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        await write(b, 6, 7)  # B continues: the replica follows across the takeover in place
        s = await f.step()
        assert (s.seq, s.applied, s.reseeded) == (7, 2, None)
        rows = pg_rows(pg_url, schema)
        assert rows == await restored(tmp_path) and (1, "late write of a fenced writer", 1, None) not in rows
        # a replica that applied a delta the chain no longer holds at that seq (a superseded attempt: a lost
        # acknowledgement's first try, replaced by its retry) re-seeds; here its cursor is made to say so
        query(pg_url, f'UPDATE "{schema}"._tgsnap_follow SET hash = %s', ("ab" * 32,))
        query(pg_url, f'UPDATE "{schema}".users SET name = %s', ("from the superseded attempt",))
        await write(b, 8, 8)
        s = await f.step()
        assert s.reseeded and "superseded" in s.reseeded and s.seq == 8
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        # compaction: a snapshot at the tip folds the deltas the cursor points into
        await write(b, 9, 10)
        r = await restore(LocalDirBackend(tmp_path, fsync=False))
        await b.write_snapshot(r.conn.serialize(), r.seq, r.captured_at)
        r.conn.close()
        await write(b, 11, 12)
        s = await f.step()
        assert s.reseeded and "compacted" in s.reseeded and s.seq == 12
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        await write(b, 13, 14)
        s = await f.step()
        assert (s.applied, s.reseeded) == (2, None)
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        await b.release()
    finally:
        await f.close()


async def test_survives_a_postgresql_restart_and_a_second_follower(tmp_path, pg_server, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    await write(w, 1, 3)
    f1, f2 = follower(tmp_path, pg_url, schema), follower(tmp_path, pg_url, schema)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(f.run(interval=0.05, stop=stop)) for f in (f1, f2)]
    try:
        async def caught_up(seq: int) -> None:
            for _ in range(400):
                try:
                    if query(pg_url, f'SELECT seq FROM "{schema}"._tgsnap_follow') == [(seq,)]:
                        return
                except Exception:
                    pass
                await asyncio.sleep(0.05)
            raise AssertionError(f"the followers did not reach seq {seq}")

        await caught_up(3)
        await asyncio.to_thread(pg_server.stop, "immediate")  # a crash of the server
        await write(w, 4, 9)
        await asyncio.sleep(0.3)  # both followers fail and retry meanwhile
        await asyncio.to_thread(pg_server.start)
        await caught_up(9)
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        await write(w, 10, 12)
        await caught_up(12)
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        assert not any(t.done() for t in tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for f in (f1, f2):
            await f.close()
        await w.release()


async def test_schema_changes_are_applied_or_reported(tmp_path, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    await write(w, 1, 2)
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        # a new table, carried with its DDL
        ddl2 = "CREATE TABLE votes (id INTEGER PRIMARY KEY, who TEXT NOT NULL, score REAL DEFAULT 1.5)"
        await w.write_delta(ChangeSet(time.time(), {"votes": TableChanges(
            "votes", ddl2, ["id", "who", "score"], ["id"], [(1, "Анна", 2.5), (2, "Bob", None)], [])}))
        s = await f.step()
        assert s.applied == 1 and pg_rows(pg_url, schema, "votes") == [(1, "Анна", 2.5), (2, "Bob", None)]
        # a value that does not fit the replica's column type: re-seeded with the column re-typed
        await w.write_delta(ChangeSet(time.time(), {"users": TableChanges(
            "users", DDL, COLUMNS, ["chatid"], [(1, "typed", "not an integer", None)], [])}))
        s = await f.step()
        assert s.reseeded and "does not fit" in s.reseeded
        types = dict(query(pg_url, "SELECT column_name, data_type FROM information_schema.columns WHERE "
                                   "table_schema = %s AND table_name = 'users'", (schema,)))
        assert types["click"] == "text"
        assert pg_rows(pg_url, schema) == [tuple(map(lambda v, i: str(v) if isinstance(v, int) and i == 2 else v,
                                                     r, range(4))) for r in await restored(tmp_path)]
        # a changed primary key is reported, never guessed at
        await w.write_delta(ChangeSet(time.time(), {"votes": TableChanges(
            "votes", ddl2, ["id", "who", "score"], ["who"], [(3, "Zoë", 1.0)], [])}))
        with pytest.raises(FollowError, match="primary key"):
            await f.step()
    finally:
        await f.close()
        await w.release()


def test_cli_once_and_refusals(tmp_path, pg_url, schema, capsys):
    async def prep():
        w = writer(tmp_path)
        await w.acquire()
        await write(w, 1, 3)
        await w.release()

    asyncio.run(prep())
    args = ["--storage-dir", str(tmp_path), "--to", pg_url, "--schema", schema, "--once"]
    assert follow_cli.main(args) == 0
    err = capsys.readouterr().err
    assert "lag 0" in err and "s3cr3t" not in err
    assert pg_rows(pg_url, schema) == asyncio.run(restored(tmp_path))
    # another storage's replica is not taken over without --force
    other = tmp_path / "other"
    other.mkdir()

    async def prep2():
        w = writer(other)
        await w.acquire()
        await write(w, 1, 1)
        await w.release()

    asyncio.run(prep2())
    args2 = ["--storage-dir", str(other), "--to", pg_url, "--schema", schema, "--once"]
    assert follow_cli.main(args2) == 1
    assert "follows another storage" in capsys.readouterr().err
    assert follow_cli.main(args2 + ["--force"]) == 0
    assert pg_rows(pg_url, schema) == asyncio.run(restored(other))
    assert follow_cli.main(["--storage-dir", str(other), "--to", "postgresql://postgres:pw@127.0.0.1:1/x",
                            "--once"]) == 4
    assert "pw@" not in capsys.readouterr().err


def test_export_then_follow_continues_without_reseeding(tmp_path, pg_url, schema, capsys):
    from tools import export

    async def prep(first, last, release):
        w = writer(tmp_path)
        await w.acquire()
        await write(w, first, last)
        if release:
            await w.release()

    asyncio.run(prep(1, 3, True))
    assert export.main(["--storage-dir", str(tmp_path), "--to", pg_url, "--schema", schema, "-q"]) == 0
    asyncio.run(prep(4, 6, True))
    assert follow_cli.main(["--storage-dir", str(tmp_path), "--to", pg_url, "--schema", schema, "--once"]) == 0
    assert "applied 3 delta(s)" in capsys.readouterr().err
    assert pg_rows(pg_url, schema) == asyncio.run(restored(tmp_path))


def test_check_names_a_replica_that_differs(tmp_path, pg_url, schema, capsys):
    async def prep(first, last):
        w = writer(tmp_path)
        await w.acquire()
        await write(w, first, last)
        await w.release()

    asyncio.run(prep(1, 4))
    args = ["--storage-dir", str(tmp_path), "--to", pg_url, "--schema", schema]
    assert follow_cli.main(args + ["--check"]) == 0
    assert "the replica equals the stored state at seq 4" in capsys.readouterr().err
    query(pg_url, f'UPDATE "{schema}".users SET click = click + 1 WHERE chatid = (SELECT min(chatid) FROM '
                  f'"{schema}".users)')  # someone wrote to the replica
    asyncio.run(prep(5, 5))
    assert follow_cli.main(args + ["--check"]) == 1  # the pass applies seq 5; the check finds the stray write
    err = capsys.readouterr().err
    assert "check: table 'users': PostgreSQL holds" in err
    query(pg_url, f'CREATE TABLE "{schema}".stray (x int)')
    assert follow_cli.main(args + ["--check"]) == 1
    assert "'stray' is in PostgreSQL but not in the stored state" in capsys.readouterr().err


class FlakyBackend(LocalDirBackend):
    """Storage that is unreachable while `down` is set (every read fails as an outage would)."""

    down = False

    async def get(self, ref):
        if FlakyBackend.down:
            from snapshot.errors import BackendError

            raise BackendError("storage unreachable (test outage)")
        return await super().get(ref)

    async def read_manifest(self):
        if FlakyBackend.down:
            from snapshot.errors import BackendError

            raise BackendError("storage unreachable (test outage)")
        return await super().read_manifest()


async def test_survives_a_storage_outage(tmp_path, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    await write(w, 1, 2)
    opened = []

    async def open_backend():
        opened.append(1)
        return FlakyBackend(tmp_path, fsync=False)

    f = Follower(open_backend, None, pg_url, schema=schema, location=f"local:{tmp_path}")
    stop = asyncio.Event()
    seen = []
    task = asyncio.create_task(f.run(interval=0.05, stop=stop, report=seen.append))
    try:
        for _ in range(200):
            if seen and seen[-1].seq == 2:
                break
            await asyncio.sleep(0.05)
        FlakyBackend.down = True
        await write(w, 3, 6)  # the writer's own backend is not flaky: only the follower's reads fail
        await asyncio.sleep(0.4)
        stuck = seen[-1].seq
        FlakyBackend.down = False
        for _ in range(200):
            if seen[-1].seq == 6:
                break
            await asyncio.sleep(0.05)
        assert stuck == 2 and seen[-1].seq == 6 and len(opened) >= 2  # reopened after the outage
        assert pg_rows(pg_url, schema) == await restored(tmp_path)
        assert not task.done()
    finally:
        FlakyBackend.down = False
        stop.set()
        await task
        await f.close()
        await w.release()


async def test_beside_a_live_writer_that_compacts_every_pass_equals_a_restore_at_its_seq(tmp_path, pg_url, schema):
    """The writer keeps writing and snapshotting (which deletes the deltas a follower may be reading) while
    the follower runs; after every pass PostgreSQL equals the state the writer had at the cursor's seq."""
    w = writer(tmp_path)
    await w.acquire()
    model = sqlite3.connect(":memory:")
    states: dict[int, list[tuple]] = {0: []}
    mismatches: list[int] = []
    seen: list[int] = []

    def check(r) -> None:
        seen.append(r.seq)
        if pg_rows(pg_url, schema) != states[r.seq]:
            mismatches.append(r.seq)

    f = follower(tmp_path, pg_url, schema)
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(interval=0.01, stop=stop, report=check))
    try:
        for seq in range(1, 25):
            cs = _changes(seq, time.time())
            await w.write_delta(cs)
            apply_changes(model, cs)
            states[seq] = model.execute("SELECT * FROM users ORDER BY 1").fetchall()
            if seq % 5 == 0:
                await w.write_snapshot(model.serialize(), seq, time.time())
            await asyncio.sleep(0.01)
        for _ in range(1000):
            if (seen and seen[-1] == 24) or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            task.result()  # the follower must not have stopped: show why it did
        assert seen[-1] == 24 and not mismatches, (seen, mismatches)
        assert len(set(seen)) >= 3  # it really followed along (and re-seeded across snapshots), not one pass
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await f.close()
        await w.release()


def test_encrypted_storage_follows_with_the_key_and_not_without(tmp_path, pg_url, schema, capsys):
    from tests.tools.chain import build_sync

    key = bytes(range(32))
    chain = build_sync(tmp_path / "s", 4, snapshot_at=2, key=key)
    base = ["--storage-dir", str(tmp_path / "s"), "--to", pg_url, "--schema", schema, "--once"]
    assert follow_cli.main(base) != 0  # no key: refused, nothing written
    assert "key" in capsys.readouterr().err.lower()
    assert follow_cli.main(base + ["--encryption-key", key.hex()]) == 0
    assert [(a, b, c, d) for a, b, c, d in pg_rows(pg_url, schema)] == chain.states[4]


async def test_lag_in_deltas_and_seconds(tmp_path, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    t0 = time.time()
    for seq in range(1, 3):
        await w.write_delta(_changes(seq, t0 + seq))
    f = follower(tmp_path, pg_url, schema)
    try:
        s = await f.step()
        assert (s.lag, s.lag_seconds) == (0, 0.0)
        for seq in range(3, 6):
            await w.write_delta(_changes(seq, t0 + 10 * seq))
        s = await f.step()
        assert (s.seq, s.lag, s.seq_captured_at, s.tip_captured_at) == (5, 0, t0 + 50, t0 + 50)
        # behind: the capture times of the replica's seq and of storage's tip give the writing time missing
        from snapshot.postgres_follow import StepResult

        behind = StepResult(seq=2, tip=5, seq_captured_at=t0 + 2, tip_captured_at=t0 + 50)
        assert (behind.lag, behind.lag_seconds) == (3, 48.0)
    finally:
        await f.close()
        await w.release()


async def test_cursor_names_the_storage_by_its_id(tmp_path, pg_url, schema):
    w = writer(tmp_path)
    await w.acquire()
    await write(w, 1, 1)
    f = follower(tmp_path, pg_url, schema)
    try:
        await f.step()
        (storage,) = query(pg_url, f'SELECT storage FROM "{schema}"._tgsnap_follow')[0]
        location, _, sid = storage.rpartition("|")
        assert location == f"local:{tmp_path}" and len(sid) == 32  # the manifest's 16-byte storage id, hex
        # the same storage reached through another path (a moved directory) is still recognised by its id
        from snapshot import postgres as pgm

        assert pgm.same_storage(storage, f"local:/elsewhere|{sid}")
        assert not pgm.same_storage(storage, f"local:{tmp_path}|{'0' * 32}")
    finally:
        await f.close()
        await w.release()
