"""The content of one delta: full row images and deletions keyed by primary key, per table.

`core/` captures a `ChangeSet` at a consistent cut; `snapshot/` encodes it into a delta document and,
on restore, applies it to a SQLite connection. Applying is idempotent: replaying a change set twice,
or a superset after a partial one, yields the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class RawText(bytes):
    """A TEXT value whose bytes are not valid UTF-8 (SQLite stores them as given: `CAST(X'C3' AS TEXT)`,
    `printf('%.3s', 'Аня')` cutting a character in half). It is TEXT, not BLOB: it compares, sorts and
    reports `typeof()` as text, so it must come back as text with exactly these bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"RawText({bytes(self)!r})"


#: A SQLite value as Python sees it: None, int (64-bit), float, str, bytes, or RawText (TEXT that is not
#: valid UTF-8; a bytes subclass, so test it before bytes).
Value = None | int | float | str | bytes


@dataclass
class TableChanges:
    name: str
    #: the table's CREATE TABLE statement (from sqlite_master), so a delta can recreate the table.
    ddl: str
    #: every column, in table order; `upserts` rows follow this order.
    columns: list[str]
    #: primary-key column names, in key order; `deletes` keys follow this order.
    pk: list[str]
    upserts: list[tuple[Value, ...]] = field(default_factory=list)
    deletes: list[tuple[Value, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


@dataclass
class ChangeSet:
    #: unix time (seconds, float) of the cut this change set was captured at.
    captured_at: float
    tables: dict[str, TableChanges] = field(default_factory=dict)
    #: schema statements (CREATE / ALTER / DROP ...) executed since the previous cut, in order; applied
    #: before the row records, which are images under the schema they leave. Delta body version 2 only.
    schema: list[str] = field(default_factory=list)
    #: `PRAGMA user_version` at the cut (body version 2 carries it; None: not known / version 1).
    user_version: int | None = None
    #: True when `user_version` differs from the previous cut's, so the change set must ship.
    version_changed: bool = False
    #: core's bookkeeping, never encoded: how many table renames the tracker had followed when this was
    #: captured, so a failed change set's keys follow only the renames made after it.
    renames_seen: int = field(default=0, repr=False, compare=False)

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def is_empty(self) -> bool:
        """Nothing to ship: no rows, no schema change, no new user_version."""
        return len(self) == 0 and not self.schema and not self.version_changed
