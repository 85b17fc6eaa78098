"""Copy a SQLite state into PostgreSQL: the type mapping, the schema, COPY, and a checksum compared after.

SQLite is dynamically typed: a column's declared type only gives it an *affinity*, and every value has
its own storage class (NULL, INTEGER, REAL, TEXT, BLOB). PostgreSQL needs one type per column, so each
column's type is the join of what its declared affinity promises and the storage classes its values
actually have (read with `typeof()`; docs/migrating.md has the table):

- affinity INTEGER -> bigint, REAL -> double precision, TEXT -> text; NUMERIC and BLOB (no declared type)
  promise nothing, so only the values decide (an empty such column: numeric / bytea).
- the join widens along bigint -> (double precision | numeric) -> text -> bytea: integers with reals
  become numeric (exact for every 64-bit integer and, through the shortest repr, every finite double;
  -0.0 becomes 0); anything with text becomes text (numbers as SQLite's own CAST(x AS TEXT) renders
  them); anything with a blob becomes bytea (text as its UTF-8 bytes, numbers as their text); a text
  value holding NUL or bytes that are not UTF-8 (PostgreSQL's text can hold neither) makes its column
  bytea (the exact bytes SQLite holds).

So a single-class column round-trips exactly, and a mixed one loads the way SQLite itself converts between
classes instead of failing. The checksum compared after the load is over the values as PostgreSQL holds
them (read back through the same connection, inside the load's transaction): it proves the server stored
what was sent, and the commit happens only when it matches.

Passwords never appear in messages: every error that names the server goes through `redact`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import hashlib
import json
import math
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from snapshot.apply import INTERNAL_PREFIX, quote
from snapshot.changes import RawText
from snapshot.errors import ConfigError, TgsnapError

try:  # an optional extra: pip install 'tgsnap[postgres]'
    import psycopg
    from psycopg import sql as pgsql
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

#: the cursor table a follower (or an export it continues from) keeps in the target schema.
CURSOR_TABLE = "_tgsnap_follow"
#: what of storage's schema the replica does not carry (views, triggers, untranslatable indexes ...),
#: each named with the seq and schema statement it came from: what `follow --check` reports.
NOTES_TABLE = "_tgsnap_follow_notes"
#: tgsnap's own tables in the target schema (never compared with the stored state).
OWN_TABLES = frozenset({CURSOR_TABLE, NOTES_TABLE})

BIGINT, FLOAT8, NUMERIC, TEXT, BYTEA = "bigint", "double precision", "numeric", "text", "bytea"
#: the widening order of the join (double precision and numeric both sit between bigint and text).
_RANK = {BIGINT: 0, FLOAT8: 1, NUMERIC: 2, TEXT: 3, BYTEA: 4}
_CLASS_TYPE = {"integer": BIGINT, "real": FLOAT8, "text": TEXT, "blob": BYTEA}
_EXACT = decimal.Context(prec=2000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


class PostgresError(TgsnapError):
    """The PostgreSQL side failed or refused (connection, existing tables, a checksum that differs)."""


class PostgresUnreachable(PostgresError):
    """The server could not be reached or refused the login; worth retrying for a follower."""


def _need_psycopg() -> None:
    if psycopg is None:
        raise ConfigError("PostgreSQL support needs psycopg 3: pip install 'tgsnap[postgres]'")


# ---------------------------------------------------------------------------------------------- URL


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs (also an unencoded '@' or '/' in
    the password: the user info ends at the last '@' before the query)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.split("?", 1)[0].rfind("@")
        if at >= 0 and ":" in rest[:at]:
            rest = rest[:at].split(":", 1)[0] + ":***" + rest[at:]
        url = scheme + sep + rest
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def _scrub(text: str, url: str) -> str:
    """`text` (a server or driver message) without the URL's password, whatever form it took."""
    text = text.replace(url, redact(url))
    try:
        pw = conninfo_to_dict(url).get("password")
    except Exception:
        pw = None
    if pw:
        text = text.replace(str(pw), "***")
    return text


def check_url(url: str) -> None:
    """Refuse what is not a PostgreSQL URL, naming the problem (never the password)."""
    _need_psycopg()
    if not re.match(r"(?i)^postgres(ql)?://", url):
        raise ConfigError(f"{redact(url)!r} is not a PostgreSQL URL: expected postgresql://user:password@host:port/"
                          "database")
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"bad PostgreSQL URL {redact(url)!r}: {_scrub(str(e), url)}") from None


