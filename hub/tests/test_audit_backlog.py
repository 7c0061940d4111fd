"""The gateway's audit backlog while a write is under way: the events being written still
count as waiting (for the bound and /healthz), and events dropped meanwhile are not
forgotten when the gap written before them lands (tests/test_outages.py saw /healthz report
an empty backlog during a write)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connections, transaction

from audit.models import AuditEvent
from audit.services import Actor, Entry, record, verify
from hub.mesh.gateway import AuditBatcher
from tests.lock_helpers import Beside, postgresql_only, until_another_connection_waits_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)


def denial(n: int) -> Entry:
    return Entry(Actor("device", f"dev-{n}"), "mesh.handshake", "deny", target_type="device", target_id=f"dev-{n}", reason="TLS handshake refused")


async def flush_and_close(batcher: AuditBatcher) -> None:
    await batcher.flush()
    await database_sync_to_async(connections.close_all)()  # the executor thread's connection


def test_a_backlog_being_written_still_counts_and_drops_meanwhile_reach_the_next_gap() -> None:
    postgresql_only()
    batcher = AuditBatcher(limit=3, max_batch=1000, source="gateway:test")
    for n in range(5):  # two over the bound before any write: the oldest two go
        batcher.add(denial(n))
    assert batcher.backlog() | {"dropping_since": None} == {
        "source": "gateway:test",
        "pending": 3,
        "limit": 3,
        "dropped": 2,
        "dropping_since": None,
        "dropped_total": 2,
        "gaps_recorded": 0,
    }
    seen: dict[str, Any] = {}
    with transaction.atomic():
        record(Actor("user", "alice"), "test.hold", "allow")  # holds the chain's head: the flush waits
        flush = Beside(lambda: asyncio.run(flush_and_close(batcher)))
        flush.start()
        until_another_connection_waits_for_a_lock()
        seen["writing"] = batcher.backlog()
        for n in range(5, 9):  # the three being written fill the bound: these four go
            batcher.add(denial(n))
        seen["full"] = batcher.backlog()
    flush.join(30)
    assert flush.errors == []
    assert seen["writing"]["pending"] == 3 and seen["writing"]["dropped"] == 2, seen
    assert seen["full"]["pending"] == 3 and seen["full"]["dropped"] == 6, seen
    gaps = list(AuditEvent.objects.filter(action="audit.gap").order_by("seq").values_list("details", flat=True))
    assert [gap["lost"] for gap in gaps] == [2, 4], "the four dropped during the first gap's write are in a second gap"
    assert sorted(AuditEvent.objects.filter(action="mesh.handshake").values_list("target_id", flat=True)) == ["dev-2", "dev-3", "dev-4"]
    assert batcher.backlog()["pending"] == 0 and batcher.backlog()["dropped"] == 0
    assert batcher.backlog()["gaps_recorded"] == 2 and batcher.backlog()["dropped_total"] == 6
    assert verify().ok
