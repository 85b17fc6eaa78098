"""The emulator's one persistent world: users, bots, channels, private dialogs, messages, files, updates.

Both protocol fronts share one `World` in one asyncio loop. All methods are synchronous (SQLite calls
take microseconds; file content is written by the caller's thread) except the `wait_*` helpers.

Storage under the data directory:
- `world.sqlite3`: SQLite in WAL mode with `synchronous=FULL`; every mutation is one transaction, so a
  crash loses nothing that a method already returned.
- `files/<id>`: file contents, written to `tmp/` first, fsynced, then renamed into place before the row
  that points at them is committed (an orphan content file is harmless; a row never points at nothing).

`World.open(data_dir)` is synchronous.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .knobs import Knobs
from .limiter import RateLimiter
from .records import (
    CHANNEL_ID_BASE,
    Chat,
    FileRecord,
    Message,
    Update,
    User,
    channel_chat_id,
    channel_id_of,
)

__all__ = [
    "UNSET",
    "Chat",
    "FileRecord",
    "Message",
    "Update",
    "UploadWriter",
    "User",
    "World",
    "WorldError",
    "WorldEvent",
    "channel_chat_id",
    "channel_id_of",
]

SCHEMA_VERSION = 1

# Rights a channel creator has; bots made admin get these unless told otherwise.
ALL_ADMIN_RIGHTS: dict[str, bool] = {
    "can_manage_chat": True,
    "can_change_info": True,
    "can_post_messages": True,
    "can_edit_messages": True,
    "can_delete_messages": True,
    "can_invite_users": True,
    "can_restrict_members": True,
    "can_promote_members": True,
    "can_manage_video_chats": True,
    "can_post_stories": True,
    "can_edit_stories": True,
    "can_delete_stories": True,
    "is_anonymous": False,
    "can_pin_messages": True,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    user_id INTEGER PRIMARY KEY,
    is_bot INTEGER NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT,
    username TEXT UNIQUE COLLATE NOCASE,
    token TEXT UNIQUE,
    access_hash INTEGER NOT NULL,
    language_code TEXT,
    next_update_id INTEGER NOT NULL DEFAULT 1,
    allowed_updates TEXT,
    commands TEXT
);
CREATE TABLE IF NOT EXISTS chats(
    key TEXT PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    date INTEGER NOT NULL,
    channel_id INTEGER UNIQUE,
    access_hash INTEGER NOT NULL DEFAULT 0,
    title TEXT,
    username TEXT UNIQUE COLLATE NOCASE,
    description TEXT,
    bot_id INTEGER,
    user_id INTEGER,
    pts INTEGER NOT NULL DEFAULT 1,
    next_message_id INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS chats_by_user ON chats(user_id, bot_id);
CREATE TABLE IF NOT EXISTS members(
    chat_key TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    rights TEXT,
    PRIMARY KEY(chat_key, user_id)
);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    access_hash INTEGER NOT NULL,
    file_reference BLOB NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    unique_id TEXT NOT NULL UNIQUE,
    date INTEGER NOT NULL,
    dc_id INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS messages(
    chat_key TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    sender_id INTEGER NOT NULL,
    date INTEGER NOT NULL,
    text TEXT,
    caption TEXT,
    file_id INTEGER,
    reply_markup TEXT,
    edit_date INTEGER,
    pinned INTEGER NOT NULL DEFAULT 0,
    reply_to INTEGER,
    extra TEXT,
    PRIMARY KEY(chat_key, message_id)
);
CREATE INDEX IF NOT EXISTS messages_pinned ON messages(chat_key, date, message_id) WHERE pinned = 1;
CREATE TABLE IF NOT EXISTS updates(
    bot_id INTEGER NOT NULL,
    update_id INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY(bot_id, update_id)
);
CREATE TABLE IF NOT EXISTS extra(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Bot API update kinds delivered when a bot never called getUpdates with allowed_updates.
DEFAULT_ALLOWED_UPDATES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "callback_query",
        "inline_query",
        "my_chat_member",
    }
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class WorldError(Exception):
    """A refusal in Telegram's vocabulary. `code` is an MTProto-style name (e.g. "MESSAGE_ID_INVALID");
    each front maps it to its own error shape."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class WorldEvent:
    """Passed to `World.subscribe` callbacks. kind: "new" | "edit" | "delete" | "pin" | "unpin"."""

    kind: str
    chat_id: int
    chat_key: str
    message_ids: tuple[int, ...]
    message: Message | None = None


def _rand63() -> int:
    return secrets.randbits(63) or 1


def _rand_signed64() -> int:
    return struct.unpack("<q", secrets.token_bytes(8))[0] or 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WorldExtra(MutableMapping[str, Any]):
    """A persisted JSON namespace for the fronts' own data (e.g. MTProto auth keys).

    Every `extra[key] = value` is written at once; mutating a stored value in place is NOT persisted —
    assign it again.
    """

    def __init__(self, world: World) -> None:
        self._world = world
        self._cache: dict[str, Any] = {
            k: json.loads(v) for k, v in world.db.execute("SELECT key, value FROM extra")
        }

    def __getitem__(self, key: str) -> Any:
        return self._cache[key]

    def __setitem__(self, key: str, value: Any) -> None:
        encoded = json.dumps(value)
        with self._world._tx() as db:
            db.execute("INSERT OR REPLACE INTO extra(key, value) VALUES(?, ?)", (key, encoded))
        self._cache[key] = json.loads(encoded)

    def __delitem__(self, key: str) -> None:
        if key not in self._cache:
            raise KeyError(key)
        with self._world._tx() as db:
            db.execute("DELETE FROM extra WHERE key = ?", (key,))
        del self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cache))

    def __len__(self) -> int:
        return len(self._cache)


