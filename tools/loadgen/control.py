"""An asyncio client for the emulator's control API: create users, act as them, set knobs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


class ControlError(Exception):
    pass


@dataclass
class Said:
    """One message a user sent and what the bot answered within the wait."""

    sent_id: int
    replies: list[str] = field(default_factory=list)
    #: for each reply, the message it quotes (admin commands quote the command), else None.
    reply_to: list[int | None] = field(default_factory=list)
    timed_out: bool = False
    #: seconds from sending to the last expected reply, as measured around the control API call.
    latency: float = 0.0


class Control:
    def __init__(self, control_url: str, *, connections: int = 100):
        self.base = control_url.rstrip("/")
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                           timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> Control:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self._http.request(method, self.base + path, json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise ControlError(f"control {method} {path}: HTTP {response.status}: {answer.get('error', answer)}")
            return answer

    async def create_user(self, first_name: str) -> int:
        return int((await self.request("POST", "/users", {"first_name": first_name}))["user_id"])

    async def say(self, user_id: int, bot: str | int, text: str, *, wait: float = 10.0, expect: int = 1) -> Said:
        started = time.perf_counter()
        answer = await self.request("POST", "/say", {"user_id": user_id, "bot": bot, "text": text, "wait": wait,
                                                     "expect": expect})
        return Said(sent_id=int(answer["sent"]["message_id"]),
                    replies=[r.get("text") or "" for r in answer.get("replies", [])],
                    reply_to=[r.get("reply_to_message_id") for r in answer.get("replies", [])],
                    timed_out=bool(answer.get("timed_out")), latency=time.perf_counter() - started)

    async def bot_messages(self, user_id: int, bot: str | int, *, after: int = 0) -> list[dict[str, Any]]:
        """The bot's messages in its private chat with `user_id` newer than message `after`."""
        answer = await self.request("GET", f"/chats/{user_id}/messages?bot={bot}&min_id={after}&limit=1000")
        bot_id = answer["chat"].get("bot_id")
        return [m for m in answer["messages"] if m["sender_id"] == bot_id]

    async def knobs(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        if values is None:
            return dict(await self.request("GET", "/knobs"))
        return dict(await self.request("POST", "/knobs", values))