async def connect(url: str, *, connect_timeout: float = 10.0):
    """An autocommit-off async connection; clear, password-free errors for the ways it fails."""
    check_url(url)
    try:
        # autocommit: every transaction is an explicit `async with conn.transaction()` block
        return await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, int(connect_timeout)),
                                                     autocommit=True)
    except psycopg.OperationalError as e:
        msg = _scrub(str(e).strip(), url)
        if "password authentication failed" in msg or "no password supplied" in msg:
            raise PostgresUnreachable(f"PostgreSQL at {redact(url)} refused the login: {msg}") from None
        raise PostgresUnreachable(f"cannot connect to PostgreSQL at {redact(url)}: {msg}") from None


def check_schema_name(name: str) -> None:
    if not name or len(name.encode()) > 63 or "\x00" in name:
        raise ConfigError(f"--schema {name!r}: a PostgreSQL schema name is 1..63 bytes, no NUL")


# ------------------------------------------------------------------------------------------ mapping


def affinity(declared: str | None) -> str:
    """SQLite's column affinity for a declared type (https://sqlite.org/datatype3.html §3.1)."""
    t = (declared or "").upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


_AFFINITY_TYPE = {"INTEGER": BIGINT, "REAL": FLOAT8, "TEXT": TEXT, "NUMERIC": None, "BLOB": None}
_EMPTY_TYPE = {"NUMERIC": NUMERIC, "BLOB": BYTEA}


def join(a: str | None, b: str | None) -> str | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    if {a, b} <= {BIGINT, FLOAT8, NUMERIC}:
        return NUMERIC  # any two distinct numeric kinds: only numeric holds both exactly
    return a if _RANK[a] > _RANK[b] else b


def pg_type(declared: str | None, classes: Iterable[str], has_nul: bool = False) -> str:
    """The PostgreSQL type for a column with this declared type whose values have these storage classes."""
    aff = affinity(declared)
    t = _AFFINITY_TYPE[aff]
    for c in classes:
        if c != "null":
            t = join(t, _CLASS_TYPE[c])
    if has_nul:
        t = BYTEA
    return t if t is not None else _EMPTY_TYPE[aff]


_casts = sqlite3.connect(":memory:", check_same_thread=False)  # only ever runs one statement at a time
#: what `reading` turns bytes that are not UTF-8 into (surrogateescape): such text cannot be PostgreSQL text.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def reading(conn: sqlite3.Connection):
    """SQLite TEXT that is not valid UTF-8 (SQLite stores whatever bytes it is given) read without an error:
    its undecodable bytes become lone surrogates, which `convert` turns back into the same bytes for bytea."""
    saved = conn.text_factory
    conn.text_factory = _text
    try:
        yield conn
    finally:
        conn.text_factory = saved


def _sqlite_text(v: int | float) -> str:
    """How SQLite itself renders a number as text (CAST(v AS TEXT)), so a mixed column reads as it would."""
    return _casts.execute("SELECT CAST(? AS TEXT)", (v,)).fetchone()[0]


class ValueMismatch(PostgresError):
    pass


def convert(v, t: str):
    """The Python value to send for SQLite value `v` into a column of PostgreSQL type `t`."""
    if v is None:
        return None
    if t == BIGINT:
        if type(v) is int:
            return v
    elif t == FLOAT8:
        if type(v) is float:
            return v
        if type(v) is int and abs(v) <= 2**53:
            return float(v)
    elif t == NUMERIC:
        if type(v) is int:
            return Decimal(v)
        if type(v) is float:
            if math.isnan(v):
                return Decimal("NaN")
            if math.isinf(v):
                return Decimal("Infinity") if v > 0 else Decimal("-Infinity")
            return Decimal(repr(v))
    elif t == TEXT:
        if type(v) is str:
            if "\x00" not in v and not _UNDECODABLE.search(v):
                return v
        elif type(v) in (int, float):
            return _sqlite_text(v)
    elif t == BYTEA:
        if type(v) is bytes:
            return v
        if type(v) is RawText:  # TEXT that is not UTF-8 (a delta's tag 5): its exact bytes
            return bytes(v)
        if type(v) is str:
            return v.encode("utf-8", "surrogateescape")  # undecodable text: its own bytes back (see `reading`)
        if type(v) in (int, float):
            return _sqlite_text(v).encode("ascii")
    raise ValueMismatch(f"a {type(v).__name__} value does not fit a PostgreSQL {t} column")


_PLAIN = (int, float, str, bytes, type(None))


