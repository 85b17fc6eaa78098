"""Move a storage to a fresh backend (a new channel): the current state copied, verified, then yours.

Why: a storage channel may have to be left — the channel is banned or its owner lost, Telegram limits how
far back a channel's messages stay reachable, or the channel has simply grown old (superseded documents
older than 48 h cannot be deleted by a bot and stay in it). `move(source, target)`:

1. refuses a `target` that holds anything (a manifest or documents): a move never writes over storage;
2. takes the source's writer lease like any writer (StorageBusy naming the holder while a live writer
   such as the bot runs; `wait` waits for it), and restores the current state through the same reader
   the bot uses (snapshot + every delta after it, verified);
3. claims the empty target, writes that state there as its first snapshot and publishes the manifest;
4. restores the target independently and compares it with the source's state, table by table; a
   mismatch raises `RestoreError` and the source stays the storage of record;
5. releases both leases. The source is left as it was (nothing is deleted from it), so a move can be
   repeated, and the old channel can be archived or deleted by hand once the bot runs on the new one.

The delta history before the move is not copied: the target starts from a snapshot of the state at the
source's last delta (restore equals state; `tools/export.py` keeps history elsewhere if needed).
Switching the bot is configuration: stop the bot, move, set `TGSNAP_STORAGE_CHAT` (and the storage bot,
if another one) to the new channel, start the bot.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import time
from dataclasses import dataclass

from snapshot.backend import Backend
from snapshot.errors import ConfigError, RestoreError
from snapshot.replica import Replica, ReplicaConfig
from snapshot.restore import restore
from snapshot.restored import Progress


@dataclass
class MoveResult:
    source: str
    target: str
    seq: int  # the source's last delta: the state that was moved
    tables: int
    rows: int
    parts: int  # snapshot parts written to the target
    size: int  # their stored bytes
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _contents(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Every table's rows in primary-key order, and the schema: what 'the same state' means here."""
    out: dict[str, list[tuple]] = {}
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        out[name] = sorted(conn.execute(f"SELECT * FROM {quoted}").fetchall(), key=repr)
    out["<schema>"] = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=repr)
    out["<user_version>"] = [tuple(conn.execute("PRAGMA user_version").fetchone())]
    return out


async def _empty(target: Backend) -> bool:
    if await target.read_manifest() is not None:
        return False
    return not (target.info.can_discover and await target.discover(None))


async def move(source: Backend, target: Backend, key: bytes | None = None, *, wait: float = 0.0,
               progress: Progress | None = None, config: ReplicaConfig | None = None) -> MoveResult:
    """Copy the current state of `source` into the empty `target` and verify it there (see the module)."""
    t0 = time.monotonic()
    if not await _empty(target):
        raise ConfigError(f"the target storage {target.info.name} is not empty: a move only writes into a new, "
                          "empty channel (create one and make the storage bot its administrator)")
    cfg = dataclasses.replace(config or ReplicaConfig(), encryption_key=key, takeover_wait=wait)
    writer = f"tgsnap-move@{socket.gethostname()}:{os.getpid()}"
    src = Replica(source, cfg, writer_id=writer)
    restored = await src.acquire(progress=progress)
    try:
        image = restored.conn.serialize()
        expected = _contents(restored.conn)
        restored.conn.close()
        dst = Replica(target, dataclasses.replace(cfg, takeover_wait=0.0), writer_id=writer)
        fresh = await dst.acquire()
        fresh.conn.close()
        try:
            receipt = await dst.write_snapshot(image, dst.last_seq, restored.captured_at or time.time(),
                                               progress=progress)
        finally:
            await dst.release()
        check = await restore(target, key)
        try:
            if _contents(check.conn) != expected:
                raise RestoreError(f"the state restored from {target.info.name} differs from {source.info.name}'s "
                                   "after the move; keep using the source and report this")
        finally:
            check.conn.close()
    finally:
        await src.release()
    rows = sum(len(v) for k, v in expected.items() if not k.startswith("<"))
    tables = sum(1 for k in expected if not k.startswith("<"))
    return MoveResult(source=source.info.name, target=target.info.name, seq=restored.seq, tables=tables,
                      rows=rows, parts=receipt.parts, size=receipt.size, seconds=time.monotonic() - t0)
