"""The measure bodies, one per BRIEF section 5 line, each against the article's method on the same data."""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any

from snapshot.changes import ChangeSet, TableChanges
from snapshot.delta import encode_delta
from tools.bench.measures import Context, measure, ratio, timed

USERS_COLUMNS = ["chatid", "name", "click", "state"]


def _verdict(value: float, op: str, target: float) -> dict[str, Any]:
    ok = value <= target if op == "<=" else value >= target
    return {"target": f"{op} {target}", "meets_target": ok}


def _dirty_changeset(ctx: Context, fraction: float) -> ChangeSet:
    """What the Store captures after `fraction` of users clicked once: their full row images."""
    db: sqlite3.Connection = ctx.db
    rng = random.Random(ctx.seed + 1)
    ids = [r[0] for r in db.execute("SELECT chatid FROM users")]
    picked = rng.sample(ids, max(1, int(len(ids) * fraction)))
    rows: list[tuple] = []
    for chunk in range(0, len(picked), 900):
        keys = picked[chunk:chunk + 900]
        marks = ",".join("?" * len(keys))
        rows.extend(db.execute(f"SELECT chatid, name, click + 1, state FROM users WHERE chatid IN ({marks})", keys))
    ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()[0]
    table = TableChanges("users", ddl, USERS_COLUMNS, ["chatid"], upserts=rows)
    return ChangeSet(time.time(), {"users": table})


@measure("delta", "bytes shipped per flush with 1 % of users dirty, vs the article's full JSON")
def delta(ctx: Context) -> dict[str, Any]:
    changes = _dirty_changeset(ctx, 0.01)
    built = timed(lambda: encode_delta(changes, epoch=1, seq=1), ctx.repeats)
    size = len(built.result)
    r = ratio(size, ctx.article["json_bytes"])
    return {
        "dirty_rows": len(changes),
        "delta_bytes": size,
        "article_json_bytes": ctx.article["json_bytes"],
        "ratio_vs_article_json": r,
        "encode_seconds": round(built.wall, 4),
        **_verdict(r, "<=", 0.01),
    }


def _build_snapshot(ctx: Context):
    """Capture + shard + compress + wrap into part documents: what a snapshot costs before upload."""
    from snapshot import image
    from snapshot.envelope import Kind, encode, overhead
    from snapshot.replica import ReplicaConfig

    cfg = ReplicaConfig()
    built = image.build(image.capture(ctx.db), shard_size=cfg.shard_size, level=cfg.zstd_level,
                        parallelism=cfg.parallelism)
    body_size = cfg.part_size - overhead(False)
    parts = [encode(Kind.SNAPSHOT_PART, body, epoch=1, seq=0, compress=False)
             for shard in built.shards for body in shard.cut(body_size)]
    return built, parts


@measure("snapshot", "full snapshot size and build CPU (capture + compress), vs the article's JSON and dump")
def snapshot(ctx: Context) -> dict[str, Any]:
    art = ctx.article
    built = timed(lambda: _build_snapshot(ctx), ctx.repeats)
    img, parts = built.result
    size = sum(len(p) for p in parts)
    size_ratio = ratio(size, art["json_bytes"])
    cpu_ratio = ratio(built.cpu, art["dump_seconds"])
    return {
        "image_bytes": img.image_size,
        "shards": len(img.shards),
        "parts": len(parts),
        "snapshot_bytes": size,
        "article_json_bytes": art["json_bytes"],
        "size_ratio_vs_article_json": size_ratio,
        "size": _verdict(size_ratio, "<=", 0.30),
        "build_cpu_seconds": round(built.cpu, 4),
        "build_wall_seconds": round(built.wall, 4),
        "article_dump_seconds": round(art["dump_seconds"], 4),
        "build_cpu_ratio_vs_article_dump": cpu_ratio,
        "build_wall_ratio_vs_article_dump": ratio(built.wall, art["dump_seconds"]),
        "build": _verdict(cpu_ratio, "<=", 0.25),
    }
