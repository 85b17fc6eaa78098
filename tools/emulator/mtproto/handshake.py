"""Creating an auth key by Diffie-Hellman (core.telegram.org/mtproto/auth_key), server side.

Lets a client start from an empty session: `client.start(bot_token=...)` makes a key here, then
auth.importBotAuthorization binds it to the bot. The emulator's RSA key is generated once per world
and kept in `world.extra["mtproto:rsa"]`; a client must trust its public half first:
`trust_emulator_rsa_key(world)` in the same process, or `telethon.crypto.rsa.add_key(pem, old=False)`
with `rsa_public_key_pem(world)` elsewhere. Telethon pads with the pre-RSA_PAD scheme
(sha1 + data + random), which is what is decoded here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telethon.crypto import AES
from telethon.extensions import BinaryReader
from telethon.tl import TLObject, functions, types

from .crypto import AuthKey
from .msgid import MsgIdClock

if TYPE_CHECKING:
    from .connection import Connection
    from .server import MTProtoFront

log = logging.getLogger("tools.emulator.mtproto")

EXTRA_KEY = "mtproto:rsa"

# Telegram's published 2048-bit safe prime, used with g = 3.
DH_PRIME = int(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f48198a0aa7c14058229493d22530f4db"
    "fa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b41"
    "0dba74d8a84b2a14b3144e0ef1284754fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f0d8115f635b105ee2e4e15d04b2454bf"
    "6f4fadf034b10403119cd8e3b92fcc5b",
    16,
)
DH_G = 3
SAFETY = 2 ** (2048 - 64)


@dataclass(frozen=True, slots=True)
class RsaKey:
    n: int
    e: int
    d: int

    @property
    def fingerprint(self) -> int:
        """Telegram's fingerprint: the low 64 bits of SHA1(n_bytes + e_bytes), both TL-serialised."""
        data = TLObject.serialize_bytes(_to_bytes(self.n)) + TLObject.serialize_bytes(_to_bytes(self.e))
        return struct.unpack("<q", hashlib.sha1(data).digest()[-8:])[0]

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        public = rsa.RSAPublicNumbers(self.e, self.n).public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()


def rsa_key(world: Any) -> RsaKey:
    """The world's RSA key pair, generated on first use."""
    rec = world.extra.get(EXTRA_KEY)
    if rec is None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.private_numbers()
        rec = {"n": hex(numbers.public_numbers.n), "e": numbers.public_numbers.e, "d": hex(numbers.d)}
        world.extra[EXTRA_KEY] = rec
    return RsaKey(int(rec["n"], 16), int(rec["e"]), int(rec["d"], 16))


def rsa_public_key_pem(world: Any) -> str:
    return rsa_key(world).public_pem()


def trust_emulator_rsa_key(world: Any) -> None:
    """Make Telethon in this process accept the emulator's RSA key for new auth keys."""
    from telethon.crypto import rsa

    rsa.add_key(rsa_public_key_pem(world), old=False)


@dataclass
class _Exchange:
    nonce: int
    server_nonce: int
    new_nonce: int | None = None
    a: int | None = None
    clock: MsgIdClock | None = None


async def handle_plain_packet(front: MTProtoFront, connection: Connection, packet: bytes) -> None:
    if len(packet) < 20:
        connection.drop()
        return
    _key_id, _msg_id, length = struct.unpack_from("<qqi", packet)
    try:
        request = BinaryReader(packet[20 : 20 + length]).tgread_object()
        answer = _answer(front, connection, request)
    except Exception as exc:  # any malformed step ends the exchange, as Telegram does
        log.info("mtproto: auth key exchange from %s failed: %s", connection.peer, exc)
        connection.drop()
        return
    state = connection.handshake_state
    assert isinstance(state, _Exchange) and state.clock is not None
    body = bytes(answer)
    msg_id = state.clock.next(response=True)
    connection.send_raw(struct.pack("<qqi", 0, msg_id, len(body)) + body)