def _norm(v):
    """A value as PostgreSQL holds it, in a form whose repr is canonical (for the checksum)."""
    if isinstance(v, Decimal):  # 1E+300 and 1000…0 are one numeric: compare normalized
        return ("numeric", str(_EXACT.normalize(v)) if v.is_finite() else str(v))
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if type(v) in _PLAIN:
        return v
    raise TypeError(f"unexpected value {type(v).__name__} in a checksum")


_MASK = (1 << 128) - 1


@dataclass
class Checksum:
    """Row count and an order-independent digest (sum of per-row BLAKE2b mod 2^128) of a table."""

    rows: int = 0
    digest: int = 0

    def add(self, row: tuple) -> None:
        # repr of a tuple of int/float/str/bytes/None is unambiguous and exact: it tells 1 from 1.0 from '1'
        # from b'1', keeps -0.0 and inf, and escapes lone surrogates; one hash per row keeps it cheap.
        if not all(type(v) in _PLAIN for v in row):
            row = tuple(_norm(v) for v in row)
        h = hashlib.blake2b(repr(row).encode(), digest_size=16).digest()
        self.rows += 1
        self.digest = (self.digest + int.from_bytes(h, "big")) & _MASK

    def __str__(self) -> str:
        return f"{self.rows} row(s), digest {self.digest:032x}"


# ------------------------------------------------------------------------------------------- schema


@dataclass
class Column:
    name: str
    declared: str
    type: str
    notnull: bool
    default: str | None  # a PostgreSQL DEFAULT expression, or None


