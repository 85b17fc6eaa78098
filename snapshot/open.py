"""One factory from storage settings to a ready backend: `backend = await open_backend(settings)`.

    local    LocalDirBackend(settings.local_dir)
    botapi   BotApiBackend: Bot API only (aiogram), parts ≤ 20 MB, no discovery
    mtproto  MTProtoBackend: Telethon logged in as a bot, parallel transfers, parts up to 2000 MiB

The Telegram backends are opened (`await backend.open()`): the token, the storage channel, the bot's
rights and the pinned manifest are checked, and a ConfigError says what to fix. Opening never writes to
the channel. A separate storage bot (TGSNAP_STORAGE_BOT_TOKEN) is used for storage when set, so the
storage traffic does not eat the serving bot's rate budget.

Several channels multiply the rate budget: TGSNAP_STORAGE_CHAT="-100111,-100222" gives a
`MultiChannelBackend` (the manifest lives in the first channel). TGSNAP_STORAGE_BOT_TOKEN may list
several tokens too (one per channel, reused in turn); with MTProto, TGSNAP_MTPROTO_SESSION then lists one
session per token, in the same order.
"""

from __future__ import annotations

from snapshot.backend import Backend
from snapshot.backends.telegram_budget import BudgetConfig
from snapshot.errors import ConfigError
from snapshot.settings import StorageSettings


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def open_backend(settings: StorageSettings, *, budget: BudgetConfig | None = None,
                       connections: int = 6, create: bool = True) -> Backend:
    """The backend `settings` describe, opened and checked.

    `budget` overrides the per-chat rate budget of the Telegram backends (default: 18 sends+edits per
    minute, burst 3, per bot and channel); `connections` is the number of parallel MTProto transfer
    connections per channel. `create=False`: a local directory is opened as it is, nothing created.
    """
    settings.validate()
    if settings.mode == "local":
        from snapshot.backends.local import LocalDirBackend

        assert settings.local_dir is not None
        return LocalDirBackend(settings.local_dir, create=create)
    chats = _split(settings.storage_chat)
    token_var = "TGSNAP_STORAGE_BOT_TOKEN" if settings.storage_bot_token else "TGSNAP_BOT_TOKEN"
    tokens = _split(settings.storage_bot_token or settings.bot_token)
    if not chats:
        raise ConfigError("Telegram storage needs TGSNAP_STORAGE_CHAT (the storage channel's -100… id)")
    if not tokens:
        raise ConfigError(f"{settings.mode} storage needs a bot token: set TGSNAP_BOT_TOKEN "
                          "(or TGSNAP_STORAGE_BOT_TOKEN)")
    sessions = _split(settings.mtproto_session)
    if sessions and len(sessions) != len(tokens):
        raise ConfigError(f"TGSNAP_MTPROTO_SESSION lists {len(sessions)} session(s) for {len(tokens)} bot token(s) "
                          f"in {token_var}: give one session per token, in the same order")

    lanes: list[Backend] = []
    for k, chat in enumerate(chats):
        token = tokens[k % len(tokens)]
        if settings.mode == "botapi":
            from snapshot.backends.botapi import BotApiBackend

            lanes.append(BotApiBackend(token, chat, api_url=settings.bot_api_url, budget=budget,
                                       token_var=token_var, local=settings.bot_api_local))
        elif settings.mode == "mtproto":
            from snapshot.backends.mtproto import MTProtoBackend

            lanes.append(MTProtoBackend(bot_token=token, chat=chat, api_id=settings.api_id,
                                        api_hash=settings.api_hash,
                                        session=sessions[k % len(tokens)] if sessions else None,
                                        connections=connections, budget=budget, token_var=token_var,
                                        session_dir=settings.mtproto_session_dir))
        else:  # validate() has refused anything else already
            raise ConfigError(f"unknown storage mode {settings.mode!r}")
    if len(lanes) == 1:
        backend = lanes[0]
    else:
        from snapshot.backends.telegram_multi import MultiChannelBackend

        backend = MultiChannelBackend(lanes)
    try:
        await backend.open()
    except BaseException:
        await backend.close()
        raise
    return backend
