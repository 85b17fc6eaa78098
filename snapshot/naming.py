"""Document names: what each stored document is called, and how a name is read back.

Names are hints a backend may keep (a file name, a document caption); restore and garbage collection
read them only on discovering backends, and never trust one over a listed entry.
"""

from __future__ import annotations

import re

DELTA_NAME = re.compile(r"^delta-(\d+)$")


def delta_name(seq: int) -> str:
    return f"delta-{seq:012d}"


def pack_name(first: int, last: int) -> str:
    return f"deltas-{first:012d}-{last:012d}"


def inline_ref(seq: int) -> str:
    """The name an inline delta goes by (errors, plans): it lives in the manifest, not in a document."""
    return f"manifest#{delta_name(seq)}"


def part_name(base_seq: int, shard: int, part: int, claim: bytes | None = None) -> str:
    """A part's name; `claim` tags it with the writer's claim (8 hex digits), so a sweep by another
    claim never takes it for a never-switched attempt of its own at the same base."""
    tag = f"-{claim.hex()[:8]}" if claim else ""
    return f"snapshot-{base_seq:012d}-{shard:04d}-{part:04d}{tag}"


PART_NAME = re.compile(r"^snapshot-(\d+)-\d+-\d+(?:-([0-9a-f]{8}))?$")
