"""The storage channel's conventions, shared by the Bot API and MTProto backends.

A storage channel holds:
- one **pinned manifest message**: a document named `tgsnap-manifest`, edited in place on every
  publication (one edit = an atomic switch). It is the only thing tgsnap ever pins, because the Bot API's
  getChat reports just the most recent pinned message (by sending date);
- **documents**: one message per document, the file named after the replica's name hint.

No message id is ever configured: the pinned message is the entry point. Opening never writes; the first
publication on an empty channel sends and pins the manifest. Foreign content is never edited or deleted:
a pinned message that is not a tgsnap manifest stops the open with an error that says what to do.
"""

from __future__ import annotations

import re

from snapshot.errors import BackendError, ConfigError

MANIFEST_NAME = "tgsnap-manifest"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

#: rights a storage bot needs in a channel, as (Bot API field, MTProto ChatAdminRights field, what it is for)
REQUIRED_RIGHTS = (
    ("can_post_messages", "post_messages", "Post messages (store documents)"),
    ("can_edit_messages", "edit_messages", "Edit messages of others (edit and pin the manifest)"),
)


def parse_chat(chat: str | int) -> int | str:
    """A configured storage chat as the APIs want it: -100… ids as int, @usernames as str."""
    if isinstance(chat, int):
        return chat
    text = chat.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"@?[A-Za-z][A-Za-z0-9_]{3,}", text):
        return text if text.startswith("@") else "@" + text
    raise ConfigError(f"TGSNAP_STORAGE_CHAT {chat!r} is neither a numeric chat id (-100…) nor an @username")


def file_name(hint: str) -> str:
    """The document's file name for a replica's name hint (never the manifest's own name)."""
    safe = _UNSAFE.sub("_", hint)[:120] or "document"
    return "doc-" + safe if safe.startswith(MANIFEST_NAME) else safe


def is_manifest_name(name: str | None) -> bool:
    return name == MANIFEST_NAME


def not_a_channel(chat: object, kind: str) -> ConfigError:
    return ConfigError(
        f"storage chat {chat} is a {kind}, not a channel: create a private channel, add the bot as an "
        "administrator, and set TGSNAP_STORAGE_CHAT to its -100… id")


def chat_not_found(chat: object, bot: str) -> ConfigError:
    return ConfigError(
        f"storage chat {chat} not found or {bot} is not in it: check TGSNAP_STORAGE_CHAT (a channel's id "
        f"starts with -100) and add {bot} to the channel as an administrator")


def missing_rights(chat: object, bot: str, missing: list[str]) -> ConfigError:
    return ConfigError(
        f"{bot} lacks administrator rights in storage chat {chat}: {', '.join(missing)}. Open the channel → "
        f"Administrators → {bot} and enable them (nothing was changed in the channel)")


def foreign_pin(chat: object, message_id: int, manifest_id: int | None = None) -> ConfigError | BackendError:
    """At open: a ConfigError. While running (`manifest_id` known): someone pinned over our manifest."""
    if manifest_id is not None and manifest_id != message_id:
        return BackendError(
            f"message {message_id} was pinned in {chat} over the tgsnap manifest (message {manifest_id}): "
            "unpin it — the storage channel must pin nothing but the manifest", retryable=False)
    return ConfigError(
        f"the pinned message in {chat} (message {message_id}) is not a tgsnap manifest; point "
        "TGSNAP_STORAGE_CHAT at an empty channel or the right one (nothing was changed in the channel)")


def lost_pin(chat: object, message_id: int) -> ConfigError:
    return ConfigError(
        f"storage chat {chat} holds a tgsnap manifest (message {message_id}) that is not pinned: pin it again "
        "in the channel (Pin message), then restart; tgsnap will not start a new, empty storage over it")


def bad_token(var: str = "TGSNAP_BOT_TOKEN") -> ConfigError:
    return ConfigError(f"Telegram rejected the bot token: check {var} (from @BotFather)")