def _answer(front: MTProtoFront, connection: Connection, request: Any) -> TLObject:
    if isinstance(request, functions.ReqPqMultiRequest | functions.ReqPqRequest):
        p, q = _prime32(), _prime32()
        state = _Exchange(request.nonce, _int128(), clock=MsgIdClock())
        connection.handshake_state = state
        return types.ResPQ(
            nonce=request.nonce,
            server_nonce=state.server_nonce,
            pq=_to_bytes(min(p, q) * max(p, q)),
            server_public_key_fingerprints=[rsa_key(front.world).fingerprint],
        )

    state = connection.handshake_state
    if not isinstance(state, _Exchange) or request.nonce != state.nonce or request.server_nonce != state.server_nonce:
        raise ValueError("nonce mismatch")

    if isinstance(request, functions.ReqDHParamsRequest):
        key = rsa_key(front.world)
        if request.public_key_fingerprint != key.fingerprint:
            raise ValueError("unknown RSA fingerprint")
        plain = _to_bytes(pow(int.from_bytes(request.encrypted_data, "big"), key.d, key.n)).rjust(255, b"\0")
        inner = BinaryReader(plain[20:]).tgread_object()
        if not isinstance(inner, types.PQInnerData | types.PQInnerDataDc):
            raise ValueError(f"unexpected {type(inner).__name__}")
        if hashlib.sha1(bytes(inner)).digest() != plain[:20]:
            raise ValueError("p_q_inner_data hash mismatch")
        if inner.nonce != state.nonce or inner.server_nonce != state.server_nonce:
            raise ValueError("inner nonce mismatch")
        state.new_nonce = inner.new_nonce
        while True:
            state.a = int.from_bytes(os.urandom(256), "big")
            g_a = pow(DH_G, state.a, DH_PRIME)
            if SAFETY <= g_a <= DH_PRIME - SAFETY:
                break
        dh_inner = bytes(
            types.ServerDHInnerData(
                nonce=state.nonce,
                server_nonce=state.server_nonce,
                g=DH_G,
                dh_prime=_to_bytes(DH_PRIME),
                g_a=_to_bytes(g_a),
                server_time=int(time.time()),
            )
        )
        answer = hashlib.sha1(dh_inner).digest() + dh_inner
        answer += os.urandom(-len(answer) % 16)
        tmp_key, tmp_iv = _tmp_aes(state.server_nonce, state.new_nonce)
        return types.ServerDHParamsOk(
            nonce=state.nonce,
            server_nonce=state.server_nonce,
            encrypted_answer=AES.encrypt_ige(answer, tmp_key, tmp_iv),
        )

    if isinstance(request, functions.SetClientDHParamsRequest):
        if state.new_nonce is None or state.a is None:
            raise ValueError("set_client_DH_params before req_DH_params")
        tmp_key, tmp_iv = _tmp_aes(state.server_nonce, state.new_nonce)
        plain = AES.decrypt_ige(request.encrypted_data, tmp_key, tmp_iv)
        inner = BinaryReader(plain[20:]).tgread_object()
        if not isinstance(inner, types.ClientDHInnerData) or hashlib.sha1(bytes(inner)).digest() != plain[:20]:
            raise ValueError("client_DH_inner_data is corrupt")
        g_b = int.from_bytes(inner.g_b, "big")
        if not SAFETY <= g_b <= DH_PRIME - SAFETY:
            raise ValueError("g_b out of the safe range")
        gab = _to_bytes(pow(g_b, state.a, DH_PRIME))
        aux_hash = hashlib.sha1(gab).digest()[:8]
        if len(gab) != 256:
            # Telethon keeps the shortest big-endian form of g^ab, so a leading zero byte would
            # give it a 255-byte key: ask for a fresh exchange instead (dh_gen_retry).
            return types.DhGenRetry(state.nonce, state.server_nonce, _nonce_hash(state.new_nonce, 2, aux_hash))
        auth_key = AuthKey(gab)
        front.keys.add(auth_key, None, "dh")
        log.info("mtproto: new auth key %#x by DH from %s", auth_key.key_id, connection.peer)
        return types.DhGenOk(state.nonce, state.server_nonce, _nonce_hash(state.new_nonce, 1, aux_hash))

    raise ValueError(f"{type(request).__name__} is not part of the key exchange")


def _nonce_hash(new_nonce: int, number: int, aux_hash: bytes) -> int:
    data = new_nonce.to_bytes(32, "little", signed=True) + bytes([number]) + aux_hash
    return int.from_bytes(hashlib.sha1(data).digest()[4:20], "little", signed=True)


def _tmp_aes(server_nonce: int, new_nonce: int) -> tuple[bytes, bytes]:
    sn = server_nonce.to_bytes(16, "little", signed=True)
    nn = new_nonce.to_bytes(32, "little", signed=True)
    hash1 = hashlib.sha1(nn + sn).digest()
    hash2 = hashlib.sha1(sn + nn).digest()
    hash3 = hashlib.sha1(nn + nn).digest()
    return hash1 + hash2[:12], hash2[12:20] + hash3 + nn[:4]


def _to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _int128() -> int:
    return int.from_bytes(os.urandom(16), "big", signed=True)


def _prime32() -> int:
    """A random prime just below 2^31 (pq must fit the 64 bits clients factorise)."""
    while True:
        candidate = secrets.randbits(31) | (1 << 30) | 1
        if _is_prime(candidate):
            return candidate


def _is_prime(n: int) -> bool:
    if n < 4:
        return n in (2, 3)
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11):  # deterministic below 2.1e12
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True
