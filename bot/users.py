"""The clicker's one table, `users`, and every query the bot runs on it (all parameterised).

One row per registered private chat. `last_message_id` makes a click idempotent: Telegram redelivers
updates the bot had not confirmed when it died, and a click the store already holds must not count
twice, so a click only counts when its message is newer than the last one counted in that chat (message
ids only grow within a private chat; update ids may restart after a quiet week, so they are not used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core import Migration, Store

#: The schema of this release. Storage written by an older release reaches it through MIGRATIONS.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS users (
        chat_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        clicks INTEGER NOT NULL DEFAULT 0,
        last_message_id INTEGER NOT NULL DEFAULT 0,
        username TEXT,
        registered_at REAL
    )""",
    # The rating reads this index in order and stops after 15 rows, so it stays fast at 1 M users.
    "CREATE INDEX IF NOT EXISTS users_by_clicks ON users (clicks DESC, chat_id ASC)",
]

#: Schema version 1 (user_version 0 is the first release, PREVIOUS_SCHEMA): the Telegram @username and
#: the registration time are stored. Users registered before it keep NULL in both: their registration
#: time was never recorded, and their username is filled in when they next send /start.
MIGRATIONS = [
    Migration(
        1,
        "ALTER TABLE users ADD COLUMN username TEXT",
        "ALTER TABLE users ADD COLUMN registered_at REAL",
    ),
]

#: The first release's schema (schema version 0), kept so tests can start from storage it wrote.
PREVIOUS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS users (
        chat_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        clicks INTEGER NOT NULL DEFAULT 0,
        last_message_id INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS users_by_clicks ON users (clicks DESC, chat_id ASC)",
]

# A second /start keeps the name on record but learns the username (it may have changed, or the user
# registered before usernames were stored).
_REGISTER = """
    INSERT INTO users (chat_id, name, username, registered_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (chat_id) DO UPDATE SET username = excluded.username
         WHERE username IS NOT excluded.username
"""
_NAME = "SELECT name FROM users WHERE chat_id = ?"
_CLICK = """
    UPDATE users
       SET clicks = clicks + (last_message_id < :message_id),
           last_message_id = max(last_message_id, :message_id)
     WHERE chat_id = :chat_id
 RETURNING clicks
"""
_TOTAL = "SELECT count(*) FROM users"
_TOP = "SELECT name, clicks FROM users ORDER BY clicks DESC, chat_id ASC LIMIT ?"


@dataclass(frozen=True)
class Rating:
    total: int
    top: list[tuple[str, int]]


class Users:
    """The clicker's queries over a live `Store`. Every write is a single statement (no transaction)."""

    def __init__(self, store: Store):
        self.store = store

    def register(self, chat_id: int, name: str, username: str | None = None) -> str:
        """Register `chat_id` as `name` (with its @username, and now as the registration time) unless it
        already is; return the name on record."""
        self.store.execute(_REGISTER, (chat_id, name, username, time.time()))
        return self.store.execute(_NAME, (chat_id,)).fetchone()[0]

    def profile(self, chat_id: int) -> tuple[str, str | None, float | None] | None:
        """(name, username, registered_at) on record, or None for a stranger."""
        return self.store.execute("SELECT name, username, registered_at FROM users WHERE chat_id = ?",
                                  (chat_id,)).fetchone()

    def name(self, chat_id: int) -> str | None:
        row = self.store.execute(_NAME, (chat_id,)).fetchone()
        return None if row is None else row[0]

    def click(self, chat_id: int, message_id: int) -> int | None:
        """Count the click in message `message_id`; the new total, or None if `chat_id` is not registered.

        A message counted before (a redelivered update) returns the total without counting again.
        """
        # fetchall: a RETURNING statement holds its write open until every row has been read.
        rows = self.store.execute(_CLICK, {"chat_id": chat_id, "message_id": message_id}).fetchall()
        return rows[0][0] if rows else None

    def rating(self, size: int) -> Rating:
        total = self.store.execute(_TOTAL).fetchone()[0]
        top = [(name, clicks) for name, clicks in self.store.execute(_TOP, (size,)).fetchall()]
        return Rating(total=total, top=top)
