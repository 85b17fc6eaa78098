"""Statements whose changed rows are known from their text and parameters alone ("proven plans").

The tracking triggers (core.tracker) cost about a third of a plain `UPDATE ... WHERE pk = ?`: SQLite codes
a trigger program into every such statement and the program calls into Python per row. For the common
statements a bot runs, the row they change is the one whose key is bound: `Store.execute` can mark that
key itself, with the triggers dropped ("quiet mode"). A plan exists only for a statement of one of these
shapes, on a table where nothing else can happen as a side effect:

- `UPDATE t SET ... WHERE k1 = ? [AND k2 = ? ...] [AND col <op> ? | literal | IS [NOT] NULL ...]` (every key
  column compared with a parameter, further conditions only narrowing it, all ANDs; no key column,
  subquery FROM, RETURNING, comment or quoted identifier in SET);
- `DELETE FROM t WHERE ...` (the same WHERE);
- `INSERT [OR IGNORE] INTO t (cols) VALUES (?, ...)` with every key column bound, optionally
  `ON CONFLICT (key) DO NOTHING` or `ON CONFLICT (key) DO UPDATE SET ... [WHERE ...]` (no key column);
- `SELECT ...` (marks nothing);

and the table has no trigger of its own (main or temp), is referenced by no foreign key, and its
definition has no `REPLACE` conflict clause (a REPLACE deletes a conflicting row without counting it in
`total_changes`). Named parameters (`:name`) work as well as `?`. Each key column must have INTEGER
affinity, or TEXT affinity with BINARY collation: then the bound value, loaded into the capture's key
table (declared with the key's type, so it gets the same affinity conversion the comparison applied),
names exactly the row the statement matched (a NOCASE or NUMERIC key could match a row stored under
another value).

The accounting that makes it exact: while quiet, every change counted in `total_changes` must be a
plan's own. A plan statement whose `rowcount` is 1 appends its key to the table's pending list, so
`Tracker.expected_changes` (the folded lists) plus the pending lengths is the number of such changes.
A write nobody marked (a raw connection, or a side effect no check foresaw: a function that writes, a
trigger created behind Store's back) leaves `total_changes` ahead; the tracker notices at the next
capture or statement that needs the triggers, puts them back, and the flusher ships that cut as a
snapshot (`Tracker.check_bypass`). Anything without a plan runs with the triggers back
(`Tracker.go_loud`).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from core.schema import TableSchema

#: an identifier as the plans accept it: bare, or "double-quoted" without quotes inside.
_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_]*|"[^"]+")'
_PARAM = r"(?:\?|:[A-Za-z_][A-Za-z0-9_]*)"
_TABLE = rf"(?:main\s*\.\s*)?(?P<table>{_IDENT})"
#: one conjunct of a WHERE: `col = ?` (a key column, when it is one), or a plain comparison of a column with
#: a parameter or literal, which only narrows the match further. No OR, no parentheses: all ANDs.
_LITERAL = r"(?:NULL|'(?:[^']|'')*'|-?[0-9]+(?:\.[0-9]+)?)"
_COND = (rf"{_IDENT}\s*(?:(?:=|==|<>|!=|<=|>=|<|>)\s*(?:{_PARAM}|{_LITERAL})|\s+IS\s+(?:NOT\s+)?NULL)")
_WHERE = rf"(?P<where>{_COND}(?:\s+AND\s+{_COND})*)"
_END = r"\s*;?\s*$"
_UPDATE = re.compile(rf"\s*UPDATE\s+{_TABLE}\s+SET\s+(?P<set>.+?)\s+WHERE\s+{_WHERE}{_END}", re.I | re.S)
_DELETE = re.compile(rf"\s*DELETE\s+FROM\s+{_TABLE}\s+WHERE\s+{_WHERE}{_END}", re.I | re.S)
_INSERT = re.compile(
    rf"\s*INSERT\s+(?:OR\s+IGNORE\s+)?INTO\s+{_TABLE}\s*\((?P<cols>[^()]*)\)\s*VALUES\s*\((?P<vals>[^()]*)\)"
    rf"(?:\s+ON\s+CONFLICT\s*\((?P<target>[^()]*)\)\s*DO\s+(?:NOTHING|UPDATE\s+SET\s+(?P<set>.+?)))?{_END}",
    re.I | re.S,
)
_SELECT = re.compile(r"\s*SELECT\b", re.I)
_STRING = re.compile(r"'(?:[^']|'')*'")
#: what may not appear in a SET list (outside string literals): comments, statement ends, quoted or
#: numbered identifiers and parameters (they could hide a key column or shift parameter positions).
_UNSAFE = re.compile(r'--|/\*|;|["`\[]|\?\d|[@$]|\bRETURNING\b|\bFROM\b', re.I)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Plan:
    """How to learn the key a statement touches, from its parameters."""

    #: the table's pending keys (`_TableTracking.pending`): Store appends the key of each row changed.
    pending: list[Any] | None
    #: params -> key (an `itemgetter`: a value, or a tuple for a composite key); None for a read.
    key: Any

    def takes(self, params: Any) -> bool:
        """Whether the key can be read from these parameters (`Store.execute` reads it with `key`).

        `itemgetter` reads the item sqlite3 binds from any container sqlite3 accepts (a sequence for
        `?`, a mapping for `:name`); what it cannot read (a dict for `?`, a tuple for `:name`, too few
        values) takes the trigger path."""
        try:
            self.key(params)
        except (LookupError, TypeError):
            return False
        return True


#: the plan of every SELECT: nothing to mark.
READ = Plan(pending=None, key=None)


def _unquote(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name


def _exact_key(schema: TableSchema, i: int) -> bool:
    """Whether a bound value names the stored key it matches (see the module docstring)."""
    typ = schema.pk_types[i].upper()
    if "INT" in typ:
        return True
    return any(word in typ for word in ("CHAR", "CLOB", "TEXT")) and schema.pk_collations[i].upper() == "BINARY"


def _safe_set(text: str, pk: tuple[str, ...]) -> str | None:
    """`text` (a SET list) with its string literals blanked, or None if it might touch a key column."""
    rest = _STRING.sub("''", text)
    if "'" in _STRING.sub("", text) or _UNSAFE.search(rest):
        return None
    keys = {k.lower() for k in pk}
    if any(word.lower() in keys for word in _WORD.findall(rest)):
        return None
    return rest


def _params(text: str) -> list[str]:
    """The parameter markers of `text` in order ('?' or ':name')."""
    return re.findall(r"\?|:[A-Za-z_][A-Za-z0-9_]*", text)


def plan_for(sql: str, tables: dict[str, tuple[TableSchema, list[Any]]], conn: sqlite3.Connection) -> Plan | None:
    """A plan for `sql`, or None when it cannot be proven exact. `tables`: lower-cased name ->
    (schema, pending-key list) of every tracked table."""
    if _SELECT.match(sql):
        return READ if ";" not in _STRING.sub("", sql).rstrip().rstrip(";") else None
    m = _UPDATE.match(sql) or _DELETE.match(sql) or _INSERT.match(sql)
    if m is None:
        return None
    entry = tables.get(_unquote(m["table"]).lower())
    if entry is None:
        return None
    schema, pending = entry
    if not _side_effect_free(conn, schema.name):
        return None
    pk_lower = [k.lower() for k in schema.pk]
    markers: list[str] = []  # every parameter marker of the statement, in order
    bound: dict[str, int] = {}  # key column -> index of its marker in `markers`
    if m.groupdict().get("cols") is not None:  # INSERT
        cols = [_unquote(c.strip()).lower() for c in m["cols"].split(",")]
        vals = [v.strip() for v in m["vals"].split(",")]
        if len(cols) != len(vals) or len(set(cols)) != len(cols) or not all(re.fullmatch(_PARAM, v) for v in vals):
            return None
        if m["target"] is not None:
            target = sorted(_unquote(c.strip()).lower() for c in m["target"].split(","))
            if target != sorted(pk_lower):
                return None
        markers = list(vals)
        bound = {col: i for i, col in enumerate(cols) if col in pk_lower}
        if m["set"] is not None:  # DO UPDATE SET ... [WHERE ...]: it can only update the conflicting row
            rest = _safe_set(m["set"], schema.pk)
            if rest is None:
                return None
            markers += _params(rest)
    else:
        if m.groupdict().get("set") is not None:  # UPDATE
            rest = _safe_set(m["set"], schema.pk)
            if rest is None:
                return None
            markers = _params(rest)
        # Literals blanked first, so an AND or a '?' inside a string splits or counts nothing.
        for cond in re.split(r"\s+AND\s+", _STRING.sub("''", m["where"]).strip(), flags=re.I):
            key = re.fullmatch(rf"({_IDENT})\s*=\s*({_PARAM})", cond.strip())
            col = _unquote(key[1]).lower() if key else None
            if key and col in pk_lower:
                if col in bound:
                    return None
                bound[col] = len(markers)
            markers += _params(cond)
    if sorted(bound) != sorted(pk_lower):
        return None
    kinds = {mk[0] for mk in markers}
    if kinds == {":"}:
        getter = itemgetter(*(markers[bound[k]][1:] for k in pk_lower))
    elif kinds == {"?"}:
        getter = itemgetter(*(bound[k] for k in pk_lower))  # type: ignore[arg-type]
    else:
        return None
    if not all(_exact_key(schema, i) for i in range(len(schema.pk))):
        return None
    if m.groupdict().get("cols") is not None and _rowid_alias(schema):
        getter = _not_null(getter)  # NULL bound to an INTEGER PRIMARY KEY inserts under a new rowid
    return Plan(pending=pending, key=getter)


def _rowid_alias(schema: TableSchema) -> bool:
    return not schema.without_rowid and len(schema.pk) == 1 and schema.pk_types[0].upper() == "INTEGER"


def _not_null(getter: Any) -> Any:
    def key(params: Any) -> Any:
        value = getter(params)
        if value is None:
            raise TypeError("NULL key: SQLite picks the rowid")  # the trigger path learns it
        return value

    return key


def _side_effect_free(conn: sqlite3.Connection, table: str) -> bool:
    """No trigger on `table` (main or temp, tgsnap's own aside), no foreign key referring to it, and no
    REPLACE conflict clause in its definition."""
    if conn.execute(
        "SELECT 1 FROM main.sqlite_schema WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE "
        "UNION ALL SELECT 1 FROM temp.sqlite_schema WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE "
        "AND name NOT LIKE '!_tgsnap!_%' ESCAPE '!'",
        (table, table),
    ).fetchone():
        return False
    (sql,) = conn.execute("SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if re.search(r"\bREPLACE\b", sql, re.I):
        return False
    for (other,) in conn.execute("SELECT name FROM main.sqlite_schema WHERE type = 'table'").fetchall():
        for row in conn.execute("SELECT \"table\" FROM pragma_foreign_key_list(?)", (other,)):
            if row[0].lower() == table.lower():
                return False
    return True
