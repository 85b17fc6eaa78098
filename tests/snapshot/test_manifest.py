"""The manifest: a versioned JSON document that round-trips and refuses what it cannot trust."""

from __future__ import annotations

import dataclasses
import json

import pytest

from snapshot.cipher import Cipher
from snapshot.envelope import GENESIS, Kind, encode
from snapshot.errors import CorruptDocument, EncryptionError
from snapshot.manifest import (
    MANIFEST_FORMAT,
    DeltaEntry,
    Lease,
    Manifest,
    PartEntry,
    ShardEntry,
    SnapshotEntry,
    decode_manifest,
    encode_manifest,
)

H = "ab" * 32


def sample() -> Manifest:
    parts = [PartEntry(ref="m000000000004", size=281, sha256=H), PartEntry(ref="m000000000005", size=99, sha256=H)]
    snap = SnapshotEntry(base_seq=2, base_hash=H, captured_at=1.5, epoch=3, image_size=16384, image_sha256=H,
                         shards=[ShardEntry(index=0, raw_size=16384, sha256=H, compressed_size=380, parts=parts)])
    return Manifest(epoch=3, generation=7, created_at=2.5,
                    lease=Lease("bot-1", "host", 42, 3, 99.0, False), snapshot=snap,
                    deltas=[DeltaEntry(seq=3, ref="m000000000006", size=310, hash=H, epoch=3, captured_at=2.0)],
                    last_ref="m000000000006")


@pytest.mark.parametrize("cipher", [None, Cipher(bytes(32))])
def test_round_trip(cipher):
    m = sample()
    data = encode_manifest(m, cipher=cipher, prev=b"\x01" * 32)
    back, h = decode_manifest(data, cipher=cipher)
    assert back == m and len(h) == 32
    assert back.base_seq == 2 and back.base_hash == bytes.fromhex(H)
    assert back.snapshot.parts == m.snapshot.shards[0].parts and back.snapshot.stored_size == 380


def test_empty_manifest():
    m = Manifest(epoch=1, generation=1, created_at=0.0)
    back, _ = decode_manifest(encode_manifest(m))
    assert back == m and back.base_seq == 0 and back.base_hash == GENESIS


def test_unknown_optional_fields_are_ignored():
    d = json.loads(sample().to_json())
    d["future_field"] = {"x": 1}
    d["lease"]["note"] = "added later"
    d["snapshot"]["shards"][0]["parts"][0]["dc"] = 4
    data = encode(Kind.MANIFEST, json.dumps(d).encode(), epoch=3, seq=7)
    assert decode_manifest(data)[0] == sample()


def test_newer_format_is_refused():
    d = json.loads(sample().to_json())
    d["format"] = MANIFEST_FORMAT + 1
    with pytest.raises(CorruptDocument, match="newer tgsnap"):
        decode_manifest(encode(Kind.MANIFEST, json.dumps(d).encode(), epoch=3, seq=7))


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.pop("epoch"), "schema"),
    (lambda d: d["deltas"][0].update(seq=1), "not strictly ascending"),
    (lambda d: d["deltas"].append(dict(d["deltas"][-1])), "not strictly ascending"),  # a seq listed twice
    (lambda d: d["deltas"][0].update(hash="zz"), "malformed hash"),
    (lambda d: d.update(format="1"), "format"),
])
def test_malformed_manifests_are_named(mutate, why):
    d = json.loads(sample().to_json())
    mutate(d)
    data = encode(Kind.MANIFEST, json.dumps(d).encode(), epoch=3, seq=7)
    with pytest.raises(CorruptDocument, match=why) as e:
        decode_manifest(data)
    assert e.value.ref == "manifest"


def test_envelope_must_agree_with_body_and_kind():
    with pytest.raises(CorruptDocument, match="disagrees"):
        decode_manifest(encode(Kind.MANIFEST, sample().to_json(), epoch=4, seq=7))
    with pytest.raises(CorruptDocument, match="expected a manifest"):
        decode_manifest(encode(Kind.DELTA, sample().to_json(), epoch=3, seq=7))
    with pytest.raises(CorruptDocument, match="not valid JSON"):
        decode_manifest(encode(Kind.MANIFEST, b"{nope", epoch=3, seq=7))


def test_encrypted_manifest_needs_its_key():
    data = encode_manifest(sample(), cipher=Cipher(bytes(32)))
    with pytest.raises(EncryptionError):
        decode_manifest(data)
    with pytest.raises(EncryptionError):
        decode_manifest(data, cipher=Cipher(b"\x01" * 32))


def test_state_digest_2_needs_format_4_and_digest_1_is_written_as_before():
    m = sample()
    d = json.loads(m.to_json())
    assert d["format"] == 1 and "digest" not in d["snapshot"]  # digest 1: the JSON of older writers
    m.snapshot.digest = 2
    m.storage_id, m.claim_id = "01" * 16, "02" * 16  # a writer of format 3 and later has both ids
    d = json.loads(m.to_json())
    assert d["format"] == 4 and d["snapshot"]["digest"] == 2
    assert decode_manifest(encode_manifest(m))[0] == dataclasses.replace(m, format=4)

    def refused(mutate, match):
        d = json.loads(m.to_json())
        mutate(d)
        with pytest.raises(CorruptDocument, match=match):
            decode_manifest(encode(Kind.MANIFEST, json.dumps(d).encode(), epoch=3, seq=7))

    refused(lambda d: d.update(format=3),
            "format 3 cannot hold a snapshot of state digest 2")
    refused(lambda d: d["snapshot"].update(digest=3), "unknown state digest 3")
    refused(lambda d: d["snapshot"].update(digest=True), "unknown state digest True")
    refused(lambda d: d["snapshot"].update(digest="2"), "unknown state digest '2'")