@dataclass
class TableSpec:
    name: str
    columns: list[Column]
    pk: list[str]
    #: (name, unique, [(column, descending)]) for each index to recreate.
    indexes: list[tuple[str, bool, list[tuple[str, bool]]]] = field(default_factory=list)
    #: what could not be carried over (expression/partial indexes, collations, defaults), for the report.
    notes: list[str] = field(default_factory=list)

    def col(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _default(dflt: str | None, t: str, table: str, col: str, notes: list[str]) -> str | None:
    """SQLite's DEFAULT text (from PRAGMA table_info) as a PostgreSQL expression, where one exists."""
    if dflt is None:
        return None
    d = dflt.strip()
    while d.startswith("(") and d.endswith(")"):
        d = d[1:-1].strip()
    u = d.upper()
    if u == "NULL":
        return "NULL"
    if u in ("TRUE", "FALSE"):
        d = "1" if u == "TRUE" else "0"
    if _NUM.match(d):
        if t == TEXT:
            return "'" + _sqlite_text(int(d) if re.fullmatch(r"[+-]?\d+", d) else float(d)) + "'"
        if t == BYTEA:
            return "'" + d + "'::bytea"
        return d
    if re.fullmatch(r"'([^']|'')*'", d):
        if t in (BIGINT, FLOAT8, NUMERIC):
            notes.append(f"{table}.{col}: DEFAULT {dflt} is text in a {t} column; not recreated")
            return None
        return d + ("::bytea" if t == BYTEA else "")
    m = re.fullmatch(r"[xX]'([0-9a-fA-F]*)'", d)
    if m and t == BYTEA:
        return "'\\x" + m.group(1) + "'::bytea"
    stamps = {"CURRENT_TIMESTAMP": "YYYY-MM-DD HH24:MI:SS", "CURRENT_DATE": "YYYY-MM-DD",
              "CURRENT_TIME": "HH24:MI:SS"}
    if u in stamps and t == TEXT:
        # SQLite's are UTC text; the same text, not a PostgreSQL timestamp (the column is text).
        return f"to_char(now() AT TIME ZONE 'UTC', '{stamps[u]}')"
    notes.append(f"{table}.{col}: DEFAULT {dflt} has no PostgreSQL translation here; not recreated")
    return None


def user_tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name") if not r[0].startswith(INTERNAL_PREFIX)]


def column_classes(conn: sqlite3.Connection, table: str, col: str) -> tuple[set[str], bool]:
    """The storage classes present, and whether some text cannot be PostgreSQL text (NUL, not UTF-8)."""
    qt, qc = quote(table), quote(col)
    classes = {r[0] for r in conn.execute(f"SELECT DISTINCT typeof({qc}) FROM {qt}")}
    bad = False
    if "text" in classes:
        bad = conn.execute(f"SELECT 1 FROM {qt} WHERE typeof({qc}) = 'text' AND instr(CAST({qc} AS BLOB), x'00') > 0 "
                           "LIMIT 1").fetchone() is not None
        if not bad:
            # valid UTF-8? SQL cannot tell; a scan of the text values (bytes, decoded here) can
            cur = conn.execute(f"SELECT CAST({qc} AS BLOB) FROM {qt} WHERE typeof({qc}) = 'text'")
            for (b,) in cur:
                try:
                    b.decode("utf-8")
                except UnicodeDecodeError:
                    bad = True
                    break
    return classes, bad


def describe(conn: sqlite3.Connection, table: str, *, by_values: bool = True,
             classes: dict[str, tuple[set[str], bool]] | None = None) -> TableSpec:
    """The PostgreSQL shape of SQLite table `table`: column types (from the declared types and, if
    `by_values`, the values present; or the storage classes `classes` names per column, as a follower
    knows them from a delta's rows), NOT NULL, DEFAULT, primary key, indexes."""
    notes: list[str] = []
    info = conn.execute(f"PRAGMA table_xinfo({quote(table)})").fetchall()
    for name in (table, *(r[1] for r in info)):
        if len(name.encode()) > 63:
            # PostgreSQL would cut it to 63 bytes (a NOTICE, no error): two names could collide, and the
            # follower would not find its own table again
            raise PostgresError(f"name {name!r} (table {table!r}) is {len(name.encode())} bytes; PostgreSQL "
                                "identifiers are at most 63: rename it before exporting")
    cols = []
    pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    for _cid, name, decl, notnull, dflt, pkpos, hidden in info:
        if hidden in (2, 3):
            notes.append(f"{table}.{name}: generated column exported as a plain column")
        if classes is not None:
            present, has_nul = classes.get(name, (set(), False))
        else:
            present, has_nul = column_classes(conn, table, name) if by_values else (set(), False)
        t = pg_type(decl, present, has_nul)
        cols.append(Column(name, decl or "", t, bool(notnull) or bool(pkpos),
                           _default(dflt, t, table, name, notes)))
    if not pk:
        notes.append(f"{table}: no PRIMARY KEY in SQLite; created without one (follow cannot key its rows)")
    spec = TableSpec(table, cols, pk, notes=notes)
    for _seq, iname, unique, origin, partial in conn.execute(f"PRAGMA index_list({quote(table)})"):
        if origin == "pk":
            continue
        if partial:
            notes.append(f"index {iname}: partial index not recreated")
            continue
        keys = [r for r in conn.execute(f"PRAGMA index_xinfo({quote(iname)})") if r[5]]
        if any(r[1] == -2 for r in keys):
            notes.append(f"index {iname}: expression index not recreated")
            continue
        if any(r[1] == -1 for r in keys):
            notes.append(f"index {iname}: indexes the rowid, which PostgreSQL does not have; not recreated")
            continue
        for r in keys:
            if r[4] and r[4].upper() != "BINARY":
                notes.append(f"index {iname}: column {r[2]} collation {r[4]} not carried over (PostgreSQL "
                             "compares with the database's collation)")
        name = iname if not iname.startswith("sqlite_autoindex_") else autoindex_name(table, [r[2] for r in keys])
        spec.indexes.append((name, bool(unique), [(r[2], bool(r[3])) for r in keys]))
    return spec


def autoindex_name(table: str, columns: list[str]) -> str:
    """The PostgreSQL name of a UNIQUE constraint SQLite keeps as `sqlite_autoindex_<table>_N`."""
    return f"{table}_{'_'.join(columns)}_key"


def schema_of(conn: sqlite3.Connection) -> str:
    """The main schema's objects as text (JSON `[[type, name, sql], ...]` in `sqlite_schema` order, the
    automatic ones left out): what a follower records beside its cursor, so it can rebuild the SQLite
    schema its replica stands at and replay the next schema statements on it (snapshot.postgres_ddl)."""
    rows = conn.execute("SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE "
                        "'sqlite\\_%' ESCAPE '\\' ORDER BY rowid").fetchall()
    return json.dumps([list(r) for r in rows], ensure_ascii=False)


def schema_notes(conn: sqlite3.Connection) -> list[str]:
    """The views and triggers of a state: never carried to PostgreSQL (a trigger's effects arrive as rows)."""
    return [f"{typ} {name!r} is not carried to PostgreSQL (views and triggers are not replicated; a trigger's "
            "effects arrive as rows)" for typ, name in conn.execute(
                "SELECT type, name FROM sqlite_schema WHERE type IN ('view', 'trigger') AND sql IS NOT NULL "
                "ORDER BY rowid") if not name.startswith(INTERNAL_PREFIX)]


def create_statements(schema: str, spec: TableSpec) -> list:
    """CREATE TABLE then CREATE INDEX statements (composed psycopg SQL) for `spec` in `schema`."""
    s = pgsql.Identifier(schema)
    defs = []
    for c in spec.columns:
        part = pgsql.SQL("{} {}").format(pgsql.Identifier(c.name), pgsql.SQL(c.type))
        if c.notnull:
            part = pgsql.SQL("{} NOT NULL").format(part)
        if c.default is not None:
            part = pgsql.SQL("{} DEFAULT {}").format(part, pgsql.SQL(c.default))
        defs.append(part)
    if spec.pk:
        defs.append(pgsql.SQL("PRIMARY KEY ({})").format(pgsql.SQL(", ").join(map(pgsql.Identifier, spec.pk))))
    out = [pgsql.SQL("CREATE TABLE {}.{} ({})").format(s, pgsql.Identifier(spec.name), pgsql.SQL(", ").join(defs))]
    out += index_statements(schema, spec)
    return out


def index_statements(schema: str, spec: TableSpec) -> list:
    out = []
    for name, unique, keys in spec.indexes:
        if unique:
            # A constraint checked at commit, not an index checked per row: a delta may swap two rows' unique
            # values (SQLite's INSERT OR REPLACE copes row by row; the final images are consistent).
            out.append(pgsql.SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} UNIQUE ({}) "
                                 "DEFERRABLE INITIALLY DEFERRED").format(
                pgsql.Identifier(schema), pgsql.Identifier(spec.name), pgsql.Identifier(name),
                pgsql.SQL(", ").join(pgsql.Identifier(c) for c, _d in keys)))
            continue
        out.append(pgsql.SQL("CREATE {}INDEX {} ON {}.{} ({})").format(
            pgsql.SQL("UNIQUE " if unique else ""), pgsql.Identifier(name), pgsql.Identifier(schema),
            pgsql.Identifier(spec.name),
            pgsql.SQL(", ").join(pgsql.SQL("{} {}").format(pgsql.Identifier(c), pgsql.SQL("DESC" if d else "ASC"))
                                 for c, d in keys)))
    return out


