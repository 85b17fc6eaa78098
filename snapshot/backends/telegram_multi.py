"""Storage spread over several channels (and storage bots): each lane brings its own rate budget.

Telegram's posting limit is per bot and per chat, so N storage channels (or N storage bots) give N times
the sends per minute and N times the upload connections. `MultiChannelBackend` puts each document into
the lane whose budget frees first (round-robin on ties) and keeps the manifest in the first lane.

A ref is `"<n>:<lane>:<tips>/<inner ref>"`:
- `n` is a per-process counter seeded from the clock in microseconds, taken when the put starts: storage
  order across lanes (`order_key`), later across restarts as long as the clock does not go backwards;
- `tips` is, for every MTProto lane, the highest message id known complete when the put started. Any
  document at or below those ids is older than this ref, so `discover(after)` scans each lane from the
  tip `after` recorded and keeps what has a larger `n`. For that, MTProto lanes write `n`, the lane and
  the tips into each document's caption (`put_labeled`) and read them back (`discover_labeled`);
  documents without that label (posted by someone else) are not reported by a multi-lane discovery.

Discovery needs every lane to be an MTProto lane; with Bot API lanes `can_discover` is False and, as for
one Bot API channel, the manifest (in lane 0) must list every delta — each delta then costs a send on
any lane plus an edit on lane 0, so two lanes already halve the time per delta.
"""

from __future__ import annotations

import re
import time
from typing import Protocol, runtime_checkable

from snapshot.backend import Backend, BackendInfo, Slot
from snapshot.errors import ConfigError, DocumentNotFound

_REF = re.compile(r"^(\d+):(\d+):([\d,]*)/(.+)$", re.S)
_LABEL = re.compile(r"^(\d+):(\d+):([\d,]*)$")


@runtime_checkable
class LabeledLane(Protocol):
    """What a lane needs for multi-lane discovery (the MTProto backend has it, the Bot API one not)."""

    @property
    def tip(self) -> int: ...

    async def put_labeled(self, name: str, data: bytes, label: str) -> str: ...

    async def discover_labeled(self, after: str | None) -> list[tuple[str, str | None, str | None]]: ...


def _tips(text: str) -> list[int]:
    return [int(t) for t in text.split(",")] if text else []


