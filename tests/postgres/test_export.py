"""`tools.export --to postgresql://`: through storage, at a point in time, refusals and clear errors."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from snapshot import postgres as pgm
from snapshot.backends.local import LocalDirBackend
from snapshot.errors import ConfigError
from snapshot.replica import Replica, ReplicaConfig
from tests.postgres.conftest import PASSWORD, free_port, query
from tests.tools.chain import build_sync
from tools import export


def pg_rows(url: str, schema: str) -> list[tuple]:
    return [(a, b, c, None if d is None else bytes(d))
            for a, b, c, d in query(url, f'SELECT chatid, name, click, avatar FROM "{schema}".users ORDER BY chatid')]


def test_export_latest_and_at_seq_and_refuses_to_overwrite(tmp_path, pg_url, schema, capsys):
    chain = build_sync(tmp_path / "s", 9, snapshot_at=5)
    args = ["--storage-dir", str(tmp_path / "s"), "--to", pg_url, "--schema", schema, "-q"]
    assert export.main(args) == 0
    assert pg_rows(pg_url, schema) == chain.states[9]
    err = capsys.readouterr().err
    assert "checksum" in err and "matches" in err and PASSWORD not in err and "***" in err
    # the cursor a follower continues from
    seq, hsh = query(pg_url, f'SELECT seq, hash FROM "{schema}"._tgsnap_follow')[0]
    assert seq == 9 and len(hsh) == 64

    assert export.main(args + ["--at-seq", "6"]) == 1  # tables exist: refused, nothing changed
    assert "--force" in capsys.readouterr().err
    assert pg_rows(pg_url, schema) == chain.states[9]
    assert export.main(args + ["--at-seq", "6", "--force"]) == 0
    assert pg_rows(pg_url, schema) == chain.states[6]
    assert query(pg_url, f'SELECT seq FROM "{schema}"._tgsnap_follow')[0][0] == 6


def clicker_storage(path) -> None:
    """Storage holding the clicker's real schema (NOT NULL, DEFAULT, a DESC index) and a unique index."""
    ddl = ("CREATE TABLE users (chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL, clicks INTEGER NOT NULL "
           "DEFAULT 0, last_message_id INTEGER NOT NULL DEFAULT 0, nick TEXT DEFAULT 'anon' UNIQUE, "
           "seen TEXT DEFAULT CURRENT_TIMESTAMP)")
    img = sqlite3.connect(":memory:")
    img.execute(ddl)
    img.execute("CREATE INDEX users_by_clicks ON users (clicks DESC, chat_id ASC)")
    img.executemany("INSERT INTO users (chat_id, name, clicks, nick) VALUES (?, ?, ?, ?)",
                    [(i, f"user {i}", i * 3 % 17, f"n{i}") for i in range(1, 51)])
    img.commit()

    async def go():
        r = Replica(LocalDirBackend(path, fsync=False), ReplicaConfig(part_size=4096, shard_size=16384))
        await r.acquire()
        await r.write_snapshot(img.serialize(), 0, 1.0e9)
        await r.release()

    asyncio.run(go())


def test_keys_indexes_not_null_and_defaults_are_recreated(tmp_path, pg_url, schema):
    clicker_storage(tmp_path / "s")
    assert export.main(["--storage-dir", str(tmp_path / "s"), "--to", pg_url, "--schema", schema, "-q"]) == 0
    cols = {r[0]: r[1:] for r in query(pg_url, "SELECT column_name, is_nullable, column_default, data_type FROM "
                                                "information_schema.columns WHERE table_schema = %s", (schema,))
            if True}
    assert cols["chat_id"][0] == "NO" and cols["name"][0] == "NO" and cols["nick"][0] == "YES"
    assert cols["clicks"][1] == "0" and cols["nick"][1].startswith("'anon'")
    assert "to_char" in cols["seen"][1]
    idx = dict(query(pg_url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)))
    assert "clicks DESC, chat_id" in idx["users_by_clicks"]
    assert "PRIMARY KEY" in idx["users_pkey"] or "UNIQUE" in idx["users_pkey"]
    assert any("UNIQUE" in d and "(nick)" in d for d in idx.values())
    # the defaults and constraints work on the PostgreSQL side
    query(pg_url, f'INSERT INTO "{schema}".users (chat_id, name) VALUES (999, %s)', ("new",))
    assert query(pg_url, f'SELECT clicks, nick, length(seen) FROM "{schema}".users WHERE chat_id = 999') == [
        (0, "anon", 19)]
    import psycopg

    with pytest.raises(psycopg.errors.NotNullViolation):
        query(pg_url, f'INSERT INTO "{schema}".users (chat_id) VALUES (1000)')
    # the clicker's queries, PostgreSQL dialect (docs/migrating.md)
    assert query(pg_url, f'UPDATE "{schema}".users SET clicks = clicks + (last_message_id < %(m)s)::int, '
                         f'last_message_id = greatest(last_message_id, %(m)s) WHERE chat_id = %(c)s RETURNING clicks',
                 {"m": 5, "c": 1}) == [(4,)]