# ------------------------------------------------------------------------------------------ loading


_NATURAL = {BIGINT: int, FLOAT8: float, TEXT: str, BYTEA: bytes}


def converted_rows(conn: sqlite3.Connection, spec: TableSpec) -> Iterator[tuple]:
    """The table's rows converted for its PostgreSQL types. The types were chosen from these very values
    (`describe`), so a value of its column's natural class needs no conversion or check."""
    types = [c.type for c in spec.columns]
    natural = tuple(_NATURAL.get(t) for t in types)
    cur = conn.execute(f"SELECT {', '.join(quote(c.name) for c in spec.columns)} FROM {quote(spec.name)}")
    for row in cur:
        if all(v is None or type(v) is k for v, k in zip(row, natural, strict=True)):
            yield row
            continue
        try:
            yield tuple(convert(v, t) for v, t in zip(row, types, strict=True))
        except ValueMismatch as e:  # the type was chosen from these very values: a bug if it happens
            raise PostgresError(f"table {spec.name!r}: {e}") from None


async def copy_into(cur, schema: str, spec: TableSpec, rows: Iterable[tuple]) -> Checksum:
    """COPY `rows` (already converted) into the table; the checksum of what was sent."""
    sent = Checksum()
    stmt = pgsql.SQL("COPY {}.{} ({}) FROM STDIN").format(
        pgsql.Identifier(schema), pgsql.Identifier(spec.name),
        pgsql.SQL(", ").join(pgsql.Identifier(c.name) for c in spec.columns))
    async with cur.copy(stmt) as copy:
        for row in rows:
            sent.add(row)
            await copy.write_row(row)
    return sent


async def table_checksum(cur, schema: str, spec: TableSpec) -> Checksum:
    """Read the table back and checksum it the same way (server-side cursor: memory stays bounded)."""
    got = Checksum()
    stmt = pgsql.SQL("SELECT {} FROM {}.{}").format(
        pgsql.SQL(", ").join(pgsql.Identifier(c.name) for c in spec.columns), pgsql.Identifier(schema),
        pgsql.Identifier(spec.name))
    await cur.execute(stmt)
    while batch := await cur.fetchmany(20000):
        for row in batch:
            got.add(row)
    return got


async def existing_tables(cur, schema: str) -> set[str]:
    await cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {r[0] for r in await cur.fetchall()}


@dataclass
class Position:
    """Where a state sits in the storage chain: what a follower continues from."""

    seq: int
    hash: str  # hex of the document hash at seq (the snapshot's base hash when no delta applied)
    epoch: int = 0
    storage: str = ""  # identity of the storage (storage id when the manifest has one, else its location)
    captured_at: float | None = None
    #: the SQLite schema of the state at seq (`schema_of`), when known: what schema statements replay on.
    sqlite_schema: str | None = None
    #: `PRAGMA user_version` of the state at seq, when known.
    user_version: int | None = None


