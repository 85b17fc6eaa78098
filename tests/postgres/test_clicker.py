"""The clicker moved to PostgreSQL: the bot's own code writes the store, follow carries it over, and the
clicker's queries in PostgreSQL's dialect (docs/migrating.md) answer exactly as the bot's do."""

from __future__ import annotations

import time

import asyncpg

from bot.users import SCHEMA, Users
from core import Store, StoreConfig
from snapshot.backends.local import LocalDirBackend
from snapshot.postgres_follow import Follower
from tests.postgres.conftest import query
from tools.bench.handler import PG_CLICK, PG_NAME, PG_REGISTER, PG_TOP, PG_TOTAL


async def test_clicker_queries_on_the_followed_replica_answer_as_the_bot(tmp_path, pg_url, schema):
    store = await Store.open(LocalDirBackend(tmp_path, fsync=False), schema=SCHEMA,
                             config=StoreConfig(flush_interval=3600.0, writer_id="clicker"))
    users = Users(store)
    for i in range(1, 31):
        users.register(100 + i, f"Пользователь {i}" if i % 2 else f"User '{i}'; DROP TABLE users; --")
    # a snapshot, then more deltas: the follower seeds from the image and applies the rest in place
    await store.snapshot()
    for i in range(1, 31):
        for m in range(i % 7):
            users.click(100 + i, 10 + m)
    await store.flush()

    async def open_backend():
        return LocalDirBackend(tmp_path, fsync=False)

    f = Follower(open_backend, None, pg_url, schema=schema, location=f"local:{tmp_path}")
    try:
        assert (await f.step()).lag == 0
        # the index the rating reads came along
        assert any("users_by_clicks" in r[0] for r in query(
            pg_url, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)))
        conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
        try:
            rating = users.rating(15)
            assert await conn.fetchval(PG_TOTAL) == rating.total == 30
            assert [tuple(r) for r in await conn.fetch(PG_TOP, 15)] == rating.top
            # a new click counts once, a redelivered one (same message id) not again: on both
            assert await conn.fetchval(PG_CLICK, 107, 99) == users.click(107, 99)
            assert await conn.fetchval(PG_CLICK, 107, 99) == users.click(107, 99)
            assert await conn.fetchval(PG_CLICK, 999, 1) is None and users.click(999, 1) is None
            await conn.execute(PG_REGISTER, 500, "Новый", None, time.time())
            await conn.execute(PG_REGISTER, 500, "renamed?", "nick", time.time())  # keeps the name, learns @nick
            assert await conn.fetchval(PG_NAME, 500) == users.register(500, "Новый") == "Новый"
            users.register(500, "renamed?", "nick")
            assert tuple(await conn.fetchrow("SELECT name, username FROM users WHERE chat_id = 500")) == \
                users.profile(500)[:2] == ("Новый", "nick")
        finally:
            await conn.close()
    finally:
        await f.close()
        await store.close()
