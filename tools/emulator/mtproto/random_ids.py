"""Recently used random_ids per chat: Telegram answers RANDOM_ID_DUPLICATE to a second send with one."""

from __future__ import annotations

from collections import OrderedDict

WINDOW = 10_000


class RandomIds:
    def __init__(self, window: int = WINDOW) -> None:
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._window = window

    def seen(self, chat_key: str, random_id: int) -> bool:
        return (chat_key, random_id) in self._seen

    def add(self, chat_key: str, random_id: int) -> None:
        self._seen[(chat_key, random_id)] = None
        if len(self._seen) > self._window:
            self._seen.popitem(last=False)
