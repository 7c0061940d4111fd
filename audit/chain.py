"""The audit hash chain, without Django: canonical encoding and link hashing.

Each event's hash is SHA-256 over `prev_hash` and a canonical JSON encoding of the
event's fields (keys sorted, no whitespace, UTF-8, timestamps as ISO-8601 UTC with
microseconds). Changing any field of any event, deleting one, or reordering them
breaks the link at that event, which `verify_links` reports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

HASHED_FIELDS = (
    "seq",
    "ts",
    "actor_type",
    "actor_id",
    "action",
    "scope",
    "target_type",
    "target_id",
    "decision",
    "reason",
    "details",
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def scrub(value: Any) -> Any:
    """Replace NUL characters, which PostgreSQL text and jsonb cannot store: the audit
    log must record an attacker's input, not fail on it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Round-trip through JSON so what is hashed equals what the database gives back."""
    result: dict[str, Any] = scrub(json.loads(canonical_json(dict(details or {}))))
    return result


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def link_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The hash of one event given its predecessor's hash."""
    body = {name: fields[name] for name in HASHED_FIELDS}
    body["ts"] = format_ts(body["ts"])
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_json(body).encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """The first event at which the chain stops holding, and why."""

    event_id: int | None
    seq: int | None
    reason: str


def verify_links(events: Iterable[Mapping[str, Any]], head: tuple[int, str] | None) -> tuple[int, ChainBreak | None]:
    """Walk events in `seq` order; return (count checked, first break or None).

    `head` is the (seq, hash) the writer recorded after its last append; a chain whose
    last event does not match it has lost its tail.
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    last: dict[str, Any] | None = None
    for event in events:
        if event["seq"] != expected_seq:
            return count, ChainBreak(
                event["id"], event["seq"], f"sequence gap: expected seq {expected_seq}, found {event['seq']} (an event before it was deleted)"
            )
        if event["prev_hash"] != prev_hash:
            return count, ChainBreak(event["id"], event["seq"], "prev_hash does not match the previous event's hash")
        computed = link_hash(prev_hash, event)
        if computed != event["hash"]:
            return count, ChainBreak(event["id"], event["seq"], "hash does not match the event's contents (the event was edited)")
        prev_hash = event["hash"]
        expected_seq += 1
        count += 1
        last = dict(event)
    if head is not None:
        head_seq, head_hash = head
        last_seq = last["seq"] if last else 0
        if head_seq != last_seq or (last is not None and head_hash != last["hash"]):
            return count, ChainBreak(None, last_seq + 1, f"chain head says seq {head_seq} but the log ends at seq {last_seq} (events at the end were deleted)")
    return count, None


def iter_links(prev_hash: str, first_seq: int, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Assign seq, prev_hash and hash to new rows in order (the append side of the chain)."""
    seq = first_seq
    for row in rows:
        row["seq"] = seq
        row["prev_hash"] = prev_hash
        row["hash"] = link_hash(prev_hash, row)
        prev_hash = row["hash"]
        seq += 1
        yield row