async def lock_schema(cur, schema: str) -> None:
    """Serialize every tgsnap writer of `schema` (exports, followers) for the rest of the transaction: two
    at once would otherwise race on CREATE SCHEMA / CREATE TABLE before the cursor row exists to lock."""
    await cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('tgsnap:' || %s, 0))", (schema,))


async def ensure_cursor_table(cur, schema: str) -> None:
    s, t = pgsql.Identifier(schema), pgsql.Identifier(CURSOR_TABLE)
    await cur.execute(pgsql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (id int PRIMARY KEY CHECK (id = 1), storage text NOT NULL, "
        "seq bigint NOT NULL, hash text NOT NULL, epoch bigint NOT NULL, captured_at double precision, "
        "updated_at timestamptz NOT NULL DEFAULT now(), sqlite_schema text, user_version bigint)").format(s, t))
    # a cursor table written before schema replay: the two columns it lacks (NULL: not known)
    await cur.execute(pgsql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS sqlite_schema text, "
                                "ADD COLUMN IF NOT EXISTS user_version bigint").format(s, t))


async def write_cursor(cur, schema: str, pos: Position, *, ensure: bool = True) -> None:
    if ensure:  # a follower that read a cursor with the schema columns knows the table has them
        await ensure_cursor_table(cur, schema)
    await cur.execute(pgsql.SQL(
        "INSERT INTO {}.{} (id, storage, seq, hash, epoch, captured_at, sqlite_schema, user_version, updated_at) "
        "VALUES (1, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET storage = EXCLUDED.storage, "
        "seq = EXCLUDED.seq, hash = EXCLUDED.hash, epoch = EXCLUDED.epoch, captured_at = EXCLUDED.captured_at, "
        "sqlite_schema = EXCLUDED.sqlite_schema, user_version = EXCLUDED.user_version, "
        "updated_at = now()").format(pgsql.Identifier(schema), pgsql.Identifier(CURSOR_TABLE)),
        (pos.storage, pos.seq, pos.hash, pos.epoch, pos.captured_at, pos.sqlite_schema, pos.user_version))


async def read_cursor(cur, schema: str, *, lock: bool = False) -> Position | None:
    if CURSOR_TABLE not in await existing_tables(cur, schema):
        return None
    # to_jsonb of the whole row: a cursor table of an older tgsnap (no sqlite_schema column) reads too
    await cur.execute(pgsql.SQL("SELECT to_jsonb(c) FROM {}.{} AS c WHERE id = 1{}").format(
        pgsql.Identifier(schema), pgsql.Identifier(CURSOR_TABLE), pgsql.SQL(" FOR UPDATE" if lock else "")))
    r = await cur.fetchone()
    if r is None:
        return None
    c = r[0]
    return Position(seq=c["seq"], hash=c["hash"], epoch=c["epoch"], storage=c["storage"],
                    captured_at=c.get("captured_at"), sqlite_schema=c.get("sqlite_schema"),
                    user_version=c.get("user_version"))


@dataclass
class Note:
    """Something of storage's schema the replica does not carry, and where it came from."""

    seq: int
    statement: int | None  # the schema statement's number in its delta (None: found at a seed)
    sql: str | None
    note: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" + (f", schema statement {self.statement}" if self.statement else "")
        return f"{where}: {self.note}" + (f" [{_short(self.sql)}]" if self.sql else "")


def _short(sql: str, n: int = 160) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= n else one[:n] + "…"


async def write_notes(cur, schema: str, notes: list[Note], *, replace: bool) -> None:
    """Record `notes` (a seed `replace`s what an earlier state's notes said)."""
    s, t = pgsql.Identifier(schema), pgsql.Identifier(NOTES_TABLE)
    if not notes and not replace:
        return
    await cur.execute(pgsql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.{} (id bigserial PRIMARY KEY, seq bigint NOT NULL, statement int, "
        "sql text, note text NOT NULL, noted_at timestamptz NOT NULL DEFAULT now())").format(s, t))
    if replace:
        await cur.execute(pgsql.SQL("DELETE FROM {}.{}").format(s, t))
    for n in notes:
        await cur.execute(pgsql.SQL("INSERT INTO {}.{} (seq, statement, sql, note) VALUES (%s, %s, %s, %s)").format(
            s, t), (n.seq, n.statement, n.sql, n.note))


