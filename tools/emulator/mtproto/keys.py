"""Auth keys known to the emulator and the account each one is logged in as.

Kept in `world.extra["mtproto:auth_keys"]` so a `StringSession` keeps working after an emulator
restart: {"<key_id>": {"key": "<hex>", "user_id": int | null, "origin": "preshared" | "dh"}}.
Key material is never logged; only key ids are.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .crypto import AuthKey

EXTRA_KEY = "mtproto:auth_keys"


class KeyRing:
    def __init__(self, world: Any) -> None:
        self._world = world
        self._keys: dict[int, AuthKey] = {}
        self._users: dict[int, int | None] = {}
        self._dead: dict[int, str] = {}
        self._load()

    def _records(self) -> dict[str, dict[str, Any]]:
        return dict(self._world.extra.get(EXTRA_KEY) or {})

    def _load(self) -> None:
        for key_id, rec in self._records().items():
            self._keys[int(key_id)] = AuthKey(bytes.fromhex(rec["key"]))
            self._users[int(key_id)] = rec.get("user_id")
            if rec.get("dead"):
                self._dead[int(key_id)] = rec["dead"]

    def get(self, key_id: int) -> AuthKey | None:
        key = self._keys.get(key_id)
        if key is None:
            self._load()  # another KeyRing over the same world (e.g. session_string()) may have added it
            key = self._keys.get(key_id)
        return key

    def kill(self, key: AuthKey, reason: str) -> None:
        """Telegram revokes a key for good (AUTH_KEY_DUPLICATED): every later request on it gets `reason`."""
        records = self._records()
        rec = records.get(str(key.key_id))
        if rec is not None:
            records[str(key.key_id)] = dict(rec, dead=reason)
            self._world.extra[EXTRA_KEY] = records
        self._dead[key.key_id] = reason

    def dead(self, key: AuthKey) -> str | None:
        return self._dead.get(key.key_id)

    def dc_of(self, key: AuthKey) -> int | None:
        """The DC a key was authorised for by auth.importAuthorization (None: the home DC)."""
        rec = self._records().get(str(key.key_id))
        return rec.get("dc") if rec else None

    def user_of(self, key: AuthKey) -> int | None:
        return self._users.get(key.key_id)

    def add(self, key: AuthKey, user_id: int | None, origin: str) -> None:
        records = self._records()
        records[str(key.key_id)] = {"key": key.key.hex(), "user_id": user_id, "origin": origin, "at": int(time.time())}
        self._world.extra[EXTRA_KEY] = records
        self._keys[key.key_id] = key
        self._users[key.key_id] = user_id

    def bind(self, key: AuthKey, user_id: int, dc: int | None = None) -> None:
        """Log an auth key in as `user_id` (auth.importBotAuthorization / importAuthorization), on `dc`
        (the DC an exported authorization was made for; None: the home DC)."""
        records = self._records()
        rec = records.get(str(key.key_id))
        if rec is None:
            self.add(key, user_id, "dh")
            rec = self._records()[str(key.key_id)]
            records = self._records()
        records[str(key.key_id)] = dict(rec, user_id=user_id, dc=dc)
        self._world.extra[EXTRA_KEY] = records
        self._users[key.key_id] = user_id

    def forget(self, key: AuthKey) -> None:
        records = self._records()
        if records.pop(str(key.key_id), None) is not None:
            self._world.extra[EXTRA_KEY] = records
        self._keys.pop(key.key_id, None)
        self._users.pop(key.key_id, None)

    def preshared_for(self, user_id: int) -> AuthKey:
        """The pre-shared key of an account, created on first use."""
        for rec in self._records().values():
            if rec.get("origin") == "preshared" and rec.get("user_id") == user_id and not rec.get("dead"):
                return AuthKey(bytes.fromhex(rec["key"]))
        key = AuthKey(os.urandom(256))
        self.add(key, user_id, "preshared")
        return key
