"""What an RPC handler can see: the front, the connection and session it arrived on, the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .rpc import RpcError

if TYPE_CHECKING:
    from .connection import Connection
    from .server import MTProtoFront
    from .session import Session


@dataclass(slots=True)
class RpcContext:
    front: MTProtoFront
    connection: Connection
    session: Session
    msg_id: int
    user_id: int | None

    @property
    def world(self) -> Any:
        return self.front.world

    def require_user(self) -> int:
        if self.user_id is None:
            raise RpcError(401, "AUTH_KEY_UNREGISTERED")
        return self.user_id
