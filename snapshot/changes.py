"""The content of one delta: full row images and deletions keyed by primary key, per table.

`core/` captures a `ChangeSet` at a consistent cut; `snapshot/` encodes it into a delta document and,
on restore, applies it to a SQLite connection. Applying is idempotent: replaying a change set twice,
or a superset after a partial one, yields the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: A SQLite value as Python sees it: None, int (64-bit), float, str, bytes.
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

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def is_empty(self) -> bool:
        return len(self) == 0