async def read_notes(cur, schema: str) -> list[Note]:
    if NOTES_TABLE not in await existing_tables(cur, schema):
        return []
    await cur.execute(pgsql.SQL("SELECT seq, statement, sql, note FROM {}.{} ORDER BY id").format(
        pgsql.Identifier(schema), pgsql.Identifier(NOTES_TABLE)))
    return [Note(*r) for r in await cur.fetchall()]


@dataclass
class TableReport:
    name: str
    rows: int
    checksum: str
    types: dict[str, str]


@dataclass
class LoadReport:
    schema: str
    tables: list[TableReport]
    notes: list[str]
    replaced: list[str]
    elapsed: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


#: `expect` value for load_state: do not look at the cursor.
ANY = object()


class CursorMoved(PostgresError):
    """The follow cursor is not where this process left it: another follower (or an export) moved it."""


async def load_state(pg, conn: sqlite3.Connection, schema: str, *, replace: bool,
                     position: Position | None, url: str = "", expect=ANY, stale: Iterable[str] = (),
                     notes: Iterable[Note] = ()) -> LoadReport:
    """Create every user table of `conn` in `schema`, COPY the rows, recreate keys and indexes, compare
    counts and checksums, record `position` as the follow cursor (with `conn`'s SQLite schema) and what
    the replica does not carry (`notes`, views, triggers, untranslated indexes); all in one transaction
    (`pg` must not be inside one). Existing tables of the same names are refused unless `replace` (then
    dropped in the same transaction, so readers see the old tables until the new ones are complete), and
    so are `stale` tables (a follower's own tables that the state no longer has: a table dropped in
    storage leaves the replica too)."""
    with server_errors(url, "loading into PostgreSQL"), reading(conn):
        return await _load_state(pg, conn, schema, replace=replace, position=position, expect=expect,
                                 stale=set(stale), notes=list(notes))


@contextlib.contextmanager
def server_errors(url: str, doing: str):
    """psycopg's errors as PostgresError / PostgresUnreachable (lost connection), password scrubbed."""
    try:
        yield
    except psycopg.OperationalError as e:
        raise PostgresUnreachable(f"{doing}: lost PostgreSQL at {redact(url)}: {_scrub(str(e).strip(), url)}") from None
    except psycopg.Error as e:
        raise PostgresError(f"{doing}: PostgreSQL refused: {_scrub(str(e).strip(), url)}") from None


