"""The hash chain without a database: links, edits, deletions, a lost tail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from audit.chain import GENESIS_HASH, iter_links, link_hash, normalize_details, verify_links


def make_chain(n: int) -> list[dict[str, Any]]:
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    rows = [
        {
            "ts": start + timedelta(seconds=i),
            "actor_type": "user",
            "actor_id": "alice",
            "action": "command.create",
            "scope": "command",
            "target_type": "device",
            "target_id": "sensor-1",
            "decision": "allow",
            "reason": "",
            "details": normalize_details({"i": i, "value": 21.5}),
        }
        for i in range(n)
    ]
    chained = list(iter_links(GENESIS_HASH, 1, rows))
    for i, row in enumerate(chained):
        row["id"] = 100 + i
    return chained


def test_it_accepts_an_intact_chain() -> None:
    events = make_chain(5)
    assert verify_links(events, (5, events[-1]["hash"])) == (5, None)


def test_it_accepts_an_empty_chain() -> None:
    assert verify_links([], (0, GENESIS_HASH)) == (0, None)


@pytest.mark.parametrize("field", ["actor_id", "reason", "decision", "details", "ts"])
def test_it_names_an_edited_event(field: str) -> None:
    events = make_chain(5)
    events[2][field] = {"i": 99} if field == "details" else (events[2]["ts"] + timedelta(microseconds=1) if field == "ts" else "mallory")
    checked, broken = verify_links(events, (5, events[-1]["hash"]))
    assert checked == 2
    assert broken is not None and broken.event_id == 102 and "edited" in broken.reason


def test_it_names_the_event_after_a_deleted_one() -> None:
    events = make_chain(5)
    del events[1]
    _, broken = verify_links(events, (5, events[-1]["hash"]))
    assert broken is not None and broken.event_id == 102 and "gap" in broken.reason


def test_it_notices_a_deleted_tail_through_the_head() -> None:
    events = make_chain(5)
    head = (5, events[-1]["hash"])
    _, broken = verify_links(events[:3], head)
    assert broken is not None and broken.event_id is None and broken.seq == 4


def test_it_notices_a_rewritten_chain_that_reuses_old_hashes() -> None:
    events = make_chain(3)
    events[1]["prev_hash"] = "f" * 64
    events[1]["hash"] = link_hash(events[1]["prev_hash"], events[1])
    _, broken = verify_links(events, (3, events[-1]["hash"]))
    assert broken is not None and broken.event_id == 101 and "prev_hash" in broken.reason


def test_it_hashes_details_independently_of_key_order() -> None:
    a = make_chain(1)[0]
    b = dict(a, details={"value": 21.5, "i": 0})
    assert link_hash(GENESIS_HASH, a) == link_hash(GENESIS_HASH, b)


def test_it_refuses_naive_timestamps() -> None:
    row = make_chain(1)[0]
    row["ts"] = row["ts"].replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        link_hash(GENESIS_HASH, row)
