"""Plain records of the emulated Telegram world (no protocol shapes here).

Both fronts (Bot API over HTTP, MTProto over TCP) render these records into their own wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bot API ids of channels are "-100" followed by the channel id.
CHANNEL_ID_BASE = 10**12


def channel_chat_id(channel_id: int) -> int:
    """Bot API chat id (-100…) of a channel."""
    return -(CHANNEL_ID_BASE + channel_id)


def channel_id_of(chat_id: int) -> int | None:
    """Channel id of a Bot API chat id, or None when `chat_id` is not a channel id."""
    if chat_id < -CHANNEL_ID_BASE:
        return -chat_id - CHANNEL_ID_BASE
    return None


@dataclass(frozen=True, slots=True)
class User:
    """A person or a bot. Bots carry a `token`."""

    user_id: int
    first_name: str
    is_bot: bool = False
    last_name: str | None = None
    username: str | None = None
    access_hash: int = 0
    token: str | None = None
    language_code: str | None = None


@dataclass(frozen=True, slots=True)
class Chat:
    """A channel or a private dialog between a bot and a user.

    `chat_id` is the Bot API id: `-100<channel_id>` for channels, the user's id for a private dialog
    (as the bot sees it). `key` is the internal key ("c:<channel_id>" or "p:<bot_id>:<user_id>").
    """

    key: str
    chat_id: int
    kind: str  # "channel" | "private"
    date: int
    channel_id: int | None = None
    access_hash: int = 0
    title: str | None = None
    username: str | None = None
    description: str | None = None
    bot_id: int | None = None
    user_id: int | None = None
    pts: int = 1
    next_message_id: int = 1

    @property
    def is_channel(self) -> bool:
        return self.kind == "channel"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Stored file content plus both protocols' handles to it.

    `id`/`access_hash`/`file_reference`/`dc_id` are MTProto's document handle; `file_unique_id` is the
    Bot API's stable id. Bot API `file_id`s are bot-specific: `World.bot_file_id(rec, bot_id)`.
    """

    id: int
    access_hash: int
    file_reference: bytes
    size: int
    name: str
    mime_type: str
    file_unique_id: str
    date: int
    dc_id: int = 1


@dataclass(frozen=True, slots=True)
class Message:
    """One message. `chat_id` is the Bot API chat id (see `Chat`)."""

    chat_id: int
    message_id: int
    sender_id: int
    date: int
    chat_key: str
    text: str | None = None
    caption: str | None = None
    document: FileRecord | None = None
    reply_markup: dict[str, Any] | None = None
    edit_date: int | None = None
    pinned: bool = False
    reply_to_message_id: int | None = None
    # Front-specific extras (forward origin, entities, ...), JSON-able.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channel_id(self) -> int | None:
        return channel_id_of(self.chat_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot (the document is referenced by its record id)."""
        return {
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "sender_id": self.sender_id,
            "date": self.date,
            "chat_key": self.chat_key,
            "text": self.text,
            "caption": self.caption,
            "document": self.document.id if self.document else None,
            "reply_markup": self.reply_markup,
            "edit_date": self.edit_date,
            "pinned": self.pinned,
            "reply_to_message_id": self.reply_to_message_id,
            "extra": self.extra,
        }


@dataclass(frozen=True, slots=True)
class Update:
    """A queued update for a bot. `payload` is protocol-neutral JSON; the Bot API front renders it.

    Payload kinds: {"kind": "message"|"edited_message"|"channel_post"|"edited_channel_post",
    "message": Message.to_dict()} and {"kind": "callback_query", "id": str, "from_id": int,
    "message": Message.to_dict(), "data": str, "chat_instance": str}.
    """

    bot_id: int
    update_id: int
    payload: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.payload["kind"])
