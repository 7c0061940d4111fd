"""Commands through the REST API: who may send them, and every way to get one wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from devices.models import Command, CommandStatus, DeviceStatus
from tests.factories import GroupFactory, dimmer, relay, thermostat

pytestmark = pytest.mark.django_db


def denies() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(decision="deny").order_by("seq"))


def test_it_lets_alice_command_a_device(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending"
    command = Command.objects.get(id=body["id"])
    assert (command.device.node_id, command.action, command.capability, command.value) == ("sensor-1", "set", "setpoint", 21.5)
    assert command.requested_by.startswith("token:") and command.requested_by.endswith("/alice")
    allowed = AuditEvent.objects.filter(action="command.create", decision="allow").get()
    assert allowed.target_id == "sensor-1" and allowed.details["command_id"] == body["id"]

    status = alice_api.get(f"/api/v1/commands/{body['id']}/")
    assert status.status_code == 200
    assert status.json()["status"] == "pending"


def test_it_creates_commands_from_the_flat_endpoint(alice_api: APIClient) -> None:
    relay("relay-1")
    response = alice_api.post("/api/v1/commands/", {"node_id": "relay-1", "action": "toggle", "capability": "on"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["node_id"] == "relay-1"


def test_it_refuses_bob_without_command_scope_and_audits_it(bob_api: APIClient) -> None:
    thermostat("sensor-1")
    response = bob_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json")
    assert response.status_code == 403
    assert "command" in response.json()["detail"]
    assert not Command.objects.exists()
    [deny] = denies()
    assert deny.actor_type == "token" and deny.actor_id.endswith("/bob")
    assert deny.scope == "command" and deny.reason == "missing scope 'command'"
    assert (deny.target_type, deny.target_id) == ("device", "sensor-1")


def test_it_lets_bob_read(bob_api: APIClient) -> None:
    thermostat("sensor-1")
    assert bob_api.get("/api/v1/devices/sensor-1/").status_code == 200
    assert not AuditEvent.objects.exists(), "reads are not audited as allows"


def test_it_answers_mallory_401_and_audits_it(mallory_api: APIClient) -> None:
    thermostat("sensor-1")
    response = mallory_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert not Command.objects.exists()
    [deny] = denies()
    assert (deny.actor_type, deny.action, deny.reason) == ("token", "api.authenticate", "invalid token")
    assert "notarealsecret" not in json.dumps(deny.details) + deny.actor_id, "the secret never reaches the log"


def test_it_answers_401_without_credentials_and_audits_it() -> None:
    response = APIClient().get("/api/v1/devices/")
    assert response.status_code == 401
    [deny] = denies()
    assert deny.reason == "authentication required"


@pytest.mark.parametrize(
    ("body", "field", "level", "reason"),
    [
        (
            {"action": "explode", "capability": "setpoint", "value": 1},
            "action",
            "action",
            "unknown action 'explode'; expected one of set, get, toggle, execute",
        ),
        (
            {"action": "set", "capability": "humidity", "value": 1},
            "capability",
            "capability",
            "device 'sensor-1' has no capability 'humidity' (it has: mode, setpoint, temperature)",
        ),
        ({"action": "set", "capability": "temperature", "value": 20}, "action", "kind", "cannot set sensor capability 'temperature': sensors are read-only"),
        ({"action": "set", "capability": "setpoint", "value": "warm"}, "value", "value", "capability 'setpoint' takes a number, got string 'warm'"),
        ({"action": "set", "capability": "setpoint", "value": 99}, "value", "value", "value 99 above max 35 for capability 'setpoint'"),
        ({"action": "set", "capability": "mode", "value": "cool"}, "value", "value", "value 'cool' is not one of off, heat, auto for capability 'mode'"),
        ({"action": "set", "capability": "setpoint", "value": 20, "ttl_s": 0}, "ttl_s", "ttl", "ttl_s 0 is already expired: it must be at least 1 second"),
        ({"action": "set", "capability": "setpoint", "value": 20, "ttl_s": -5}, "ttl_s", "ttl", "ttl_s -5 is already expired: it must be at least 1 second"),
        (
            {"action": "toggle", "capability": "setpoint"},
            "action",
            "kind",
            "cannot toggle capability 'setpoint': only boolean capabilities toggle (it is float)",
        ),
        ({"action": "set", "capability": "setpoint"}, "value", "value", "set needs a value for capability 'setpoint'"),
    ],
)
def test_it_rejects_bad_commands_with_the_failing_level(alice_api: APIClient, body: dict[str, Any], field: str, level: str, reason: str) -> None:
    thermostat("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == {"field": field, "reason": reason, "level": level}
    assert not Command.objects.exists()
    [deny] = denies()
    assert deny.action == "command.create" and deny.reason == reason and deny.details["level"] == level


def test_it_rejects_a_command_for_an_unknown_device(alice_api: APIClient) -> None:
    response = alice_api.post("/api/v1/commands/", {"node_id": "ghost-9", "action": "get", "capability": "x"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"field": "node_id", "reason": "no device with node_id 'ghost-9'", "level": "device"}
    assert denies()[0].target_id == "ghost-9"


def test_it_rejects_commands_to_unprovisioned_devices(alice_api: APIClient) -> None:
    thermostat("sensor-2", status=DeviceStatus.UNPROVISIONED)
    response = alice_api.post("/api/v1/commands/", {"node_id": "sensor-2", "action": "get", "capability": "temperature"}, format="json")
    assert response.status_code == 400
    assert response.json()["level"] == "provisioned"
    assert response.json()["reason"] == "device 'sensor-2' is unprovisioned: only provisioned devices take commands"


def test_it_rejects_malformed_json_and_audits_it(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    response = alice_api.generic("POST", "/api/v1/devices/sensor-1/commands/", '{"action": "set", "capability": ', content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "body" and "JSON parse error" in body["reason"]
    assert not Command.objects.exists()
    [deny] = denies()
    assert deny.reason.startswith("malformed request body")


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ([1, 2], "body", "expected a JSON object, got list"),
        ({"action": "get", "capability": "temperature", "colour": "red"}, "colour", "unknown field 'colour'; allowed: action, capability, ttl_s, value"),
    ],
)
def test_it_rejects_bodies_of_the_wrong_shape(alice_api: APIClient, payload: Any, field: str, reason: str) -> None:
    thermostat("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", payload, format="json")
    assert response.status_code == 400
    assert response.json() == {"field": field, "reason": reason}
    assert not Command.objects.exists()
    assert denies()[0].reason == reason


def test_it_returns_one_result_per_batch_member(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    dimmer("dimmer-1")
    items = [
        {"node_id": "sensor-1", "action": "set", "capability": "setpoint", "value": 19},
        {"node_id": "dimmer-1", "action": "set", "capability": "level", "value": 150},
        {"node_id": "ghost-9", "action": "get", "capability": "level"},
    ]
    response = alice_api.post("/api/v1/commands/batch/", {"commands": items}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    ok, too_bright, ghost = body["results"]
    assert ok["ok"] and ok["node_id"] == "sensor-1" and Command.objects.get(id=ok["id"]).value == 19
    assert too_bright == {"node_id": "dimmer-1", "ok": False, "field": "value", "level": "value", "reason": "value 150 above max 100 for capability 'level'"}
    assert ghost["level"] == "device"


def test_it_rejects_a_batch_that_is_not_a_list(alice_api: APIClient) -> None:
    response = alice_api.post("/api/v1/commands/batch/", {"commands": "all"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"field": "commands", "reason": "commands must be a non-empty list"}


def test_it_fans_a_group_command_out_to_every_member(alice_api: APIClient) -> None:
    group = GroupFactory(name="lights")
    group.members.add(relay("relay-1"), relay("relay-2"), thermostat("sensor-1"))
    response = alice_api.post(f"/api/v1/groups/{group.pk}/command/", {"action": "set", "capability": "on", "value": True}, format="json")
    assert response.status_code == 200, response.content
    results = {r["node_id"]: r for r in response.json()["results"]}
    assert results["relay-1"]["ok"] and results["relay-2"]["ok"]
    assert results["sensor-1"] == {
        "node_id": "sensor-1",
        "ok": False,
        "field": "capability",
        "level": "capability",
        "reason": "device 'sensor-1' has no capability 'on' (it has: mode, setpoint, temperature)",
    }
    assert Command.objects.filter(capability="on", status=CommandStatus.PENDING).count() == 2


def test_it_lists_and_filters_commands(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    relay("relay-1")
    for node_id, cap, value in [("sensor-1", "setpoint", 20), ("sensor-1", "mode", "heat"), ("relay-1", "on", True)]:
        assert alice_api.post("/api/v1/commands/", {"node_id": node_id, "action": "set", "capability": cap, "value": value}, format="json").status_code == 201
    listed = alice_api.get("/api/v1/commands/?node_id=sensor-1").json()
    assert listed["count"] == 2
    assert {c["capability"] for c in listed["results"]} == {"setpoint", "mode"}
    history = alice_api.get("/api/v1/devices/relay-1/commands/").json()
    assert [c["capability"] for c in history["results"]] == ["on"]


def test_it_rejects_nul_characters_and_still_audits_the_attempt(alice_api: APIClient) -> None:
    """Found by schemathesis on PostgreSQL: NUL in input must be a 400, never a 500."""
    thermostat("sensor-1")
    response = alice_api.post("/api/v1/commands/", {"node_id": "sensor-1\x00", "action": "get", "capability": "temperature"}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "node_id"
    odd_key = alice_api.post("/api/v1/devices/sensor-1/commands/", {"act\x00ion": "get"}, format="json")
    assert odd_key.status_code == 400
    assert [d.reason for d in denies()][-1].startswith("unknown field 'act\ufffdion'")


def test_it_accepts_only_json_bodies(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    response = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "get", "capability": "temperature"})  # multipart form
    assert response.status_code == 415
    assert not Command.objects.exists()
    assert denies()[0].reason.startswith("Unsupported media type")


def test_session_users_get_the_scopes_of_their_roles(django_user_model: Any) -> None:
    from django.contrib.auth.models import Group as Role

    thermostat("sensor-1")
    operator = django_user_model.objects.create_user("carol", password="carol-Pass-123")
    operator.groups.add(Role.objects.get_or_create(name="operator")[0])  # the roles migration made it
    viewer = django_user_model.objects.create_user("dave", password="dave-Pass-123")
    viewer.groups.add(Role.objects.get_or_create(name="viewer")[0])
    body = {"action": "set", "capability": "setpoint", "value": 20}

    as_operator = APIClient()
    as_operator.force_login(operator)
    assert as_operator.post("/api/v1/devices/sensor-1/commands/", body, format="json").status_code == 201
    as_viewer = APIClient()
    as_viewer.force_login(viewer)
    assert as_viewer.get("/api/v1/devices/").status_code == 200
    assert as_viewer.post("/api/v1/devices/sensor-1/commands/", body, format="json").status_code == 403
    assert denies()[-1].actor_id == "dave"