def test_checksum_mismatch_commits_nothing(pg_url, schema, monkeypatch):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    real = pgm.table_checksum

    async def tampered(*a, **kw):
        c = await real(*a, **kw)
        c.digest ^= 1
        return c

    monkeypatch.setattr(pgm, "table_checksum", tampered)

    async def go():
        pg = await pgm.connect(pg_url)
        try:
            await pgm.load_state(pg, conn, schema, replace=False, position=None, url=pg_url)
        finally:
            await pg.close()

    with pytest.raises(pgm.PostgresError, match="nothing committed"):
        asyncio.run(go())
    assert query(pg_url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)) == [(0,)]


@pytest.mark.parametrize("case", ["wrong password", "unreachable", "bad url", "not postgres"])
def test_clear_errors_never_show_the_password(tmp_path, pg_server, schema, capsys, case):
    build_sync(tmp_path / "s", 2)
    secret = "Hunter2-xyzzy"
    url = {
        "wrong password": pg_server.url(password=secret),
        "unreachable": f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/postgres",
        "bad url": f"postgresql://postgres:{secret}@127.0.0.1:{pg_server.port}/postgres?sslmode=bogus&x=%zz",
        "not postgres": f"mysql://postgres:{secret}@127.0.0.1/db",
    }[case]
    try:
        code = export.main(["--storage-dir", str(tmp_path / "s"), "--to", url, "--schema", schema, "-q"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert secret not in err
    assert code == {"wrong password": 4, "unreachable": 4, "bad url": 2, "not postgres": 2}[case], err
    want = {"wrong password": "password authentication failed", "unreachable": "cannot connect",
            "bad url": "sslmode", "not postgres": "the only database target is postgresql://"}[case]
    assert want in err


@pytest.mark.parametrize("url", [
    "postgresql://bot:p@ss/w:rd@db.example:5432/bot?sslmode=require",
    "postgres://bot:Hunter2-xyzzy@127.0.0.1/bot",
    "postgresql://127.0.0.1/bot?user=bot&password=Hunter2-xyzzy",
])
def test_redact_hides_every_form_of_password(url):
    out = pgm.redact(url)
    assert "Hunter2" not in out and "p@ss" not in out and "w:rd" not in out and "***" in out


def test_odd_schema_table_and_column_names_are_quoted_not_interpreted(pg_url):
    conn = sqlite3.connect(":memory:")
    conn.execute('CREATE TABLE "Users ""x""; DROP TABLE y" ("Chat Id" INTEGER PRIMARY KEY, "naMe" TEXT)')
    conn.execute("INSERT INTO \"Users \"\"x\"\"; DROP TABLE y\" VALUES (1, 'a')")
    schema = 'My Schema"; --'

    async def go():
        pg = await pgm.connect(pg_url)
        try:
            return await pgm.load_state(pg, conn, schema, replace=False, position=None, url=pg_url)
        finally:
            await pg.close()

    report = asyncio.run(go())
    assert [t.name for t in report.tables] == ['Users "x"; DROP TABLE y']
    assert query(pg_url, 'SELECT "Chat Id", "naMe" FROM "My Schema""; --"."Users ""x""; DROP TABLE y"') == [(1, "a")]
    query(pg_url, 'DROP SCHEMA "My Schema""; --" CASCADE')
    with pytest.raises(ConfigError):
        pgm.check_schema_name("x" * 64)
