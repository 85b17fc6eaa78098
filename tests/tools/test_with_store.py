"""The tools on storage written by the real live store (core.Store), tracking tables and all."""

from __future__ import annotations

import asyncio
import sqlite3

from core import Store, StoreConfig
from snapshot.backends.local import LocalDirBackend
from tests.tools.chain import restored_rows
from tools import compact, export, verify

DDL = "CREATE TABLE users (chatid INTEGER PRIMARY KEY, name TEXT NOT NULL, click INTEGER NOT NULL DEFAULT 0)"


async def run_bot(path) -> list[tuple]:
    store = await Store.open(LocalDirBackend(path, fsync=False), schema=[DDL],
                             config=StoreConfig(flush_interval=3600.0, writer_id="clicker"))
    for i in range(30):
        store.execute("INSERT INTO users (chatid, name) VALUES (?, ?)", (100_000_000 + i, f"Пользователь {i}"))
    await store.flush()
    await store.snapshot()
    for round_ in range(5):
        for i in range(0, 30, round_ + 2):
            store.execute("UPDATE users SET click = click + 1 WHERE chatid = ?", (100_000_000 + i,))
        store.execute("DELETE FROM users WHERE chatid = ?", (100_000_029 - round_,))
        await store.flush()
    state = store.execute("SELECT * FROM users ORDER BY chatid").fetchall()
    await store.close()
    return state


def test_verify_compact_export_on_a_store_written_chain(tmp_path, capsys):
    store_dir = tmp_path / "store"
    state = asyncio.run(run_bot(store_dir))

    assert verify.main(["--storage-dir", str(store_dir), "-q"]) == 0
    assert compact.main(["--storage-dir", str(store_dir), "-q"]) == 0
    assert "5 delta(s) folded" in capsys.readouterr().out
    assert verify.main(["--storage-dir", str(store_dir), "-q"]) == 0
    assert restored_rows(store_dir) == state

    out = tmp_path / "users.sqlite"
    assert export.main(["--storage-dir", str(store_dir), "--to", str(out), "-q"]) == 0
    conn = sqlite3.connect(out)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["users"]  # the store's _tgsnap_ tracking tables and triggers stay behind
    assert conn.execute("SELECT * FROM users ORDER BY chatid").fetchall() == state
    conn.close()

    # and the bot starts again on compacted storage with the same state
    async def reopen():
        s = await Store.open(LocalDirBackend(store_dir, fsync=False), schema=[DDL])
        try:
            return s.execute("SELECT * FROM users ORDER BY chatid").fetchall()
        finally:
            await s.close()

    assert asyncio.run(reopen()) == state

