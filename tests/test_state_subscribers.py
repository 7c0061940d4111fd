"""State subscribers run after the batch is committed and acked, never on the ack path
(devices.events.StateSubscribers): a slow subscriber (rule evaluation next) delays no
device's ack, and when subscribers fall behind the oldest waiting batch is dropped and
counted, never a committed report."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices import events
from devices.models import TelemetrySample
from devices.state import StateReport
from tests.test_gateway import RawDevice, enroll_device, listeners  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


class SlowSubscriber:
    """Registered through the public hook; blocks on an event the test sets (no sleeps)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[StateReport]] = []

    def __call__(self, reports: list[StateReport]) -> None:
        self.entered.set()
        assert self.release.wait(60), "the test never released the subscriber"
        self.batches.append(reports)

    def values(self) -> list[float]:
        return [r.values["temperature"] for batch in self.batches for r in batch]


@pytest.fixture
def slow() -> Iterator[SlowSubscriber]:
    subscriber = SlowSubscriber()
    events.on_state(subscriber)
    yield subscriber
    subscriber.release.set()
    events.state_subscribers.drain(10)
    events.state_hooks.remove(subscriber)


@pytest.fixture
def device(listeners: tuple[Any, Any], tmp_path: Path) -> Iterator[RawDevice]:  # noqa: F811
    raw = RawDevice(enroll_device(listeners, "sensor-1", tmp_path / "sensor-1"), listeners[1].port)
    raw.hello()
    yield raw
    raw.sock.close()


def report(device: RawDevice, value: float) -> dict[str, Any]:
    device.send(device.frame("state", {"values": {"temperature": value}}))
    answer = device.read()
    assert answer["type"] == "ack", answer
    return answer


def test_a_slow_subscriber_does_not_delay_acks(device: RawDevice, slow: SlowSubscriber) -> None:
    report(device, 20.0)
    assert slow.entered.wait(10), "the subscriber got the first batch"
    # The subscriber is stuck on batch one; every later report is still stored and acked.
    for i in range(1, 10):
        report(device, 20.0 + i)
    assert TelemetrySample.objects.filter(device__node_id="sensor-1").count() == 10
    assert slow.batches == [], "still stuck: all of those acks came while it was"
    slow.release.set()
    assert events.state_subscribers.drain(10)
    assert slow.values() == [20.0 + i for i in range(10)], "then it sees every batch, in commit order"


def test_when_subscribers_fall_behind_the_oldest_waiting_batch_is_dropped_and_counted(device: RawDevice, slow: SlowSubscriber, settings: Any) -> None:
    settings.STATE_SUBSCRIBER_QUEUE = 3
    before = events.state_subscribers.snapshot()
    report(device, 1.0)
    assert slow.entered.wait(10)
    for value in (2.0, 3.0, 4.0, 5.0, 6.0):  # batch 1 is with the subscriber; 3 may wait
        report(device, value)
    after = events.state_subscribers.snapshot()
    assert (after.dropped_batches - before.dropped_batches, after.dropped_reports - before.dropped_reports, after.queued) == (2, 2, 3)
    slow.release.set()
    assert events.state_subscribers.drain(10)
    assert slow.values() == [1.0, 4.0, 5.0, 6.0], "the two oldest waiting were dropped, the newest kept"
    assert TelemetrySample.objects.filter(device__node_id="sensor-1").count() == 6, "every acked report is stored"


def test_outside_a_gateway_a_thread_runs_the_subscribers(slow: SlowSubscriber) -> None:
    """A Celery worker polling PLCs has no gateway loop: the same queue, a thread of its own."""
    from django.utils import timezone

    from devices import state
    from tests.factories import thermostat

    thermostat("sensor-1")
    state.apply_reports([StateReport("sensor-1", {"temperature": 19.5}, timezone.now())])
    assert slow.entered.wait(10)
    slow.release.set()
    assert events.state_subscribers.drain(10)
    assert slow.values() == [19.5]
