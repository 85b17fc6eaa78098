"""The control API: JSON over HTTP under `/control`, for tests and people to drive the world.

Act as a user (type text, press reply-keyboard or inline buttons) and collect the bot's replies, read a
chat, list a channel, create bots/users/channels, set the realism knobs and inject faults. Never faulted,
never rate limited, never delayed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .knobs import FaultRule
from .records import Chat, Message, User
from .world import World, WorldError, WorldEvent

if TYPE_CHECKING:
    from .app import Emulator

PREFIX = "/control"


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload, ensure_ascii=False),
                        content_type="application/json")


def message_json(msg: Message) -> dict[str, Any]:
    """A protocol-neutral view of a message (documents by metadata, not by a bot's file_id)."""
    doc = msg.document
    return {
        "chat_id": msg.chat_id,
        "message_id": msg.message_id,
        "date": msg.date,
        "sender_id": msg.sender_id,
        "text": msg.text,
        "caption": msg.caption,
        "document": None if doc is None else {
            "id": doc.id,
            "file_unique_id": doc.file_unique_id,
            "name": doc.name,
            "size": doc.size,
            "mime_type": doc.mime_type,
        },
        "reply_markup": msg.reply_markup,
        "edit_date": msg.edit_date,
        "pinned": msg.pinned,
        "reply_to_message_id": msg.reply_to_message_id,
        "forward": msg.extra.get("forward"),
    }


def user_json(user: User, *, with_token: bool = False) -> dict[str, Any]:
    out = {"user_id": user.user_id, "first_name": user.first_name, "last_name": user.last_name,
           "username": user.username, "is_bot": user.is_bot}
    if with_token and user.token:
        out["token"] = user.token
    return out


def chat_json(world: World, chat: Chat) -> dict[str, Any]:
    out: dict[str, Any] = {"chat_id": chat.chat_id, "kind": chat.kind, "title": chat.title,
                           "username": chat.username, "next_message_id": chat.next_message_id}
    if chat.is_channel:
        out["channel_id"] = chat.channel_id
        out["members"] = [{"user_id": uid, "status": status, "rights": rights}
                          for uid, status, rights in world.members(chat.chat_id)]
    else:
        out["bot_id"] = chat.bot_id
        out["user_id"] = chat.user_id
    pinned = world.pinned_message(chat.chat_id, actor_id=chat.bot_id)
    out["pinned_message_id"] = pinned.message_id if pinned else None
    return out


class ControlApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.world = emulator.world

    def routes(self) -> list[web.RouteDef]:
        h = self._wrap
        p = PREFIX
        return [
            web.get(p, h(self.index)),
            web.get(p + "/", h(self.index)),
            web.get(p + "/info", h(self.info)),
            web.post(p + "/demo", h(self.demo)),
            web.get(p + "/users", h(self.list_users)),
            web.post(p + "/users", h(self.create_user)),
            web.post(p + "/bots", h(self.create_bot)),
            web.get(p + "/channels", h(self.list_channels)),
            web.post(p + "/channels", h(self.create_channel)),
            web.post(p + "/channels/{chat_id}/members", h(self.set_member)),
            web.get(p + "/chats/{chat_id}", h(self.get_chat)),
            web.get(p + "/chats/{chat_id}/messages", h(self.list_messages)),
            web.get(p + "/files/{file_id}", h(self.get_file)),
            web.post(p + "/say", h(self.say)),
            web.get(p + "/knobs", h(self.get_knobs)),
            web.post(p + "/knobs", h(self.set_knobs)),
            web.get(p + "/faults", h(self.get_faults)),
            web.post(p + "/faults", h(self.add_fault)),
            web.delete(p + "/faults", h(self.clear_faults)),
            web.post(p + "/limiter/reset", h(self.reset_limiter)),
        ]

    def _wrap(
        self, fn: Callable[[web.Request], Awaitable[Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                result = await fn(request)
            except ControlError as exc:
                return _json({"error": str(exc)}, status=exc.status)
            except WorldError as exc:
                return _json({"error": str(exc), "code": exc.code}, status=400)
            except (ValueError, TypeError, KeyError) as exc:
                return _json({"error": f"{type(exc).__name__}: {exc}"}, status=400)
            if isinstance(result, web.StreamResponse):
                return result
            return _json(result)

        return handler

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise ControlError(400, "the body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        return data

    def _user(self, ref: Any, *, bot: bool | None = None) -> User:
        """A user or bot by id or @username."""
        user: Any
        if isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit()):
            user = self.world.user(int(ref))
        elif isinstance(ref, str):
            user = self.world.resolve_username(ref)
        else:
            user = None
        if not isinstance(user, User):
            raise ControlError(404, f"no {'bot' if bot else 'user'} {ref!r}")
        if bot is not None and user.is_bot != bot:
            raise ControlError(400, f"{ref!r} is {'not ' if bot else ''}a bot")
        return user

    def _chat(self, request: web.Request) -> Chat:
        raw = request.match_info["chat_id"]
        bot_ref = request.query.get("bot")
        bot_id = self._user(bot_ref, bot=True).user_id if bot_ref else None
        if raw.startswith("@"):
            found = self.world.resolve_username(raw)
            if isinstance(found, Chat):
                return found
            raise ControlError(404, f"no channel {raw}")
        try:
            return self.world.chat(int(raw), bot_id)
        except WorldError as exc:
            raise ControlError(404, str(exc)) from None

    # --- endpoints ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> Any:
        return {"endpoints": [f"{r.method} {r.path}" for r in self.routes() if r.path != PREFIX + "/"]}

    async def info(self, request: web.Request) -> Any:
        return self.emulator.info()

    async def demo(self, request: web.Request) -> Any:
        return self.emulator.demo().to_dict()

    async def list_users(self, request: web.Request) -> Any:
        return {"users": [user_json(u) for u in self.world.users()]}

    async def create_user(self, request: web.Request) -> Any:
        body = await self._body(request)
        user = self.world.create_user(
            body.get("first_name") or "User", user_id=body.get("user_id"), username=body.get("username"),
            last_name=body.get("last_name"), language_code=body.get("language_code"),
        )
        return user_json(user)

    async def create_bot(self, request: web.Request) -> Any:
        body = await self._body(request)
        if not body.get("username"):
            raise ControlError(400, "a bot needs a username ending in 'bot'")
        bot = self.world.create_bot(body["username"], first_name=body.get("first_name"),
                                    user_id=body.get("user_id"), token=body.get("token"))
        return user_json(bot, with_token=True)

    async def list_channels(self, request: web.Request) -> Any:
        return {"channels": [chat_json(self.world, c) for c in self.world.channels()]}

    async def create_channel(self, request: web.Request) -> Any:
        body = await self._body(request)
        creator = body.get("creator_id")
        if creator is None:
            people = self.world.users(bots=False)
            creator = people[0].user_id if people else self.world.create_user("Channel owner").user_id
        chat = self.world.create_channel(body.get("title") or "Channel", int(creator), username=body.get("username"),
                                         description=body.get("description"), channel_id=body.get("channel_id"))
        for admin in body.get("admins") or []:
            self.world.set_admin(chat.chat_id, self._user(admin).user_id, body.get("rights"))
        return chat_json(self.world, self.world.chat(chat.chat_id))

    async def set_member(self, request: web.Request) -> Any:
        chat = self._chat(request)
        body = await self._body(request)
        user = self._user(body.get("user_id"))
        self.world.set_member(chat.chat_id, user.user_id, body.get("status", "administrator"), body.get("rights"))
        return chat_json(self.world, self.world.chat(chat.chat_id))

    async def get_chat(self, request: web.Request) -> Any:
        return chat_json(self.world, self._chat(request))

    async def list_messages(self, request: web.Request) -> Any:
        chat = self._chat(request)
        q = request.query
        newest_first = q.get("order", "asc") == "desc"
        msgs = self.world.history(
            chat.chat_id, actor_id=chat.bot_id, min_id=int(q.get("min_id", 0)),
            max_id=int(q["max_id"]) if "max_id" in q else None, limit=int(q.get("limit", 100)),
            newest_first=newest_first if "min_id" not in q else False,
        )
        if newest_first and "min_id" in q:
            msgs.reverse()
        sender = q.get("sender")
        if sender:
            sender_id = self._user(sender).user_id
            msgs = [m for m in msgs if m.sender_id == sender_id]
        return {"chat": chat_json(self.world, chat), "messages": [message_json(m) for m in msgs]}

    async def get_file(self, request: web.Request) -> Any:
        ref = request.match_info["file_id"]
        rec = self.world.file(int(ref)) if ref.isdigit() else self.world.file_by_unique_id(ref)
        if rec is None:
            raise ControlError(404, f"no file {ref}")
        return web.FileResponse(self.world.file_path(rec.id), headers={
            "Content-Type": "application/octet-stream", "X-File-Name": rec.name.encode("ascii", "replace").decode()})

    async def say(self, request: web.Request) -> Any:
        """Act as a user towards a bot: {"user_id", "bot", one of "text" | "button" | "callback"
        ({"message_id", "data"}), "wait" (s, default 5), "expect" (new messages to wait for: default 1, or 0
        for an inline button), "expect_edits" (default 0), "settle" (s to keep listening after, default 0)}."""
        body = await self._body(request)
        user = self._user(body.get("user_id"), bot=False)
        bot = self._user(body.get("bot"), bot=True)
        wait_s = float(body.get("wait", 5.0))
        chat = self.world.private_chat(bot.user_id, user.user_id)
        action: Callable[[], dict[str, Any]]
        if body.get("text") is not None:
            text = str(body["text"])
            action = lambda: {"sent": message_json(self.world.user_says(user.user_id, bot.user_id, text))}  # noqa: E731
            expect = int(body.get("expect", 1))
        elif body.get("button") is not None:
            action, expect = self._press(user, bot, chat, str(body["button"]), body)
        elif body.get("callback") is not None:
            cb = body["callback"]
            if chat is None:
                raise ControlError(400, "no dialog with this bot yet")
            action = self._inline_press(user, bot, int(cb["message_id"]), str(cb.get("data") or cb.get("text")))
            expect = int(body.get("expect", 0))
        else:
            raise ControlError(400, "say needs 'text', 'button' or 'callback'")
        return await self._act_and_collect(user, bot, action, expect, int(body.get("expect_edits", 0)), wait_s,
                                           float(body.get("settle", 0.0)))

    def _press(self, user: User, bot: User, chat: Chat | None, button: str,
               body: dict[str, Any]) -> tuple[Callable[[], dict[str, Any]], int]:
        """Pressing a button: a reply-keyboard button sends its text; an inline one sends a callback."""
        recent = self.world.history(user.user_id, actor_id=bot.user_id, limit=50) if chat else []
        for msg in recent:
            if msg.sender_id != bot.user_id or not msg.reply_markup:
                continue
            markup = msg.reply_markup
            if "inline_keyboard" in markup:
                for row in markup["inline_keyboard"]:
                    for b in row:
                        if button in (b.get("text"), b.get("callback_data")) and "callback_data" in b:
                            return self._inline_press(user, bot, msg.message_id, button), int(body.get("expect", 0))
            if "keyboard" in markup:
                texts = [b if isinstance(b, str) else b.get("text") for row in markup["keyboard"] for b in row]
                if button in texts:
                    return (lambda: {"sent": message_json(self.world.user_says(user.user_id, bot.user_id, button))},
                            int(body.get("expect", 1)))
                break  # the newest reply keyboard is the one on screen
            if markup.get("remove_keyboard"):
                break
        raise ControlError(400, f"the bot shows no button {button!r} to user {user.user_id}")

    def _inline_press(self, user: User, bot: User, message_id: int, button: str) -> Callable[[], dict[str, Any]]:
        return lambda: {"callback_query_id": self.world.press_inline_button(
            user.user_id, user.user_id, message_id, bot_id=bot.user_id, text_or_data=button)}

    async def _act_and_collect(self, user: User, bot: User, action: Callable[[], dict[str, Any]], expect: int,
                               expect_edits: int, wait_s: float, settle_s: float) -> dict[str, Any]:
        """Run `action`, then collect the bot's new messages and edits in the dialogue until `expect` replies
        and `expect_edits` edits arrived (and an inline press was answered), or `wait_s` passed; then keep
        listening `settle_s` more seconds for stragglers."""
        key = f"p:{bot.user_id}:{user.user_id}"
        replies: list[Message] = []
        edits: dict[int, Message] = {}
        changed = asyncio.Event()

        def on_event(event: WorldEvent) -> None:
            if event.chat_key == key and event.message is not None and event.message.sender_id == bot.user_id:
                if event.kind == "new":
                    replies.append(event.message)
                elif event.kind == "edit":
                    edits[event.message.message_id] = event.message
            changed.set()

        unsubscribe = self.world.subscribe(on_event)
        try:
            result = action()
            query_id = result.get("callback_query_id")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s

            def done() -> bool:
                answered = query_id is None or self._callback(query_id).get("answer") is not None
                return answered and len(replies) >= expect and len(edits) >= expect_edits

            while not done() and loop.time() < deadline:
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            if settle_s > 0:
                await asyncio.sleep(settle_s)
        finally:
            unsubscribe()
        result["replies"] = [message_json(m) for m in replies]
        result["edits"] = [message_json(m) for m in edits.values()]
        if query_id is not None:
            result["callback_answer"] = self._callback(query_id).get("answer")
        result["timed_out"] = not done()
        return result

    def _callback(self, query_id: str) -> dict[str, Any]:
        return self.world.extra.get(f"callback:{query_id}") or {}

    async def get_knobs(self, request: web.Request) -> Any:
        return self.world.knobs.to_dict()

    async def set_knobs(self, request: web.Request) -> Any:
        self.world.knobs.update(await self._body(request))
        return self.world.knobs.to_dict()

    async def get_faults(self, request: web.Request) -> Any:
        return {"faults": [dataclasses.asdict(r) for r in self.world.knobs.faults]}

    async def add_fault(self, request: web.Request) -> Any:
        self.world.knobs.add_fault(FaultRule(**await self._body(request)))
        return await self.get_faults(request)

    async def clear_faults(self, request: web.Request) -> Any:
        self.world.knobs.clear_faults()
        return {"faults": []}

    async def reset_limiter(self, request: web.Request) -> Any:
        self.world.limiter.reset()
        return {"ok": True}
