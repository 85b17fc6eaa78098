"""MTProto sessions: (auth key, session_id) pairs with their own msg_id and seqno counters.

A session belongs to the auth key, not to the TCP connection; Telethon opens a fresh session id on
every (re)connection, and the parallel-transfer senders each bring their own.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from hashlib import sha256

from .crypto import AuthKey
from .msgid import MsgIdClock

SEEN_WINDOW = 2048
MAX_SESSIONS = 4096


@dataclass(slots=True)
class Outgoing:
    """One server→client message, already serialised, waiting in a connection's outbox."""

    msg_id: int
    seq_no: int
    body: bytes | tuple[bytes, ...]  # rpc.Body: chunks of a large answer, joined only when encrypted


@dataclass(eq=False)
class Session:
    key: AuthKey
    session_id: int
    salt: int
    created: bool = False
    layer: int | None = None
    client_info: dict[str, str] = field(default_factory=dict)
    _clock: MsgIdClock = field(default_factory=MsgIdClock)
    _sequence: int = 0
    _seen: set[int] = field(default_factory=set)
    _seen_order: deque[int] = field(default_factory=deque)

    def remember(self, msg_id: int) -> bool:
        """Record a client msg_id; False if this session already saw it (a replay to ignore)."""
        if msg_id in self._seen:
            return False
        self._seen.add(msg_id)
        self._seen_order.append(msg_id)
        if len(self._seen_order) > SEEN_WINDOW:
            self._seen.discard(self._seen_order.popleft())
        return True

    def outgoing(self, body: bytes | tuple[bytes, ...], *, content_related: bool, response: bool) -> Outgoing:
        msg_id = self._clock.next(response=response)
        if content_related:
            seq_no = self._sequence * 2 + 1
            self._sequence += 1
        else:
            seq_no = self._sequence * 2
        return Outgoing(msg_id, seq_no, body)


def salt_for(key: AuthKey) -> int:
    """The server salt of an auth key (stable: the emulator never rotates salts)."""
    return struct.unpack("<q", sha256(b"emulator-salt" + key.key).digest()[:8])[0]


class SessionTable:
    """All live sessions, oldest evicted first so a long-running emulator stays bounded."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[tuple[int, int], Session] = OrderedDict()

    def get(self, key: AuthKey, session_id: int) -> Session:
        ident = (key.key_id, session_id)
        session = self._sessions.get(ident)
        if session is None:
            session = self._sessions[ident] = Session(key, session_id, salt_for(key))
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(ident)
        return session

    def drop(self, key: AuthKey, session_id: int) -> bool:
        return self._sessions.pop((key.key_id, session_id), None) is not None

    def __len__(self) -> int:
        return len(self._sessions)


def random_long() -> int:
    return struct.unpack("<q", os.urandom(8))[0]