async def _load_state(pg, conn: sqlite3.Connection, schema: str, *, replace: bool,
                      position: Position | None, expect, stale: set[str], notes: list[Note]) -> LoadReport:
    t0 = time.monotonic()
    tables = user_tables(conn)
    specs = [describe(conn, t) for t in tables]
    at = position.seq if position is not None else 0
    recorded = [*notes, *(Note(at, None, None, n) for s in specs for n in s.notes),
                *(Note(at, None, None, n) for n in schema_notes(conn))]
    async with pg.transaction():
        cur = pg.cursor()
        await lock_schema(cur, schema)
        await cur.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
        if expect is not ANY:
            # a re-seed replaces what the cursor describes: only if nobody moved it since we looked
            now = await read_cursor(cur, schema, lock=True)
            if (now and (now.seq, now.hash)) != (expect and (expect.seq, expect.hash)):
                raise CursorMoved(f"schema {schema!r}: the follow cursor moved (now {now and now.seq}, expected "
                                  f"{expect and expect.seq}): another follower works on it")
        have = await existing_tables(cur, schema)
        clash = sorted(have & set(tables))
        if clash and not replace:
            raise PostgresError(f"schema {schema!r} already has table(s) {', '.join(clash)}; use --force to replace "
                                "them (or --schema another one)")
        gone = sorted((stale & have) - set(tables) - OWN_TABLES)
        for t in clash + gone:
            await cur.execute(pgsql.SQL("DROP TABLE {}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(t)))
        reports: list[TableReport] = []
        for spec in specs:
            stmts = create_statements(schema, spec)
            await cur.execute(stmts[0])
            sent = await copy_into(cur, schema, spec, converted_rows(conn, spec))
            for st in stmts[1:]:  # indexes after the data: one sort instead of a million inserts into a tree
                await cur.execute(st)
            got = await table_checksum(pg.cursor(name=f"tgsnap_check_{len(reports)}"), schema, spec)
            if (got.rows, got.digest) != (sent.rows, sent.digest):
                raise PostgresError(f"table {spec.name!r}: PostgreSQL holds {got} but {sent} were sent; nothing "
                                    "committed")
            reports.append(TableReport(spec.name, got.rows, f"{got.digest:032x}",
                                       {c.name: c.type for c in spec.columns}))
        if position is not None:
            uv = conn.execute("PRAGMA main.user_version").fetchone()[0]
            await write_cursor(cur, schema, dataclasses.replace(position, sqlite_schema=schema_of(conn),
                                                                user_version=uv))
            await write_notes(cur, schema, recorded, replace=True)
    return LoadReport(schema, reports, [n.note for n in recorded], clash + gone, time.monotonic() - t0)


def storage_identity(manifest, location: str) -> str:
    """`location|storage-id`: the storage a cursor belongs to. The storage id (manifest format 3) is the
    real identity; the location (directory, chat) stands in for storage written before it existed."""
    sid = getattr(manifest, "storage_id", None) if manifest is not None else None
    if isinstance(sid, bytes):
        sid = sid.hex()
    return f"{location}|{sid or ''}"


def same_storage(a: str, b: str) -> bool:
    la, _, ia = a.rpartition("|")
    lb, _, ib = b.rpartition("|")
    if ia and ib:
        return ia == ib
    return la == lb


def location_of(settings) -> str:
    """A stable name for where `settings` point (the identity used until the storage has an id)."""
    if settings.mode == "local" and settings.local_dir is not None:
        return f"local:{settings.local_dir.resolve()}"
    return f"{settings.mode}:{settings.storage_chat}"


def is_postgres_url(text: str | None) -> bool:
    return text is not None and bool(re.match(r"(?i)^postgres(ql)?://", text))


def position_of(plan, location: str) -> Position:
    """The chain position a restore of `plan` stands at (what `execute(plan)` yields)."""
    if plan.deltas:
        d = plan.deltas[-1]
        seq, hsh, epoch = d.seq, d.hash, d.epoch
    else:
        seq, hsh = plan.base_seq, plan.base_hash.hex()
        epoch = plan.snapshot.epoch if plan.snapshot else 0
    return Position(seq=seq, hash=hsh, epoch=epoch, storage=storage_identity(plan.manifest, location),
                    captured_at=plan.captured_at)


async def pg_columns(cur, schema: str, table: str) -> dict[str, str]:
    await cur.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND "
                      "table_name = %s ORDER BY ordinal_position", (schema, table))
    return {c: t for c, t in await cur.fetchall()}


async def compare_state(pg, conn: sqlite3.Connection, schema: str) -> tuple[list[TableReport], list[str]]:
    with reading(conn):
        return await _compare_state(pg, conn, schema)


async def _compare_state(pg, conn: sqlite3.Connection, schema: str) -> tuple[list[TableReport], list[str]]:
    """Per-table row counts and checksums of `conn` against `schema` (values converted to the replica's
    own column types). Call inside a transaction (REPEATABLE READ for one consistent view). Returns the
    matching tables and the differences, each named."""
    problems: list[str] = []
    reports: list[TableReport] = []
    cur = pg.cursor()
    tables = user_tables(conn)
    extra = sorted(await existing_tables(cur, schema) - set(tables) - OWN_TABLES)
    problems += [f"table {t!r} is in PostgreSQL but not in the stored state" for t in extra]
    for i, t in enumerate(tables):
        types = await pg_columns(cur, schema, t)
        if not types:
            problems.append(f"table {t!r} is missing from PostgreSQL")
            continue
        cols = [r[1] for r in conn.execute(f"PRAGMA table_xinfo({quote(t)})")]
        if set(cols) != set(types):
            problems.append(f"table {t!r}: columns differ (stored: {', '.join(cols)}; PostgreSQL: "
                            f"{', '.join(types)})")
            continue
        spec = TableSpec(t, [Column(c, "", types[c], False, None) for c in cols], [])
        want = Checksum()
        try:
            for row in conn.execute(f"SELECT {', '.join(quote(c) for c in cols)} FROM {quote(t)}"):
                want.add(tuple(convert(v, ty) for v, ty in zip(row, (types[c] for c in cols), strict=True)))
        except ValueMismatch as e:
            problems.append(f"table {t!r}: a stored value does not fit PostgreSQL's column type ({e})")
            continue
        got = await table_checksum(pg.cursor(name=f"tgsnap_compare_{i}"), schema, spec)
        if (got.rows, got.digest) != (want.rows, want.digest):
            problems.append(f"table {t!r}: PostgreSQL holds {got}, the stored state {want}")
        else:
            reports.append(TableReport(t, got.rows, f"{got.digest:032x}", types))
    return reports, problems
