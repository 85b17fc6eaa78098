"""Recently used random_ids per chat: Telegram answers RANDOM_ID_DUPLICATE to a second send with one."""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 10_000


class RandomIds:
    def __init__(self, window: int = WINDOW) -> None:
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._window = window

    def add(self, chat_key: str, random_id: int) -> bool:
        """Record a random_id; False if this chat already saw it."""
        ident = (chat_key, random_id)
        if ident in self._seen:
            return False
        self._seen[ident] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
        return True
