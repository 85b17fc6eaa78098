"""The clicker on PostgreSQL: the bench's baseline bot for the `e2e` measure (not a product).

    python -m tools.bench.pgbot --api-url http://127.0.0.1:PORT --bot TOKEN postgresql://... [--bot ...]

The same conversation as bot/handlers (registration, «Клик», «Рейтинг», the fallback; no admin
commands), the same texts and keyboard (bot/texts.py, bot/keyboards.py), and bot/users.py's queries in
PostgreSQL's dialect (tools/bench/handler.py's, which docs/migrating.md shows) on the same table and
index, through an asyncpg pool with prepared statements, with the same aiogram costs
removed as in the product (bot/aiogram_costs.py: filters on the loop, not in a thread; answer models
not rebuilt). It polls with aiogram's own `start_polling`:
with PostgreSQL a write is durable when its statement returns, so there is nothing to wait for before
an update is confirmed (the way a PostgreSQL clicker would be written). Several bots (each its own
token, DSN and pool) may share the process: the bench measures one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ChatType
from aiogram.filters import CommandStart
from aiogram.types import Message

from bot import texts
from bot.aiogram_costs import inline
from bot.keyboards import main_keyboard
from tools.bench.handler import PG_CLICK, PG_NAME, PG_REGISTER, PG_TOP, PG_TOTAL


class PgUsers:
    """bot.users.Users's methods, awaited, over an asyncpg pool (asyncpg caches each prepared statement
    per connection)."""

    def __init__(self, pool):
        self.pool = pool

    async def register(self, chat_id: int, name: str, username: str | None) -> str:
        async with self.pool.acquire() as conn:
            await conn.execute(PG_REGISTER, chat_id, name, username, time.time())
            return await conn.fetchval(PG_NAME, chat_id)

    async def name(self, chat_id: int) -> str | None:
        return await self.pool.fetchval(PG_NAME, chat_id)

    async def click(self, chat_id: int, message_id: int) -> int | None:
        return await self.pool.fetchval(PG_CLICK, chat_id, message_id)

    async def rating(self, size: int) -> tuple[int, list[tuple[str, int]]]:
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(PG_TOTAL)
            top = [(r[0], r[1]) for r in await conn.fetch(PG_TOP, size)]
        return total, top


def router() -> Router:
    router = Router(name="clicker-postgres")
    router.message.filter(inline(F.chat.type == ChatType.PRIVATE))

    @router.message(CommandStart())
    async def start(message: Message, users: PgUsers) -> None:
        name = await users.register(message.chat.id, message.from_user.first_name, message.from_user.username)
        await message.answer(texts.greeting(name), reply_markup=main_keyboard())

    @router.message(inline(F.text == texts.CLICK_BUTTON))
    async def click(message: Message, users: PgUsers) -> None:
        count = await users.click(message.chat.id, message.message_id)
        await message.answer(texts.NOT_REGISTERED if count is None else texts.clicks(count))

    @router.message(inline(F.text == texts.RATING_BUTTON))
    async def rating(message: Message, users: PgUsers) -> None:
        if await users.name(message.chat.id) is None:
            await message.answer(texts.NOT_REGISTERED)
            return
        total, top = await users.rating(texts.RATING_SIZE)
        for part in texts.split_message(texts.rating(total, top)):
            await message.answer(part)

    @router.message()
    async def anything_else(message: Message, users: PgUsers) -> None:
        if await users.name(message.chat.id) is None:
            await message.answer(texts.NOT_REGISTERED)
        else:
            await message.answer(texts.USE_BUTTONS, reply_markup=main_keyboard())

    return router


async def serve_one(dsn: str, token: str, api_url: str, pool_size: int) -> None:
    import asyncpg
    from aiogram.methods import GetUpdates, SendMessage

    from bot.aiogram_costs import keep_response_types

    # the same aiogram costs removed as in the product clicker (bot/aiogram_costs.py), so the
    # comparison is of the storage, not of which bot works around aiogram
    keep_response_types(SendMessage, GetUpdates)
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    bot = Bot(token=token, session=AiohttpSession(api=TelegramAPIServer.from_base(api_url)))
    dispatcher = Dispatcher()
    dispatcher["users"] = PgUsers(pool)
    dispatcher.include_router(router())
    try:
        await dispatcher.start_polling(bot, handle_signals=False, polling_timeout=10)
    finally:
        await pool.close()
        await bot.session.close()


async def run(bots: list[tuple[str, str]], api_url: str, pool_size: int) -> None:
    """Each (token, dsn) polled by its own Dispatcher and pool; one process, so the bench pays for
    importing aiogram once (seconds of CPU). Only one of them is sent messages at a time."""
    import signal

    from bot.aiogram_costs import freeze_startup_objects

    tasks = [asyncio.create_task(serve_one(dsn, token, api_url, pool_size)) for token, dsn in bots]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
    freeze_startup_objects()  # as the product clicker does once serving (bot/aiogram_costs.py)
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.pgbot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bot", nargs=2, action="append", required=True, metavar=("TOKEN", "DSN"),
                   help="a bot token and the PostgreSQL holding its users table (repeatable)")
    p.add_argument("--api-url", required=True, help="the Bot API server (the emulator's)")
    p.add_argument("--pool", type=int, default=10, help="PostgreSQL connections per bot (default 10)")
    args = p.parse_args(argv)
    asyncio.run(run([(t, d) for t, d in args.bot], args.api_url, args.pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
