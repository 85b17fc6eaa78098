"""Webhook mode against the emulator's webhook delivery (real aiogram, real HTTP both ways).

The emulator posts updates like telegram-bot-api: secret-token header, at most max_connections requests
in flight, one per chat at a time, an update forgotten only on 2xx and retried otherwise.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from bot.app import Clicker
from bot.config import BotSettings
from core import Store, StoreConfig
from snapshot.backends.local import LocalDirBackend
from tools.emulator.testing import running_emulator
from tools.loadgen.control import Control


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings(emu, demo, tmp_path, port: int, **extra: str) -> BotSettings:
    values = {
        "TGSNAP_BOT_TOKEN": demo.bot_token,
        "TGSNAP_BOT_API_URL": emu.bot_api_url,
        "TGSNAP_STORAGE_MODE": "local",
        "TGSNAP_STORAGE_DIR": str(tmp_path / "storage"),
    }
    s = BotSettings(values=values, admin_ids=frozenset({demo.user_id}), flush_interval=30.0)
    s.webhook_url = f"http://127.0.0.1:{port}/hook"
    s.webhook_host = "127.0.0.1"
    s.webhook_port = port
    s.webhook_max_connections = int(extra.get("max_connections", "40"))
    s.webhook_secret = extra.get("secret")
    return s


async def bot_api(emu, token: str, method: str, **params):
    async with aiohttp.ClientSession() as session, session.post(f"{emu.bot_api_url}/bot{token}/{method}",
                                                                  json=params) as response:
        return response.status, await response.json()


async def test_webhook_serves_clicks_answers_only_durable_and_removes_itself_on_stop(tmp_path):
    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        port = free_port()
        # A 30 s flush interval: only the webhook's hurry can make a click durable within the test.
        s = settings(emu, demo, tmp_path, port, secret="s3cret_-")
        clicker = await Clicker.start(s, s.storage_settings())
        try:
            status, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
            assert info["result"]["url"] == s.webhook_url and info["result"]["max_connections"] == 40
            # getUpdates is refused while a webhook is set (telegram-bot-api Client.cpp).
            status, body = await bot_api(emu, demo.bot_token, "getUpdates")
            assert status == 409 and "webhook is active" in body["description"]
            user = await control.create_user("Ann")
            assert (await control.say(user, demo.bot_username, "/start")).replies == ["Приветствую Ann"]
            for n in range(1, 4):
                assert (await control.say(user, demo.bot_username, "Клик")).replies == [f"Кликов: {n}"]
            # Every update answered 2xx was durable first: the store has nothing dirty behind an answer.
            # (The info is asked for afresh: the one above predates the updates.)
            for _ in range(50):
                _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
                if info["result"]["pending_update_count"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert info["result"]["pending_update_count"] == 0
            assert clicker.store.stats().dirty_rows == 0, clicker.store.stats()
            # A request without the secret token is refused and handles nothing.
            async with aiohttp.ClientSession() as session:
                fake = {"update_id": 10**6, "message": {"message_id": 10**6, "date": 0, "text": "Клик",
                                                        "chat": {"id": user, "type": "private"},
                                                        "from": {"id": user, "is_bot": False, "first_name": "A"}}}
                async with session.post(s.webhook_url, json=fake) as response:
                    assert response.status == 401
                async with session.post(s.webhook_url, json=fake,
                                        headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as response:
                    assert response.status == 401
            assert clicker.webhook is not None and clicker.webhook.refused == 2
        finally:
            await clicker.stop()
        _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
        assert info["result"]["url"] == ""
        # The clicks are in storage.
        store = await Store.open(LocalDirBackend(tmp_path / "storage"), config=StoreConfig(writer_id="reader"))
        try:
            assert store.execute("SELECT clicks FROM users WHERE chat_id = ?", (user,)).fetchone() == (3,)
        finally:
            await store.close()


async def test_emulator_retries_until_2xx_and_caps_requests_in_flight(tmp_path):
    """Delivery as telegram-bot-api's WebhookActor: a failed update comes again, at most max_connections
    requests are in flight, one per chat."""
    from aiohttp import web

    seen: list[int] = []
    in_flight = 0
    most = 0
    fail_first = {"left": 1}
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        assert request.headers["X-Telegram-Bot-Api-Secret-Token"] == "tok"
        update = await request.json()
        in_flight += 1
        most = max(most, in_flight)
        try:
            if fail_first["left"]:
                fail_first["left"] -= 1
                return web.Response(status=502)
            await release.wait()
            seen.append(update["update_id"])
            return web.json_response({})
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, \
                Control(emu.control_url) as control:
            demo = emu.demo()
            status, body = await bot_api(emu, demo.bot_token, "setWebhook", url=f"http://127.0.0.1:{port}/hook",
                                         secret_token="tok", max_connections=3)
            assert status == 200, body
            status, body = await bot_api(emu, demo.bot_token, "setWebhook", url="http://127.0.0.1:1/x",
                                         secret_token="bad token!")
            assert status == 400 and "unallowed characters" in body["description"]
            users = [await control.create_user(f"u{i}") for i in range(6)]
            for u in users:  # two messages per chat, six chats
                await control.request("POST", "/say", {"user_id": u, "bot": demo.bot_username, "text": "a",
                                                       "wait": 0, "expect": 0})
                await control.request("POST", "/say", {"user_id": u, "bot": demo.bot_username, "text": "b",
                                                       "wait": 0, "expect": 0})
            await asyncio.sleep(0.5)
            assert most == 3  # max_connections, though 6 chats had updates ready
            _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
            assert info["result"]["last_error_message"] == "Wrong response from the webhook: 502 Bad Gateway"
            release.set()
            for _ in range(100):
                if len(seen) == 12:
                    break
                await asyncio.sleep(0.05)
            assert sorted(seen) == sorted(set(seen)) and len(seen) == 12  # the failed one came again, once
            _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
            assert info["result"]["pending_update_count"] == 0
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("env", [
    {"TGSNAP_WEBHOOK_URL": "ftp://x"}, {"TGSNAP_WEBHOOK_SECRET": "abc"},
    {"TGSNAP_WEBHOOK_URL": "https://x.example/h", "TGSNAP_WEBHOOK_SECRET": "has space"},
    {"TGSNAP_WEBHOOK_URL": "https://x.example/h", "TGSNAP_WEBHOOK_MAX_CONNECTIONS": "101"},
    {"TGSNAP_WEBHOOK_URL": "https://x.example/h", "TGSNAP_WEBHOOK_PORT": "http"},
])
def test_bad_webhook_settings_are_refused_at_start(env):
    from bot import config
    from snapshot.errors import ConfigError

    with pytest.raises(ConfigError):
        config.load([], environ=env, dotenv=False)


async def test_an_update_not_durable_in_time_gets_503_and_comes_again(tmp_path):
    """Slower durability than Telegram's patience: no 2xx, Telegram sends the update again, and the
    store's rule (a message counts once) makes the second handling harmless."""
    from aiogram import Bot, Dispatcher, Router
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message

    from bot.webhook import DurableWebhook

    class SlowStore:
        def __init__(self) -> None:
            self.durable = asyncio.Event()

        def write_ticket(self) -> int:
            return 1

        def hurry_wait(self) -> float | None:
            return None  # no rate budget

        async def wait_durable(self, ticket: int, *, hurry: bool = False) -> None:
            await self.durable.wait()

    handled: list[int] = []
    router = Router()

    @router.message()
    async def note(message: Message) -> None:
        handled.append(message.message_id)

    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        bot = Bot(demo.bot_token, session=AiohttpSession(api=TelegramAPIServer.from_base(emu.bot_api_url)))
        dispatcher = Dispatcher()
        dispatcher.include_router(router)
        store = SlowStore()
        port = free_port()
        hook = DurableWebhook(dispatcher, bot, store, url=f"http://127.0.0.1:{port}/hook",  # type: ignore[arg-type]
                              secret_token="t", host="127.0.0.1", port=port)
        hook.answer_within = 0.3
        await hook.start()
        try:
            user = await control.create_user("Ann")
            await control.request("POST", "/say", {"user_id": user, "bot": demo.bot_username, "text": "hi",
                                                   "wait": 0, "expect": 0})
            for _ in range(100):
                if len(handled) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(handled) >= 2 and len(set(handled)) == 1  # the same message, delivered again
            _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
            assert info["result"]["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"
            assert info["result"]["pending_update_count"] == 1  # not forgotten: no 2xx yet
            store.durable.set()
            for _ in range(100):
                _, info = await bot_api(emu, demo.bot_token, "getWebhookInfo")
                if info["result"]["pending_update_count"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert info["result"]["pending_update_count"] == 0  # answered 200 once durable
        finally:
            hook.stop()
            await hook._finish(0.0)
            await bot.session.close()
