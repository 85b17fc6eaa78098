"""The article's method, verbatim in spirit: the baseline every ratio is measured against.

Backup: `SELECT * FROM users` → `fetchall()` → `json.dumps` (one document holding everything).
Restore: `json.loads` → `CREATE TABLE` (the article's, without a key) → `executemany`.
"""

from __future__ import annotations

import json
import sqlite3


def backup(conn: sqlite3.Connection) -> bytes:
    cursor = conn.cursor()
    cursor.execute("SELECT * FROM users ")
    data = cursor.fetchall()
    str_data = json.dumps(data)
    # the article sends io.StringIO(str_data); Telegram stores it UTF-8 encoded
    return str_data.encode()


def restore(document: bytes) -> sqlite3.Connection:
    data = json.loads(document)
    conn = sqlite3.connect(":memory:")
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE users (chatid INTEGER , name TEXT, click INTEGER, state INTEGER)")
    cursor.executemany("INSERT INTO users VALUES (?,?,?,?)", data)
    conn.commit()
    return conn
