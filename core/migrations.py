"""Ordered, versioned schema migrations, each applied exactly once per storage.

    MIGRATIONS = [
        Migration(1, "ALTER TABLE users ADD COLUMN username TEXT"),
        Migration(2, "CREATE INDEX users_username ON users (username)", backfill),  # backfill(tx) is a callable
    ]
    store = await Store.open(backend, schema=CURRENT_SCHEMA, migrations=MIGRATIONS)

The schema version lives in the database itself, as `PRAGMA user_version`, so it travels in snapshot
images and in delta bodies (version 2 carries it), and the replica is told it for the manifest.

At open, after restore: storage with no application table is new, so the declared schema is created and
the version set to the newest migration's (migrations describe how old storage reaches the declared
schema; they never run on new storage). Otherwise every migration above the stored version runs, in
order, each in one `store.transaction()` that also sets `user_version`, then `flush()`: the migration
and its version reach storage in one delta, or not at all (a crash before the flush returns leaves the
old version in storage, and the next open runs it again from there). Storage of a version above the
newest migration was written by newer code and is refused. After migrating, every declared table must
equal its stored form (columns, types, defaults, keys); one that differs is refused, never kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.schema import quote
from snapshot.errors import ConfigError

#: a migration step: one SQL statement, or a callable given the open Transaction (may be async).
Step = str | Callable[..., Any]


@dataclass(frozen=True)
class Migration:
    version: int
    steps: tuple[Step, ...]

    def __init__(self, version: int, *steps: Step):
        if not isinstance(version, int) or isinstance(version, bool) or not 0 < version < 2**31:
            raise ConfigError(f"migration version must be an integer in 1 .. 2**31-1, got {version!r}")
        if not steps:
            raise ConfigError(f"migration {version} has no steps")
        for step in steps:
            if not (isinstance(step, str) or callable(step)):
                raise ConfigError(f"migration {version}: a step is SQL text or a callable, got {step!r}")
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "steps", tuple(steps))


def check_order(migrations: Iterable[Migration]) -> list[Migration]:
    out = list(migrations)
    for m in out:
        if not isinstance(m, Migration):
            raise ConfigError(f"migrations must be Migration objects, got {m!r}")
    versions = [m.version for m in out]
    if versions != sorted(set(versions)):
        raise ConfigError(f"migration versions must be strictly ascending, got {versions}")
    return out


def newest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def table_shape(conn: sqlite3.Connection, name: str) -> tuple:
    """What makes two declarations of a table the same table: columns (name, type, NOT NULL, default,
    key position, hidden) in order, and WITHOUT ROWID. Formatting of the SQL text does not count."""
    cols = conn.execute('SELECT name, upper(type), "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?)',
                        (name,)).fetchall()
    row = conn.execute("SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?",
                       (name,)).fetchone()
    return tuple(cols), tuple(row or ())


def describe_difference(live: sqlite3.Connection, scratch: sqlite3.Connection, name: str) -> str:
    a, b = table_shape(live, name), table_shape(scratch, name)
    stored = {c[0]: c for c in a[0]}
    declared = {c[0]: c for c in b[0]}
    parts = []
    if set(declared) - set(stored):
        parts.append("declared but not stored: " + ", ".join(sorted(set(declared) - set(stored))))
    if set(stored) - set(declared):
        parts.append("stored but not declared: " + ", ".join(sorted(set(stored) - set(declared))))
    changed = [c for c in declared if c in stored and declared[c] != stored[c]]
    if changed:
        parts.append("different type/default/key: " + ", ".join(changed))
    if not parts:
        parts.append("column order or table options differ")
    return f"table {quote(name)} in storage differs from its declaration ({'; '.join(parts)})"