class MultiChannelBackend(Backend):
    """Several single-channel Telegram backends behind one: build it on unopened lanes, then `await open()`."""

    def __init__(self, lanes: list[Backend]) -> None:
        if not lanes:
            raise ConfigError("multi-channel storage needs at least one channel")
        self.lanes = lanes
        self._last_n = 0
        self._next = 0
        labeled: list[LabeledLane] = [lane for lane in lanes if isinstance(lane, LabeledLane)]
        #: the lanes again, when every one can label its documents (else None: no discovery).
        self._labeled: list[LabeledLane] | None = labeled if len(labeled) == len(lanes) else None

    def __repr__(self) -> str:
        return f"MultiChannelBackend({self.lanes!r})"

    async def open(self) -> MultiChannelBackend:
        """Open every lane (build the lanes unopened); a lane that fails closes the others."""
        try:
            for lane in self.lanes:
                await lane.open()
        except BaseException:
            await self.close()
            raise
        return self

    @property
    def info(self) -> BackendInfo:
        infos = [lane.info for lane in self.lanes]
        return BackendInfo(
            name="multi:" + "+".join(i.name for i in infos),
            can_discover=self._labeled is not None and all(i.can_discover for i in infos),
            max_document_size=min(i.max_document_size for i in infos),
            manifest_min_interval=infos[0].manifest_min_interval,
            delete_window=min((i.delete_window for i in infos if i.delete_window is not None), default=None),
        )

    # -- refs ------------------------------------------------------------------------------------------

    def _stamp(self) -> int:
        self._last_n = max(self._last_n + 1, time.time_ns() // 1000)
        return self._last_n

    def _parse(self, ref: str) -> tuple[int, int, list[int], str]:
        m = _REF.match(ref)
        if m is None or int(m.group(2)) >= len(self.lanes):
            raise DocumentNotFound(ref)
        return int(m.group(1)), int(m.group(2)), _tips(m.group(3)), m.group(4)

    def order_key(self, ref: str) -> tuple:
        m = _REF.match(ref)
        return (int(m.group(1)),) if m else (-1,)

    def _pick(self) -> int:
        """The lane whose budget has the earliest free slot; round-robin among equals."""
        n = len(self.lanes)
        order = [(self._next + k) % n for k in range(n)]

        def wait(i: int) -> float:
            budget = getattr(self.lanes[i], "budget", None)
            return budget.next_slot_in() if budget is not None else 0.0

        best = min(order, key=lambda i: (round(wait(i), 3), order.index(i)))
        self._next = (best + 1) % n
        return best

    # -- the Backend interface ---------------------------------------------------------------------------

    async def put(self, name: str, data: bytes) -> str:
        i = self._pick()
        n = self._stamp()
        labeled = self._labeled
        tips = ",".join(str(lane.tip) for lane in labeled) if labeled is not None else ""
        if labeled is not None:
            inner = await labeled[i].put_labeled(name, data, f"{n}:{i}:{tips}")
        else:
            inner = await self.lanes[i].put(name, data)
        return f"{n}:{i}:{tips}/{inner}"

    async def get(self, ref: str) -> bytes:
        _n, i, _tips_, inner = self._parse(ref)
        try:
            return await self.lanes[i].get(inner)
        except DocumentNotFound:
            raise DocumentNotFound(ref) from None

    # -- manifest slots: all in lane 0 ------------------------------------------------------------------

    async def publish_manifest(self, data: bytes) -> None:
        await self.lanes[0].publish_manifest(data)

    async def read_manifest(self) -> bytes | None:
        return await self.lanes[0].read_manifest()

    async def create_slot(self, data: bytes, *, after: str | None) -> str:
        return await self.lanes[0].create_slot(data, after=after)

    async def replace_slot(self, ref: str, data: bytes) -> None:
        await self.lanes[0].replace_slot(ref, data)

    async def newer_slot(self, ref: str, *, stored: str | None = None) -> str | None:
        inner = None
        if stored is not None:
            _n, i, _t, rest = self._parse(stored)
            inner = rest if i == 0 else None  # a gap check reads lane 0's message ids only
        return await self.lanes[0].newer_slot(ref, stored=inner)

    async def newest_slot(self) -> Slot | None:
        return await self.lanes[0].newest_slot()

    async def read_slot(self, ref: str) -> bytes:
        return await self.lanes[0].read_slot(ref)

    async def delete(self, refs: list[str]) -> None:
        by_lane: dict[int, list[str]] = {}
        for ref in refs:
            try:
                _n, i, _t, inner = self._parse(ref)
            except DocumentNotFound:
                continue
            by_lane.setdefault(i, []).append(inner)
        for i, inner_refs in by_lane.items():
            await self.lanes[i].delete(inner_refs)

    async def discover(self, after: str | None) -> list[str]:
        return [ref for ref, _name in await self.discover_named(after)]

    async def discover_named(self, after: str | None) -> list[tuple[str, str | None]]:
        labeled = self._labeled
        if labeled is None or not self.info.can_discover:
            return []
        floor, tips = 0, [0] * len(self.lanes)
        if after is not None:
            floor, _i, after_tips, _inner = self._parse(after)
            tips = (after_tips + [0] * len(self.lanes))[:len(self.lanes)]
        found: list[tuple[int, str, str | None]] = []
        for i, lane in enumerate(labeled):
            start = str(tips[i]) if tips[i] else None
            for inner, name, label in await lane.discover_labeled(start):
                m = _LABEL.match(label or "")
                if m is None or int(m.group(2)) != i:
                    continue  # not written by a multi-lane tgsnap writer
                n = int(m.group(1))
                if n > floor:
                    found.append((n, f"{n}:{i}:{m.group(3)}/{inner}", name))
        found.sort()
        return [(ref, name) for _n, ref, name in found]

    async def close(self) -> None:
        for lane in self.lanes:
            await lane.close()
