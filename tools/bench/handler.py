"""The `handler` measure: the storage part of each clicker reply, on tgsnap, PostgreSQL and the article's way.

One dialogue of the clicker's mix (9 clicks to 1 rating, random registered users, message ids growing as
Telegram's do) is served three ways on the same population, one reply at a time, and each reply's
storage work is timed (what the handler waits for before it can answer):

- tgsnap: `bot.users.Users` over a live `core.Store` restored from storage (the bot's own code; the
  flush loop is idle during the timing, its cost is the `writes` measure's);
- PostgreSQL through asyncpg, the same queries in PostgreSQL's dialect and the same index, on
  127.0.0.1 and behind a 2 ms round trip (`tools.bench.delayproxy` in its own process: a managed
  database in the same region, as the article's RDS was);
- the article's method: its own table (no key, no index) and its `str.format` queries on in-memory
  SQLite (fewer replies: each is a full scan).

PostgreSQL is a throw-away server started from the installed binaries (`tools.bench.pgserver`), or the
one given with `--postgres URL` (its `public.users` is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.bench import article, population
from tools.bench.measures import Context, measure

CLICK_SHARE = 0.9
TOP = 15

PG_DDL = ("CREATE TABLE users (chat_id bigint PRIMARY KEY, name text NOT NULL, clicks bigint NOT NULL DEFAULT 0, "
          "last_message_id bigint NOT NULL DEFAULT 0, username text, registered_at double precision)")
PG_INDEX = "CREATE INDEX users_by_clicks ON users (clicks DESC, chat_id ASC)"
# bot/users.py's queries in PostgreSQL's dialect (docs/migrating.md shows them; tests/postgres runs them
# against a followed replica beside the bot's own)
PG_REGISTER = ("INSERT INTO users (chat_id, name, username, registered_at) VALUES ($1, $2, $3, $4) ON CONFLICT "
               "(chat_id) DO UPDATE SET username = EXCLUDED.username WHERE users.username IS DISTINCT FROM "
               "EXCLUDED.username")
PG_NAME = "SELECT name FROM users WHERE chat_id = $1"
PG_CLICK = ("UPDATE users SET clicks = clicks + (last_message_id < $2)::int, last_message_id = greatest("
            "last_message_id, $2) WHERE chat_id = $1 RETURNING clicks")
PG_TOTAL = "SELECT count(*) FROM users"
PG_TOP = "SELECT name, clicks FROM users ORDER BY clicks DESC, chat_id ASC LIMIT $1"


def dialogue(ids: list[int], n: int, seed: int) -> list[tuple[str, int, int]]:
    """`n` replies: ("click", chat_id, message_id) or ("rating", 0, 0)."""
    rng = random.Random(seed)
    out, msg = [], 1000
    for _ in range(n):
        msg += 1
        out.append(("click", rng.choice(ids), msg) if rng.random() < CLICK_SHARE else ("rating", 0, 0))
    return out


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    def q(xs: list[float], p: float) -> float:
        if len(xs) == 1:
            return xs[0]
        return statistics.quantiles(xs, n=100, method="inclusive")[int(p) - 1]

    out: dict[str, Any] = {}
    for kind in ("click", "rating", "mix"):
        xs = samples["click"] + samples["rating"] if kind == "mix" else samples[kind]
        if xs:
            out[kind] = {"n": len(xs), "p50_us": round(q(xs, 50) * 1e6, 1), "p99_us": round(q(xs, 99) * 1e6, 1),
                         "mean_us": round(statistics.fmean(xs) * 1e6, 1)}
    if out.get("mix"):  # the whole distribution, for --plot: percentiles 1..99 of the mix
        xs = samples["click"] + samples["rating"]
        qs = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else xs * 99
        out["mix"]["percentiles_us"] = [round(v * 1e6, 1) for v in qs]
    return out


def clicker_rows(ctx: Context) -> list[tuple[int, str, int, int]]:
    return ctx.cached("clicker_rows", lambda: [(c, name, clicks, 0) for c, name, clicks, _s in
                                               population.users(ctx.users, ctx.seed)])


async def run_tgsnap(ctx: Context, ops) -> dict[str, list[float]]:
    from bot.users import SCHEMA, Users
    from core import Store, StoreConfig
    from snapshot.backends.local import LocalDirBackend
    from tools.bench.store import seed

    db = sqlite3.connect(":memory:")
    for stmt in SCHEMA:
        db.execute(stmt)
    db.executemany("INSERT INTO users (chat_id, name, clicks, last_message_id) VALUES (?, ?, ?, ?)",
                   clicker_rows(ctx))
    db.commit()
    path = Path(tempfile.mkdtemp(prefix="tgsnap-bench-handler-"))
    try:
        await seed(LocalDirBackend(path, fsync=False), db)
        db.close()
        store = await Store.open(LocalDirBackend(path, fsync=False), schema=SCHEMA,
                                 config=StoreConfig(flush_interval=3600.0, writer_id="tgsnap-bench-handler"))
        try:
            users = Users(store)
            samples: dict[str, list[float]] = {"click": [], "rating": []}
            pc = time.perf_counter
            for kind, chat, msg in ops:
                t0 = pc()
                if kind == "click":
                    users.click(chat, msg)
                else:
                    users.rating(TOP)
                samples[kind].append(pc() - t0)
            return samples
        finally:
            await store.abandon()  # nothing to keep: do not ship the bench's clicks
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def run_article(ctx: Context, ops) -> dict[str, list[float]]:
    conn = article.restore(ctx.article["json"])  # the article's table: no key, no index
    cur = conn.cursor()
    samples: dict[str, list[float]] = {"click": [], "rating": []}
    pc = time.perf_counter
    for kind, chat, _msg in ops:
        t0 = pc()
        if kind == "click":  # the article's handler, verbatim in spirit (str.format and all)
            cur.execute("SELECT * FROM users where chatid={}".format(chat))  # noqa: UP032
            data = cur.fetchone()
            if data is not None:
                cur.execute("UPDATE users SET click = {} WHERE chatid = {}".format(data[2] + 1, chat))  # noqa: UP032
                conn.commit()
        else:
            cur.execute("SELECT * FROM users ORDER BY click DESC LIMIT 15")
            cur.fetchall()
            cur.execute("SELECT COUNT(chatid) FROM users")
            cur.fetchone()
        samples[kind].append(pc() - t0)
    conn.close()
    return samples


async def load_postgres(url: str, rows) -> str:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS users")
        await conn.execute(PG_DDL)
        await conn.copy_records_to_table("users", records=rows, columns=["chat_id", "name", "clicks",
                                                                          "last_message_id"])
        await conn.execute(PG_INDEX)
        await conn.execute("VACUUM ANALYZE users")  # a settled table, as a running bot's would be
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def run_postgres(url: str, ops) -> dict[str, list[float]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        click = await conn.prepare(PG_CLICK)
        total = await conn.prepare(PG_TOTAL)
        top = await conn.prepare(PG_TOP)
        samples: dict[str, list[float]] = {"click": [], "rating": []}
        pc = time.perf_counter
        for kind, chat, msg in ops:
            t0 = pc()
            if kind == "click":
                await click.fetchval(chat, msg)
            else:
                await total.fetchval()
                await top.fetch(TOP)
            samples[kind].append(pc() - t0)
        return samples
    finally:
        await conn.close()


@contextlib.contextmanager
def delay_proxy(target_port: int, rtt: float):
    proc = subprocess.Popen([sys.executable, "-m", "tools.bench.delayproxy", "--to", str(target_port),
                             "--rtt", str(rtt)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            raise RuntimeError("the delay proxy did not start")
        yield int(line)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 5432


def _with_port(url: str, port: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    host = u.netloc.rsplit("@", 1)
    auth = host[0] + "@" if len(host) == 2 else ""
    return urlunsplit((u.scheme, f"{auth}127.0.0.1:{port}", u.path, u.query, u.fragment))


def postgres_url(ctx: Context) -> str:
    """--postgres URL, or a throw-away server started once per run (handler and e2e share it; the
    Context's close() stops it). Raises pgserver.NoPostgres when none can be started."""
    from tools.bench import pgserver

    given = getattr(ctx, "postgres_url", None)
    if given:
        return given

    def start():
        server = pgserver.create()
        ctx.on_close(lambda: pgserver.destroy(server))
        return server

    return ctx.cached("pgserver", start).url()


def handler_ops(ctx: Context) -> int:
    return getattr(ctx, "handler_ops", None) or (300 if ctx.users <= 50_000 else 5000)


@measure("handler", "the storage part of each clicker reply (clicks + ratings): tgsnap vs PostgreSQL via asyncpg "
                    "(loopback and 2 ms RTT) vs the article's method")
def handler(ctx: Context) -> dict[str, Any]:
    from tools.bench import pgserver

    n = handler_ops(ctx)
    ids = [r[0] for r in clicker_rows(ctx)]
    ops = dialogue(ids, n, ctx.seed)
    # the article's way scans the whole table per reply (~55 ms at 1 M users): the same dialogue's first
    # replies, 200 at 1 M users (enough for a p99 of its slow replies, in ~11 s)
    article_ops = ops[: max(50, min(n, 200_000_000 // max(1, ctx.users)))]
    ctx.log(f"handler: tgsnap, {n} replies ...")
    tg = asyncio.run(run_tgsnap(ctx, ops))
    ctx.log(f"handler: the article's method, {len(article_ops)} replies ...")
    art = run_article(ctx, article_ops)

    given = getattr(ctx, "postgres_url", None)
    try:
        url = postgres_url(ctx)
    except pgserver.NoPostgres as e:
        return {"skipped": str(e), "tgsnap": summary(tg), "article": summary(art)}
    ctx.log(f"handler: loading {ctx.users} users into PostgreSQL ...")
    version = asyncio.run(load_postgres(url, clicker_rows(ctx)))
    ctx.log(f"handler: PostgreSQL on 127.0.0.1, {n} replies ...")
    pg_local = asyncio.run(run_postgres(url, ops))
    ctx.log(f"handler: PostgreSQL behind a 2 ms round trip, {n} replies ...")
    with delay_proxy(_port(url), 0.002) as port:
        pg_far = asyncio.run(run_postgres(_with_port(url, port), ops))

    out = {
        "replies": n,
        "mix": {"clicks": CLICK_SHARE, "ratings": round(1 - CLICK_SHARE, 2), "top": TOP},
        "postgres": {"version": version, "server": "given (--postgres)" if given else "started for the run",
                     "driver": "asyncpg (prepared statements)"},
        "tgsnap": summary(tg),
        "postgres_loopback": summary(pg_local),
        "postgres_2ms": summary(pg_far),
        "article": summary(art),
    }
    ratios = {}
    for base in ("postgres_loopback", "postgres_2ms", "article"):
        for kind in ("click", "rating", "mix"):
            a, b = out["tgsnap"].get(kind), out[base].get(kind)
            if a and b:
                ratios[f"{kind}_p99_vs_{base}"] = round(a["p99_us"] / b["p99_us"], 4) if b["p99_us"] else None
    out["ratios"] = ratios
    worst = max(ratios["mix_p99_vs_postgres_loopback"], ratios["mix_p99_vs_postgres_2ms"])
    out["target"] = "handler p99 <= 0.1 x PostgreSQL's (clicks + ratings), behind 2 ms and on loopback"
    out["meets_target"] = bool(worst <= 0.1)
    return out
