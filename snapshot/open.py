"""One factory from storage settings to a ready backend: `backend = await open_backend(settings)`.

    local    LocalDirBackend(settings.local_dir)
    botapi   BotApiBackend: Bot API only (aiogram), parts ≤ 20 MB, no discovery
    mtproto  MTProtoBackend: Telethon logged in as a bot, parallel transfers, parts up to 2000 MiB

The Telegram backends are opened (`await backend.open()`): the token, the storage channel, the bot's
rights and the pinned manifest are checked, and a ConfigError says what to fix. Opening never writes to
the channel. A separate storage bot (TGSNAP_STORAGE_BOT_TOKEN) is used for storage when set, so the
storage traffic does not eat the serving bot's rate budget.
"""

from __future__ import annotations

from snapshot.backend import Backend
from snapshot.backends.telegram_budget import BudgetConfig
from snapshot.errors import ConfigError
from snapshot.settings import StorageSettings


async def open_backend(settings: StorageSettings, *, budget: BudgetConfig | None = None,
                       connections: int = 6) -> Backend:
    """The backend `settings` describe, opened and checked.

    `budget` overrides the per-chat rate budget of the Telegram backends (default: 18 sends+edits per
    minute, burst 3); `connections` is the number of parallel MTProto transfer connections.
    """
    settings.validate()
    if settings.mode == "local":
        from snapshot.backends.local import LocalDirBackend

        assert settings.local_dir is not None
        return LocalDirBackend(settings.local_dir)
    assert settings.storage_chat is not None
    token, token_var = ((settings.storage_bot_token, "TGSNAP_STORAGE_BOT_TOKEN") if settings.storage_bot_token
                        else (settings.bot_token, "TGSNAP_BOT_TOKEN"))
    if settings.mode == "botapi":
        if not token:
            raise ConfigError("botapi storage needs a bot token: set TGSNAP_BOT_TOKEN (or TGSNAP_STORAGE_BOT_TOKEN)")
        from snapshot.backends.botapi import BotApiBackend

        backend: Backend = BotApiBackend(token, settings.storage_chat, api_url=settings.bot_api_url, budget=budget,
                                         token_var=token_var)
    elif settings.mode == "mtproto":
        from snapshot.backends.mtproto import MTProtoBackend

        backend = MTProtoBackend(bot_token=token, chat=settings.storage_chat, api_id=settings.api_id,
                                 api_hash=settings.api_hash, session=settings.mtproto_session,
                                 connections=connections, budget=budget, token_var=token_var)
    else:  # validate() has refused anything else already
        raise ConfigError(f"unknown storage mode {settings.mode!r}")
    try:
        await backend.open()  # type: ignore[attr-defined]
    except BaseException:
        await backend.close()
        raise
    return backend