class UploadWriter:
    """Assembles one file from parts written at any offset (parallel MTProto uploads arrive out of order).

    `finish` makes it a `FileRecord`; `abort` throws it away. Content goes to `tmp/` until `finish`.
    """

    def __init__(self, world: World) -> None:
        self._world = world
        self.path = world.tmp_dir / f"upload-{secrets.token_hex(8)}"
        self._fh: BinaryIO | None = open(self.path, "w+b")  # noqa: SIM115 - closed by finish/abort
        self.size = 0

    def write_at(self, offset: int, data: bytes) -> None:
        assert self._fh is not None, "upload already finished"
        self._fh.seek(offset)
        self._fh.write(data)
        self.size = max(self.size, offset + len(data))

    def append(self, data: bytes) -> None:
        self.write_at(self.size, data)

    def finish(self, name: str, mime_type: str = "application/octet-stream") -> FileRecord:
        assert self._fh is not None, "upload already finished"
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        return self._world._adopt_file(self.path, self.size, name, mime_type)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)


class World:
    """See the module docstring. Create with `World.open(data_dir)`; close with `close()`."""

    def __init__(self, data_dir: Path, db: sqlite3.Connection, knobs: Knobs) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.tmp_dir = data_dir / "tmp"
        self.db = db
        self.knobs = knobs
        self.limiter = RateLimiter(knobs)
        self._secret = bytes.fromhex(self._meta("secret"))
        self.extra = WorldExtra(self)
        self._listeners: list[Callable[[WorldEvent], None]] = []
        self._change = asyncio.Event()
        self._bot_events: dict[int, asyncio.Event] = {}
        self._lock: BinaryIO | None = None  # the data directory's flock, set by open()

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], knobs: Knobs | None = None) -> World:
        """Open (or create) the world kept under `data_dir`. Synchronous."""
        path = Path(data_dir)
        (path / "files").mkdir(parents=True, exist_ok=True)
        lock = open(path / "lock", "a+b")  # noqa: SIM115 - held for the world's lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise RuntimeError(f"{path}: another emulator is using this world") from None
        tmp = path / "tmp"
        if tmp.exists():
            shutil.rmtree(tmp)  # leftovers of uploads interrupted by a crash
        tmp.mkdir()
        db = sqlite3.connect(path / "world.sqlite3", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=OFF")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT INTO meta VALUES('secret', ?)", (secrets.token_hex(32),))
            db.execute("COMMIT")
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: world schema {row[0]}, this emulator reads {SCHEMA_VERSION}")
        world = cls(path, db, knobs or Knobs())
        world._lock = lock
        return world

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return str(row[0])

    def now(self) -> int:
        """The world's clock (unix seconds), shifted by `knobs.clock_offset_s`."""
        return int(time.time() + self.knobs.clock_offset_s)

    # --- change notification --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[WorldEvent], None]) -> Callable[[], None]:
        """Call `callback` after each message change; returns an unsubscribe function."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, event: WorldEvent) -> None:
        self._change.set()
        self._change = asyncio.Event()
        for callback in list(self._listeners):
            callback(event)

    async def wait_change(self, wait_s: float) -> bool:
        """Wait until any message changes (True) or `wait_s` seconds pass (False)."""
        event = self._change
        try:
            await asyncio.wait_for(event.wait(), wait_s)
            return True
        except TimeoutError:
            return False

    # --- users and bots -------------------------------------------------------------------------

    def create_user(
        self,
        first_name: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        last_name: str | None = None,
        language_code: str | None = None,
    ) -> User:
        uid = user_id if user_id is not None else self._free_user_id(1_000_000_000, 6_999_999_999)
        self._insert_user(uid, False, first_name, last_name, username, None, language_code)
        return self._require_user(uid)

    def create_bot(
        self,
        username: str,
        *,
        first_name: str | None = None,
        user_id: int | None = None,
        token: str | None = None,
    ) -> User:
        if not username.lower().endswith("bot"):
            raise WorldError("USERNAME_INVALID", "a bot's username must end in 'bot'")
        uid = user_id if user_id is not None else self._free_user_id(7_000_000_000, 7_999_999_999)
        token = token or f"{uid}:AA{_b64(secrets.token_bytes(25))[:33]}"
        if not token.startswith(f"{uid}:"):
            raise WorldError("TOKEN_INVALID", "a bot token starts with '<bot user id>:'")
        self._insert_user(uid, True, first_name or username, None, username, token, None)
        return self._require_user(uid)

    def _free_user_id(self, lo: int, hi: int) -> int:
        while True:
            uid = lo + secrets.randbelow(hi - lo)
            if self.user(uid) is None:
                return uid

    def _insert_user(
        self,
        uid: int,
        is_bot: bool,
        first_name: str,
        last_name: str | None,
        username: str | None,
        token: str | None,
        language_code: str | None,
    ) -> None:
        if uid <= 0:
            raise WorldError("USER_ID_INVALID", "user ids are positive")
        if self.user(uid) is not None:
            raise WorldError("USER_ID_OCCUPIED", f"user {uid} exists")
        if username and self.resolve_username(username) is not None:
            raise WorldError("USERNAME_OCCUPIED", f"@{username} is taken")
        with self._tx() as db:
            db.execute(
                "INSERT INTO users(user_id, is_bot, first_name, last_name, username, token, access_hash,"
                " language_code) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (uid, int(is_bot), first_name, last_name, username, token, _rand_signed64(), language_code),
            )

    def user(self, user_id: int) -> User | None:
        row = self.db.execute(f"SELECT {_USER_COLS} FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def _require_user(self, user_id: int) -> User:
        user = self.user(user_id)
        if user is None:
            raise WorldError("USER_ID_INVALID", f"no user {user_id}")
        return user

    def bot_by_token(self, token: str) -> User | None:
        row = self.db.execute(f"SELECT {_USER_COLS} FROM users WHERE token = ?", (token,)).fetchone()
        return _user(row) if row else None

    def users(self, *, bots: bool | None = None) -> list[User]:
        sql = f"SELECT {_USER_COLS} FROM users"
        args: tuple[Any, ...] = ()
        if bots is not None:
            sql += " WHERE is_bot = ?"
            args = (int(bots),)
        return [_user(r) for r in self.db.execute(sql + " ORDER BY user_id", args)]

    def resolve_username(self, username: str) -> User | Chat | None:
        """The user, bot or channel with this @username (case-insensitive), if any."""
        name = username.lstrip("@")
        row = self.db.execute(f"SELECT {_USER_COLS} FROM users WHERE username = ?", (name,)).fetchone()
        if row:
            return _user(row)
        row = self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE username = ?", (name,)).fetchone()
        return _chat(row) if row else None

    def set_bot_commands(self, bot_id: int, commands: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.execute("UPDATE users SET commands = ? WHERE user_id = ?", (json.dumps(commands), bot_id))

    def bot_commands(self, bot_id: int) -> list[dict[str, Any]]:
        row = self.db.execute("SELECT commands FROM users WHERE user_id = ?", (bot_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else []

    # --- chats ----------------------------------------------------------------------------------

    def create_channel(
        self,
        title: str,
        creator_id: int,
        *,
        username: str | None = None,
        description: str | None = None,
        channel_id: int | None = None,
    ) -> Chat:
        self._require_user(creator_id)
        if channel_id is None:
            while True:
                channel_id = 1_000_000_000 + secrets.randbelow(8_999_999_999)
                if self.channel_by_id(channel_id) is None:
                    break
        elif not 0 < channel_id < CHANNEL_ID_BASE or self.channel_by_id(channel_id) is not None:
            raise WorldError("CHANNEL_INVALID", f"channel id {channel_id} is taken or out of range")
        if username and self.resolve_username(username) is not None:
            raise WorldError("USERNAME_OCCUPIED", f"@{username} is taken")
        key = f"c:{channel_id}"
        with self._tx() as db:
            db.execute(
                "INSERT INTO chats(key, chat_id, kind, date, channel_id, access_hash, title, username,"
                " description) VALUES(?, ?, 'channel', ?, ?, ?, ?, ?, ?)",
                (key, channel_chat_id(channel_id), self.now(), channel_id, _rand_signed64(), title, username,
                 description),
            )
            db.execute(
                "INSERT INTO members VALUES(?, ?, 'creator', ?)", (key, creator_id, json.dumps(ALL_ADMIN_RIGHTS))
            )
        chat = self.channel_by_id(channel_id)
        assert chat is not None
        return chat

    def channel_by_id(self, channel_id: int) -> Chat | None:
        row = self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE channel_id = ?", (channel_id,)).fetchone()
        return _chat(row) if row else None

    def channels(self) -> list[Chat]:
        return [_chat(r) for r in self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE kind = 'channel'")]

    def private_chat(self, bot_id: int, user_id: int, *, create: bool = False) -> Chat | None:
        """The dialog between a bot and a user (its Bot API chat id is the user's id)."""
        key = f"p:{bot_id}:{user_id}"
        row = self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE key = ?", (key,)).fetchone()
        if row:
            return _chat(row)
        if not create:
            return None
        bot, user = self._require_user(bot_id), self._require_user(user_id)
        if not bot.is_bot or user.is_bot:
            raise WorldError("PEER_ID_INVALID", "a private dialog is between a bot and a user")
        with self._tx() as db:
            db.execute(
                "INSERT INTO chats(key, chat_id, kind, date, bot_id, user_id) VALUES(?, ?, 'private', ?, ?, ?)",
                (key, user_id, self.now(), bot_id, user_id),
            )
        return self.private_chat(bot_id, user_id)

    def chat(self, chat_id: int, actor_id: int | None = None) -> Chat:
        """Resolve a Bot API chat id. For private chats `actor_id` names the other side (the bot, or for
        a user acting, the user while `chat_id` is the bot). Raises WorldError("CHAT_NOT_FOUND")."""
        channel_id = channel_id_of(chat_id)
        if channel_id is not None:
            chat = self.channel_by_id(channel_id)
            if chat is None:
                raise WorldError("CHAT_NOT_FOUND", f"no channel {chat_id}")
            return chat
        if chat_id <= 0:
            raise WorldError("CHAT_NOT_FOUND", f"no chat {chat_id}")
        if actor_id is not None:
            actor = self.user(actor_id)
            if actor is not None and actor.is_bot:
                chat = self.private_chat(actor_id, chat_id)
            else:
                chat = self.private_chat(chat_id, actor_id)
            if chat is None:
                raise WorldError("CHAT_NOT_FOUND", f"no dialog between {actor_id} and {chat_id}")
            return chat
        rows = self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE user_id = ?", (chat_id,)).fetchall()
        if len(rows) == 1:
            return _chat(rows[0])
        raise WorldError("CHAT_NOT_FOUND", f"private chat {chat_id} needs the bot's id to be resolved")

    def chat_by_key(self, key: str) -> Chat:
        row = self.db.execute(f"SELECT {_CHAT_COLS} FROM chats WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise WorldError("CHAT_NOT_FOUND", key)
        return _chat(row)

    def set_member(self, chat_id: int, user_id: int, status: str, rights: dict[str, bool] | None = None) -> None:
        """Make a user "administrator" (with `rights`, default all but anonymity), "member" or "left"."""
        chat = self.chat(chat_id)
        if not chat.is_channel:
            raise WorldError("CHAT_ID_INVALID", "members exist only in channels")
        self._require_user(user_id)
        if status not in ("administrator", "member", "left", "kicked", "creator"):
            raise WorldError("PARTICIPANT_STATUS_INVALID", status)
        with self._tx() as db:
            if status == "left":
                db.execute("DELETE FROM members WHERE chat_key = ? AND user_id = ?", (chat.key, user_id))
            else:
                merged = dict(ALL_ADMIN_RIGHTS, **(rights or {})) if status in ("administrator", "creator") else None
                db.execute(
                    "INSERT OR REPLACE INTO members VALUES(?, ?, ?, ?)",
                    (chat.key, user_id, status, json.dumps(merged) if merged else None),
                )

    def set_admin(self, chat_id: int, user_id: int, rights: dict[str, bool] | None = None) -> None:
        self.set_member(chat_id, user_id, "administrator", rights)

    def member(self, chat_id: int, user_id: int) -> tuple[str, dict[str, bool] | None]:
        """(status, rights) of a user in a channel; ("left", None) when not a member."""
        chat = self.chat(chat_id)
        row = self.db.execute(
            "SELECT status, rights FROM members WHERE chat_key = ? AND user_id = ?", (chat.key, user_id)
        ).fetchone()
        if row is None:
            return "left", None
        return row[0], (json.loads(row[1]) if row[1] else None)

    def members(self, chat_id: int) -> list[tuple[int, str, dict[str, bool] | None]]:
        chat = self.chat(chat_id)
        rows = self.db.execute(
            "SELECT user_id, status, rights FROM members WHERE chat_key = ? ORDER BY status != 'creator', user_id",
            (chat.key,),
        )
        return [(r[0], r[1], json.loads(r[2]) if r[2] else None) for r in rows]

    def is_admin(self, chat_id: int, user_id: int, right: str | None = None) -> bool:
        """True if `user_id` is creator/administrator of the channel (and holds `right`, when given)."""
        status, rights = self.member(chat_id, user_id)
        if status not in ("creator", "administrator"):
            return False
        return right is None or bool(rights and rights.get(right))

    # --- files ----------------------------------------------------------------------------------

    def store_file(
        self, data: bytes | str | os.PathLike[str], name: str, mime_type: str = "application/octet-stream"
    ) -> FileRecord:
        """Store bytes (or copy the file at a path) and return its record."""
        writer = UploadWriter(self)
        try:
            if isinstance(data, bytes | bytearray | memoryview):
                writer.append(bytes(data))
            else:
                with open(data, "rb") as src:
                    while chunk := src.read(1 << 20):
                        writer.append(chunk)
            return writer.finish(name, mime_type)
        except BaseException:
            writer.abort()
            raise

    def store_file_from_parts(
        self, parts: Iterable[bytes], name: str, mime_type: str = "application/octet-stream"
    ) -> FileRecord:
        """Store the concatenation of `parts` (an iterable, consumed once)."""
        writer = UploadWriter(self)
        try:
            for part in parts:
                writer.append(part)
            return writer.finish(name, mime_type)
        except BaseException:
            writer.abort()
            raise

    def open_upload(self) -> UploadWriter:
        """A writer for parts arriving at any offset; `finish(name, mime)` turns it into a FileRecord."""
        return UploadWriter(self)

    def _adopt_file(self, tmp_path: Path, size: int, name: str, mime_type: str) -> FileRecord:
        while True:
            file_id = _rand63()
            if self.db.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                break
        final = self.file_path(file_id)
        os.replace(tmp_path, final)
        _fsync_dir(self.files_dir)
        unique_id = "AgAD" + _b64(hmac.digest(self._secret, b"u" + struct.pack("<q", file_id), "sha256")[:9])
        with self._tx() as db:
            db.execute(
                "INSERT INTO files(id, access_hash, file_reference, size, name, mime_type, unique_id, date)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (file_id, _rand_signed64(), secrets.token_bytes(16), size, name, mime_type, unique_id, self.now()),
            )
        rec = self.file(file_id)
        assert rec is not None
        return rec

    def file_path(self, file_rec_id: int) -> Path:
        """Where the content of a file lives on disk (for streaming responses)."""
        return self.files_dir / f"{file_rec_id:016x}"

    def file(self, file_rec_id: int) -> FileRecord | None:
        row = self.db.execute(f"SELECT {_FILE_COLS} FROM files WHERE id = ?", (file_rec_id,)).fetchone()
        return _file(row) if row else None

    def file_by_unique_id(self, unique_id: str) -> FileRecord | None:
        row = self.db.execute(f"SELECT {_FILE_COLS} FROM files WHERE unique_id = ?", (unique_id,)).fetchone()
        return _file(row) if row else None

    def read_file_range(self, file_rec_id: int, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes of a file's content from `offset` (short or empty past the end)."""
        if offset < 0 or limit < 0:
            raise WorldError("OFFSET_INVALID", "negative offset or limit")
        with open(self.file_path(file_rec_id), "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)

    def read_file(self, file_rec_id: int) -> bytes:
        return self.file_path(file_rec_id).read_bytes()

    def bot_file_id(self, rec: FileRecord, bot_id: int) -> str:
        """The Bot API `file_id` of a file for one bot: stable across restarts, refused for other bots."""
        body = struct.pack("<BBqq", 5, 1, rec.id, bot_id)  # 5 = "document" in Telegram's own type table
        tag = hmac.digest(self._secret, body, "sha256")[:8]
        return "BQACAgI" + _b64(body + tag)

    def file_by_bot_file_id(self, file_id: str, bot_id: int) -> FileRecord | None:
        """The record behind a Bot API `file_id`, if it is genuine and belongs to `bot_id`."""
        if not file_id.startswith("BQACAgI"):
            return None
        try:
            raw = _unb64(file_id[7:])
        except ValueError:
            return None
        if len(raw) != 26:
            return None
        body, tag = raw[:18], raw[18:]
        if not hmac.compare_digest(tag, hmac.digest(self._secret, body, "sha256")[:8]):
            return None
        _type, _ver, rec_id, owner = struct.unpack("<BBqq", body)
        if owner != bot_id:
            return None
        return self.file(rec_id)

    # --- messages -------------------------------------------------------------------------------

    def send_message(
        self,
        chat_id: int,
        sender_id: int,
        *,
        text: str | None = None,
        document: FileRecord | None = None,
        caption: str | None = None,
        reply_markup: dict[str, Any] | None = None,
        reply_to_message_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Message:
        """Append a message. Channels: `chat_id` = -100…, the sender must be a member (fronts check admin
        rights). Private: `chat_id` is the other side (the user for a bot sending, the bot for a user
        sending). Queues updates: to the bot for a user's private message, to other admin bots for
        channel posts. No rate limiting or permission checks here: the fronts do those."""
        if text is None and document is None and not (extra and "service" in extra):
            raise WorldError("MESSAGE_EMPTY", "a message needs text or a document")
        chat = self._chat_for_send(chat_id, sender_id)
        now = self.now()
        with self._tx() as db:
            row = db.execute("SELECT next_message_id FROM chats WHERE key = ?", (chat.key,)).fetchone()
            mid = int(row[0])
            db.execute("UPDATE chats SET next_message_id = ?, pts = pts + 1 WHERE key = ?", (mid + 1, chat.key))
            db.execute(
                "INSERT INTO messages(chat_key, message_id, chat_id, sender_id, date, text, caption, file_id,"
                " reply_markup, reply_to, extra) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (chat.key, mid, chat.chat_id, sender_id, now, text, caption, document.id if document else None,
                 json.dumps(reply_markup) if reply_markup is not None else None, reply_to_message_id,
                 json.dumps(extra) if extra else None),
            )
            msg = self._message(chat.key, mid)
            assert msg is not None
            self._queue_message_updates(db, chat, msg, edited=False)
        self._emit(WorldEvent("new", chat.chat_id, chat.key, (mid,), msg))
        return msg

    def _chat_for_send(self, chat_id: int, sender_id: int) -> Chat:
        if channel_id_of(chat_id) is not None:
            return self.chat(chat_id)
        sender, peer = self._require_user(sender_id), self.user(chat_id)
        if peer is None:
            raise WorldError("PEER_ID_INVALID", f"no user {chat_id}")
        if sender.is_bot == peer.is_bot:
            raise WorldError("PEER_ID_INVALID", "private dialogs are between a bot and a user")
        bot_id, user_id = (sender_id, chat_id) if sender.is_bot else (chat_id, sender_id)
        chat = self.private_chat(bot_id, user_id, create=not sender.is_bot)
        if chat is None:
            raise WorldError("USER_IS_BLOCKED", "bot can't initiate conversation with a user")
        return chat

    def edit_message(
        self,
        chat_id: int,
        message_id: int,
        *,
        text: Any = UNSET,
        caption: Any = UNSET,
        document: Any = UNSET,
        reply_markup: Any = UNSET,
        actor_id: int | None = None,
    ) -> Message:
        """Change the given fields (UNSET leaves one alone) and stamp `edit_date`."""
        chat = self.chat(chat_id, actor_id)
        old = self._message(chat.key, message_id)
        if old is None:
            raise WorldError("MESSAGE_ID_INVALID", f"no message {message_id} in {chat_id}")
        sets: dict[str, Any] = {}
        if text is not UNSET:
            sets["text"] = text
        if caption is not UNSET:
            sets["caption"] = caption
        if document is not UNSET:
            sets["file_id"] = document.id if document is not None else None
        if reply_markup is not UNSET:
            sets["reply_markup"] = json.dumps(reply_markup) if reply_markup is not None else None
        sets["edit_date"] = self.now()
        assign = ", ".join(f"{k} = ?" for k in sets)
        with self._tx() as db:
            db.execute(
                f"UPDATE messages SET {assign} WHERE chat_key = ? AND message_id = ?",
                (*sets.values(), chat.key, message_id),
            )
            db.execute("UPDATE chats SET pts = pts + 1 WHERE key = ?", (chat.key,))
            msg = self._message(chat.key, message_id)
            assert msg is not None
            self._queue_message_updates(db, chat, msg, edited=True)
        self._emit(WorldEvent("edit", chat.chat_id, chat.key, (message_id,), msg))
        return msg

    def delete_messages(self, chat_id: int, ids: Sequence[int], *, actor_id: int | None = None) -> list[int]:
        """Delete what exists of `ids`; returns the ids actually deleted."""
        chat = self.chat(chat_id, actor_id)
        deleted: list[int] = []
        with self._tx() as db:
            for mid in ids:
                cur = db.execute("DELETE FROM messages WHERE chat_key = ? AND message_id = ?", (chat.key, mid))
                if cur.rowcount:
                    deleted.append(mid)
            if deleted:
                db.execute("UPDATE chats SET pts = pts + ? WHERE key = ?", (len(deleted), chat.key))
        if deleted:
            self._emit(WorldEvent("delete", chat.chat_id, chat.key, tuple(deleted)))
        return deleted

    def get_messages(self, chat_id: int, ids: Sequence[int], *, actor_id: int | None = None) -> list[Message | None]:
        chat = self.chat(chat_id, actor_id)
        return [self._message(chat.key, mid) for mid in ids]

    def get_message(self, chat_id: int, message_id: int, *, actor_id: int | None = None) -> Message | None:
        return self.get_messages(chat_id, [message_id], actor_id=actor_id)[0]

    def history(
        self,
        chat_id: int,
        *,
        actor_id: int | None = None,
        min_id: int = 0,
        max_id: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[Message]:
        """Messages with min_id < id < max_id (max_id None = no bound), newest first by default."""
        chat = self.chat(chat_id, actor_id)
        order = "DESC" if newest_first else "ASC"
        upper = max_id if max_id is not None else 2**62
        rows = self.db.execute(
            f"SELECT {_MSG_COLS} FROM messages m LEFT JOIN files f ON f.id = m.file_id"
            f" WHERE m.chat_key = ? AND m.message_id > ? AND m.message_id < ?"
            f" ORDER BY m.message_id {order} LIMIT ?",
            (chat.key, min_id, upper, limit),
        )
        return [_message(r) for r in rows]

    def pin_message(self, chat_id: int, message_id: int, *, actor_id: int | None = None) -> Message:
        chat = self.chat(chat_id, actor_id)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE messages SET pinned = 1 WHERE chat_key = ? AND message_id = ?", (chat.key, message_id)
            )
            if not cur.rowcount:
                raise WorldError("MESSAGE_ID_INVALID", f"no message {message_id} in {chat_id}")
        msg = self._message(chat.key, message_id)
        assert msg is not None
        self._emit(WorldEvent("pin", chat.chat_id, chat.key, (message_id,), msg))
        return msg

    def pin_service_message(self, chat_id: int, pinned_id: int, actor_id: int) -> Message | None:
        """The service message Telegram adds to a channel when a message is pinned ("… pinned «…»"): it takes
        a message id of its own, like any post (knob `pin_service_messages`)."""
        if not self.knobs.pin_service_messages or not self.chat(chat_id, actor_id).is_channel:
            return None
        return self.send_message(chat_id, actor_id, extra={"service": {"pinned_message_id": pinned_id}})

    def unpin_message(self, chat_id: int, message_id: int | None = None, *, actor_id: int | None = None) -> list[int]:
        """Unpin one message, or (message_id None) the most recent pinned one. Returns unpinned ids."""
        chat = self.chat(chat_id, actor_id)
        if message_id is None:
            current = self.pinned_message(chat_id, actor_id=actor_id)
            if current is None:
                return []
            message_id = current.message_id
        with self._tx() as db:
            cur = db.execute(
                "UPDATE messages SET pinned = 0 WHERE chat_key = ? AND message_id = ? AND pinned = 1",
                (chat.key, message_id),
            )
        if not cur.rowcount:
            return []
        self._emit(WorldEvent("unpin", chat.chat_id, chat.key, (message_id,)))
        return [message_id]

    def unpin_all(self, chat_id: int, *, actor_id: int | None = None) -> list[int]:
        chat = self.chat(chat_id, actor_id)
        ids = [r[0] for r in self.db.execute(
            "SELECT message_id FROM messages WHERE chat_key = ? AND pinned = 1", (chat.key,))]
        if ids:
            with self._tx() as db:
                db.execute("UPDATE messages SET pinned = 0 WHERE chat_key = ?", (chat.key,))
            self._emit(WorldEvent("unpin", chat.chat_id, chat.key, tuple(ids)))
        return ids

    def pinned_message(self, chat_id: int, *, actor_id: int | None = None) -> Message | None:
        """The most recent pinned message by *sending date* (ties: the higher id), as getChat reports."""
        chat = self.chat(chat_id, actor_id)
        row = self.db.execute(
            f"SELECT {_MSG_COLS} FROM messages m LEFT JOIN files f ON f.id = m.file_id"
            " WHERE m.chat_key = ? AND m.pinned = 1 ORDER BY m.date DESC, m.message_id DESC LIMIT 1",
            (chat.key,),
        ).fetchone()
        return _message(row) if row else None

    def pinned_ids(self, chat_id: int, *, actor_id: int | None = None) -> list[int]:
        chat = self.chat(chat_id, actor_id)
        return [r[0] for r in self.db.execute(
            "SELECT message_id FROM messages WHERE chat_key = ? AND pinned = 1 ORDER BY message_id", (chat.key,))]

    def _message(self, key: str, message_id: int) -> Message | None:
        row = self.db.execute(
            f"SELECT {_MSG_COLS} FROM messages m LEFT JOIN files f ON f.id = m.file_id"
            " WHERE m.chat_key = ? AND m.message_id = ?",
            (key, message_id),
        ).fetchone()
        return _message(row) if row else None

    def message_from_dict(self, data: dict[str, Any]) -> Message:
        """Rebuild a `Message.to_dict()` snapshot (used for queued updates)."""
        doc = self.file(data["document"]) if data.get("document") else None
        return Message(
            chat_id=data["chat_id"],
            message_id=data["message_id"],
            sender_id=data["sender_id"],
            date=data["date"],
            chat_key=data["chat_key"],
            text=data.get("text"),
            caption=data.get("caption"),
            document=doc,
            reply_markup=data.get("reply_markup"),
            edit_date=data.get("edit_date"),
            pinned=bool(data.get("pinned")),
            reply_to_message_id=data.get("reply_to_message_id"),
            extra=data.get("extra") or {},
        )

    # --- updates (Bot API getUpdates queue) ------------------------------------------------------

    def _queue_message_updates(self, db: sqlite3.Connection, chat: Chat, msg: Message, *, edited: bool) -> None:
        if chat.is_channel:
            kind = "edited_channel_post" if edited else "channel_post"
            bots = [r[0] for r in db.execute(
                "SELECT m.user_id FROM members m JOIN users u ON u.user_id = m.user_id"
                " WHERE m.chat_key = ? AND u.is_bot = 1 AND m.status IN ('creator', 'administrator')"
                " AND m.user_id != ?",
                (chat.key, msg.sender_id),
            )]
        elif msg.sender_id == chat.user_id:
            kind = "edited_message" if edited else "message"
            bots = [chat.bot_id] if chat.bot_id is not None else []
        else:
            return
        for bot_id in bots:
            self._push_update(db, bot_id, {"kind": kind, "message": msg.to_dict()})

    def _push_update(self, db: sqlite3.Connection, bot_id: int, payload: dict[str, Any]) -> int | None:
        row = db.execute("SELECT next_update_id, allowed_updates FROM users WHERE user_id = ?", (bot_id,)).fetchone()
        allowed = frozenset(json.loads(row[1])) if row[1] else DEFAULT_ALLOWED_UPDATES
        if payload["kind"] not in allowed:
            return None  # Telegram drops updates a bot did not ask for
        update_id = int(row[0])
        db.execute("UPDATE users SET next_update_id = ? WHERE user_id = ?", (update_id + 1, bot_id))
        db.execute("INSERT INTO updates VALUES(?, ?, ?)", (bot_id, update_id, json.dumps(payload)))
        event = self._bot_events.pop(bot_id, None)
        if event is not None:
            event.set()
        return update_id

    def push_callback_query(self, bot_id: int, user_id: int, message: Message, data: str) -> str:
        """Queue a callback_query update (a user pressed an inline button); returns its query id."""
        query_id = str(_rand63())
        payload = {
            "kind": "callback_query",
            "id": query_id,
            "from_id": user_id,
            "message": message.to_dict(),
            "data": data,
            "chat_instance": str(int.from_bytes(hashlib.sha256(message.chat_key.encode()).digest()[:7], "big")),
        }
        with self._tx() as db:
            self._push_update(db, bot_id, payload)
        self.extra[f"callback:{query_id}"] = {"bot_id": bot_id, "user_id": user_id, "answer": None}
        return query_id

    def answer_callback_query(self, query_id: str, bot_id: int, answer: dict[str, Any]) -> None:
        key = f"callback:{query_id}"
        record = self.extra.get(key)
        if record is None or record["bot_id"] != bot_id:
            raise WorldError("QUERY_ID_INVALID", "query is too old and response timeout expired or query ID is invalid")
        self.extra[key] = dict(record, answer=answer)
        self._emit(WorldEvent("callback_answer", 0, "", ()))

    def set_allowed_updates(self, bot_id: int, allowed: list[str] | None) -> None:
        value = json.dumps(sorted(set(allowed))) if allowed else None
        with self._tx() as db:
            db.execute("UPDATE users SET allowed_updates = ? WHERE user_id = ?", (value, bot_id))

    def get_updates(self, bot_id: int, offset: int = 0, limit: int = 100) -> list[Update]:
        """Bot API offset semantics: a positive `offset` confirms (drops) every update below it; a negative
        one returns the last -offset updates (and drops the older ones)."""
        limit = max(1, min(100, limit))
        with self._tx() as db:
            if offset > 0:
                db.execute("DELETE FROM updates WHERE bot_id = ? AND update_id < ?", (bot_id, offset))
            elif offset < 0:
                row = db.execute(
                    "SELECT update_id FROM updates WHERE bot_id = ? ORDER BY update_id DESC LIMIT 1 OFFSET ?",
                    (bot_id, -offset - 1),
                ).fetchone()
                if row is not None:
                    db.execute("DELETE FROM updates WHERE bot_id = ? AND update_id < ?", (bot_id, row[0]))
        rows = self.db.execute(
            "SELECT update_id, payload FROM updates WHERE bot_id = ? ORDER BY update_id LIMIT ?", (bot_id, limit)
        )
        return [Update(bot_id, r[0], json.loads(r[1])) for r in rows]

    def forget_update(self, bot_id: int, update_id: int) -> None:
        """Drop one delivered update (a webhook answered it with 2xx), whatever its place in the queue."""
        with self._tx() as db:
            db.execute("DELETE FROM updates WHERE bot_id = ? AND update_id = ?", (bot_id, update_id))

    def pending_update_count(self, bot_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM updates WHERE bot_id = ?", (bot_id,)).fetchone()[0])

    def updates_signal(self, bot_id: int) -> asyncio.Event:
        """An event set (once) when the next update is queued for `bot_id`; ask again after it fires."""
        return self._bot_events.setdefault(bot_id, asyncio.Event())

    async def wait_updates(self, bot_id: int, offset: int, limit: int, wait_s: float) -> list[Update]:
        """getUpdates with long polling: return at once if anything is pending, else wait up to `wait_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        updates = self.get_updates(bot_id, offset, limit)
        while not updates:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            event = self.updates_signal(bot_id)
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
            updates = self.get_updates(bot_id, max(offset, 0), limit)
        return updates

    # --- acting as a user -----------------------------------------------------------------------

    def user_says(self, user_id: int, bot_id: int, text: str) -> Message:
        """A user sends `text` to a bot (pressing a reply-keyboard button sends its text the same way)."""
        return self.send_message(bot_id, user_id, text=text)

    def press_inline_button(
        self, user_id: int, chat_id: int, message_id: int, *, bot_id: int, text_or_data: str
    ) -> str:
        """A user presses an inline button (matched by its text or callback_data) under a bot's message."""
        chat = self.chat(chat_id, bot_id)
        msg = self._message(chat.key, message_id)
        if msg is None:
            raise WorldError("MESSAGE_ID_INVALID", f"no message {message_id}")
        rows = (msg.reply_markup or {}).get("inline_keyboard") or []
        for row in rows:
            for button in row:
                if text_or_data in (button.get("text"), button.get("callback_data")) and "callback_data" in button:
                    return self.push_callback_query(bot_id, user_id, msg, button["callback_data"])
        raise WorldError("BUTTON_NOT_FOUND", f"no inline button {text_or_data!r} under message {message_id}")

    # --- the ready-made demo world --------------------------------------------------------------

    def ensure_demo(self) -> dict[str, Any]:
        """Create (once) a bot that is admin of a storage channel, plus a user. Returns their ids."""
        demo = self.extra.get("demo")
        if demo is not None and self.user(demo["bot_id"]) is not None:
            return dict(demo)
        bot = self.create_bot("tgsnap_demo_bot", first_name="tgsnap demo")
        user = self.user(42) or self.create_user("Алиса", user_id=42, username="alice")
        channel = self.create_channel("tgsnap storage", user.user_id)
        self.set_admin(channel.chat_id, bot.user_id)
        demo = {
            "bot_id": bot.user_id,
            "bot_username": bot.username,
            "user_id": user.user_id,
            "storage_chat_id": channel.chat_id,
            "storage_channel_id": channel.channel_id,
        }
        self.extra["demo"] = demo
        return dict(demo)


_USER_COLS = "user_id, is_bot, first_name, last_name, username, token, access_hash, language_code"
_CHAT_COLS = (
    "key, chat_id, kind, date, channel_id, access_hash, title, username, description, bot_id, user_id, pts,"
    " next_message_id"
)
_FILE_COLS = "id, access_hash, file_reference, size, name, mime_type, unique_id, date, dc_id"
_MSG_COLS = (
    "m.chat_key, m.message_id, m.chat_id, m.sender_id, m.date, m.text, m.caption, m.reply_markup, m.edit_date,"
    " m.pinned, m.reply_to, m.extra, f.id, f.access_hash, f.file_reference, f.size, f.name, f.mime_type,"
    " f.unique_id, f.date, f.dc_id"
)


def _user(r: Sequence[Any]) -> User:
    return User(
        user_id=r[0], is_bot=bool(r[1]), first_name=r[2], last_name=r[3], username=r[4], token=r[5],
        access_hash=r[6], language_code=r[7],
    )


def _chat(r: Sequence[Any]) -> Chat:
    return Chat(
        key=r[0], chat_id=r[1], kind=r[2], date=r[3], channel_id=r[4], access_hash=r[5], title=r[6],
        username=r[7], description=r[8], bot_id=r[9], user_id=r[10], pts=r[11], next_message_id=r[12],
    )


def _file(r: Sequence[Any]) -> FileRecord:
    return FileRecord(
        id=r[0], access_hash=r[1], file_reference=bytes(r[2]), size=r[3], name=r[4], mime_type=r[5],
        file_unique_id=r[6], date=r[7], dc_id=r[8],
    )


def _message(r: Sequence[Any]) -> Message:
    doc = _file(r[12:21]) if r[12] is not None else None
    return Message(
        chat_key=r[0], message_id=r[1], chat_id=r[2], sender_id=r[3], date=r[4], text=r[5], caption=r[6],
        reply_markup=json.loads(r[7]) if r[7] else None, edit_date=r[8], pinned=bool(r[9]),
        reply_to_message_id=r[10], extra=json.loads(r[11]) if r[11] else {}, document=doc,
    )
