"""Bot API errors in Telegram's own shape: {"ok": false, "error_code", "description", "parameters"}."""

from __future__ import annotations

import math
from typing import Any

from ..world import WorldError


class BotApiError(Exception):
    def __init__(self, code: int, description: str, *, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": max(1, math.ceil(self.retry_after))}
        return out


def bad_request(text: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {text}")


def forbidden(text: str) -> BotApiError:
    return BotApiError(403, f"Forbidden: {text}")


def too_many_requests(retry_after: float) -> BotApiError:
    seconds = max(1, math.ceil(retry_after))
    return BotApiError(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)


UNAUTHORIZED = BotApiError(401, "Unauthorized")
NOT_FOUND = BotApiError(404, "Not Found")
ENTITY_TOO_LARGE = BotApiError(413, "Request Entity Too Large")

_WORLD_CODES = {
    "CHAT_NOT_FOUND": "chat not found",
    "PEER_ID_INVALID": "chat not found",
    "MESSAGE_ID_INVALID": "message not found",
    "MESSAGE_EMPTY": "message text is empty",
    "USER_ID_INVALID": "user not found",
    "QUERY_ID_INVALID": "query is too old and response timeout expired or query ID is invalid",
}


def from_world(exc: WorldError) -> BotApiError:
    if exc.code == "USER_IS_BLOCKED":
        return forbidden("bot can't initiate conversation with a user")
    return bad_request(_WORLD_CODES.get(exc.code, exc.code.lower().replace("_", " ")))
