"""The gateway's audit backlog while a write is under way: the events being written still
count as waiting (for the bound and /healthz), and events dropped meanwhile are not
forgotten when the gap written before them lands (tests/test_outages.py saw /healthz report
an empty backlog during a write)."""

from __future__ import annotations

import asyncio
import time
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


def test_closing_waits_for_the_write_in_flight_and_writes_the_rest_without_cancelling() -> None:
    """A gateway's shutdown asks the periodic flush to stop instead of cancelling it (a
    cancellation can be swallowed on its way through a write's live push, and the shutdown
    then hung): the write under way ends, what came meanwhile is written, nothing is lost."""
    postgresql_only()

    async def scenario(batcher: AuditBatcher, closing: list[str]) -> None:
        batcher.start()
        batcher.add(denial(0))
        await asyncio.sleep(0.3)  # the periodic flush takes it and waits for the head (the test waits for that)
        batcher.add(denial(1))
        closing.append("closing")
        await batcher.close()
        closing.append("closed" if batcher._task is not None and not batcher._task.cancelled() else "cancelled")
        await database_sync_to_async(connections.close_all)()

    batcher = AuditBatcher(limit=10, max_batch=1000, interval_s=0.05, source="gateway:test")
    closing: list[str] = []
    with transaction.atomic():
        record(Actor("user", "alice"), "test.hold", "allow")  # holds the chain's head: the periodic write waits
        gateway = Beside(lambda: asyncio.run(scenario(batcher, closing)))
        gateway.start()
        until_another_connection_waits_for_a_lock()
        while not closing:  # the shutdown begins while the write still waits
            time.sleep(0.01)
    gateway.join(30)
    assert gateway.errors == [] and closing == ["closing", "closed"]
    assert sorted(AuditEvent.objects.filter(action="mesh.handshake").values_list("target_id", flat=True)) == ["dev-0", "dev-1"]
    assert batcher.backlog()["pending"] == 0
    assert verify().ok
