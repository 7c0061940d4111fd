"""Command guards that apps register (devices.guards): the `interlock` level, through
every door a command takes (single, flat, batch, group, desired state, the page)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from devices.guards import CommandRequest, Refusal, guards
from devices.models import Command
from tests.factories import GroupFactory, relay, thermostat

pytestmark = pytest.mark.django_db

INSTALLING = "device is installing firmware"


@pytest.fixture
def installing() -> Iterator[set[str]]:
    """A guard of its own (the OTA app registers the real ones, tested in ota/tests): devices in the set are mid-update."""
    busy: set[str] = set()
    seen: list[CommandRequest] = []

    def ota_installing(request: CommandRequest) -> Refusal | None:
        seen.append(request)
        return Refusal(INSTALLING) if request.device.node_id in busy else None

    guards.register("test.installing", ota_installing, app="test")
    yield busy
    guards.unregister("test.installing")


def interlock_denies() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="command.create", decision="deny", details__level="interlock").order_by("seq"))


def test_it_refuses_a_command_a_guard_objects_to_with_the_interlock_level(alice_api: APIClient, installing: set[str]) -> None:
    thermostat("sensor-1")
    installing.add("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json")
    assert response.status_code == 400
    assert response.json() == {"field": "node_id", "reason": INSTALLING, "level": "interlock", "guard": "test.installing"}
    assert not Command.objects.exists(), "nothing is written before the guards have spoken"
    (deny,) = interlock_denies()
    assert (deny.actor_id.endswith("/alice"), deny.target_id, deny.reason, deny.details["guard"]) == (True, "sensor-1", INSTALLING, "test.installing")
    installing.clear()
    assert alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json").status_code == 201


def test_the_six_levels_speak_before_the_guards(alice_api: APIClient, installing: set[str]) -> None:
    thermostat("sensor-1")
    installing.add("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 99}, format="json")
    assert response.json()["level"] == "value"


def test_batches_groups_and_desired_state_ask_the_guards_per_member(alice_api: APIClient, installing: set[str]) -> None:
    group = GroupFactory(name="lights")
    group.members.add(relay("relay-1"), relay("relay-2"))
    thermostat("sensor-1")
    installing.update({"relay-2", "sensor-1"})

    answer = alice_api.post(f"/api/v1/groups/{group.pk}/command/", {"action": "set", "capability": "on", "value": True}, format="json").json()
    results = {r["node_id"]: r for r in answer["results"]}
    assert results["relay-1"]["ok"]
    assert results["relay-2"] == {"node_id": "relay-2", "ok": False, "field": "node_id", "level": "interlock", "reason": INSTALLING, "guard": "test.installing"}

    items = [{"node_id": "relay-1", "action": "toggle", "capability": "on"}, {"node_id": "sensor-1", "action": "get", "capability": "temperature"}]
    batch = alice_api.post("/api/v1/commands/batch/", {"commands": items}, format="json").json()
    assert [r["ok"] for r in batch["results"]] == [True, False] and batch["results"][1]["level"] == "interlock"

    desired = alice_api.patch("/api/v1/devices/sensor-1/desired/", {"setpoint": 20}, format="json")
    assert desired.status_code == 400 and INSTALLING in str(desired.json())
    assert Command.objects.filter(device__node_id__in=["relay-2", "sensor-1"]).count() == 0
    assert [d.target_id for d in interlock_denies()] == ["relay-2", "sensor-1"]


def test_the_device_page_shows_the_guards_reason(alice_web: Client, installing: set[str]) -> None:
    thermostat("sensor-1")
    installing.add("sensor-1")
    page = alice_web.post("/devices/sensor-1/command/", {"action": "set", "capability": "setpoint", "value": "21"})
    assert page.status_code == 400 and INSTALLING in page.content.decode()
    assert not Command.objects.exists()


def test_a_guard_sees_who_asks_and_the_validated_command(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    seen: list[CommandRequest] = []

    def record_only(request: CommandRequest) -> Refusal | None:
        seen.append(request)
        return None

    guards.register("test.record", record_only, app="test")
    try:
        alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "mode", "value": "auto"}, format="json")
    finally:
        guards.unregister("test.record")
    (request,) = seen
    assert (
        request.actor.id.split("/")[-1] if request.actor else None,
        request.device.node_id,
        request.capability.name,
        request.action,
        request.value,
        request.scope,
    ) == (
        "alice",
        "sensor-1",
        "mode",
        "set",
        "auto",
        "command",
    )


def test_a_guard_name_has_one_owner() -> None:
    from django.core.exceptions import ImproperlyConfigured

    def one(request: Any) -> None:
        return None

    def other(request: Any) -> None:
        return None

    guards.register("test.owned", one, app="ota")
    try:
        with pytest.raises(ImproperlyConfigured, match="already registered by ota"):
            guards.register("test.owned", other, app="mallory")
    finally:
        guards.unregister("test.owned")
    assert "plc.allow_list" in guards.names(), "the industrial app's allow-list is a guard"


def test_a_guard_that_objects_between_the_check_and_the_write_is_a_400_and_audited(alice_api: APIClient) -> None:
    """Desired state checks every key, then writes and commands in one transaction; a
    guard that objects in between (a device starts installing) rolls it all back, and the
    refusal is still recorded (outside that transaction) and answered as a 400, not a 500."""
    from devices.models import Device

    thermostat("sensor-1")
    asked: list[str] = []

    def starts_installing(request: CommandRequest) -> Refusal | None:
        asked.append(request.device.node_id)
        return Refusal("device began installing firmware") if len(asked) > 1 else None

    guards.register("test.flips", starts_installing, app="test")
    try:
        answer = alice_api.patch("/api/v1/devices/sensor-1/desired/", {"setpoint": 20}, format="json")
    finally:
        guards.unregister("test.flips")
    assert answer.status_code == 400 and answer.json() == {"node_id": "device began installing firmware"}
    assert Device.objects.get(node_id="sensor-1").desired == {} and not Command.objects.exists()
    deny = AuditEvent.objects.get(action="device.desired", decision="deny")
    assert (deny.reason, deny.details["level"], deny.details["guard"]) == ("device began installing firmware", "interlock", "test.flips")
    assert not AuditEvent.objects.filter(action="device.desired", decision="allow").exists()
