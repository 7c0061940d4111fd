"""A device answers each command once: a second `ack` or `result` is refused with its own
code, audited as a deny, and never changes what the hub stored (issue #14, item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from audit.services import Actor
from devices import services
from devices.models import Command
from tests.test_gateway import RawDevice, listeners, raw  # noqa: F401  # the fixtures, shared

pytestmark = pytest.mark.django_db(transaction=True)


def answer_to(device: RawDevice, ref: str) -> dict[str, Any]:
    """The hub's answer to frame `ref` (commands and acks of other frames pass by)."""
    while True:
        message = device.read()
        if message["type"] in ("ack", "error") and message["body"].get("ref") == ref:
            return message


def test_it_refuses_and_audits_a_second_ack_and_a_second_result(raw: RawDevice) -> None:  # noqa: F811  # the fixture
    command = services.send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 21.5)
    command_id = str(command.pk)

    first_ack = raw.frame("ack", {"id": command_id})
    raw.send(first_ack)
    raw.send(raw.frame("ack", {"id": command_id}))
    second_ack = raw.frame("ack", {"id": command_id})  # the last one read: the first two were taken
    raw.send(second_ack)
    refused = answer_to(raw, second_ack["id"])
    assert refused["type"] == "error"
    assert refused["body"]["code"] == "duplicate_ack"
    assert "already acknowledged" in refused["body"]["reason"]
    assert Command.objects.get(pk=command_id).status == "delivered"

    result = raw.frame("result", {"id": command_id, "status": "ok", "value": 21.5})
    raw.send(result)
    again = raw.frame("result", {"id": command_id, "status": "error", "value": None, "reason": "mallory says it failed"})
    raw.send(again)
    refused = answer_to(raw, again["id"])
    assert refused["body"]["code"] == "duplicate_result"
    stored = Command.objects.get(pk=command_id)
    assert stored.status == "succeeded"
    assert stored.result == {"value": 21.5, "reason": ""}

    late_ack = raw.frame("ack", {"id": command_id})
    raw.send(late_ack)
    refused = answer_to(raw, late_ack["id"])
    assert refused["body"]["code"] == "duplicate_ack"
    assert "already completed" in refused["body"]["reason"]

    denies = AuditEvent.objects.filter(actor_id="sensor-1", action="mesh.frame", decision="deny")
    codes = [event.details["code"] for event in denies.order_by("seq")]
    assert codes == ["duplicate_ack", "duplicate_ack", "duplicate_result", "duplicate_ack"]
    assert all(command_id in event.reason for event in denies)
