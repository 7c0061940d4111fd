"""The tool catalogue the MCP server and the models share, through `tools.call` as each
caller: what each returns, the scope each needs, the argument checks, and the audit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from assistant import tools
from audit.models import AuditEvent
from audit.services import Actor
from automation import rules, scenes
from devices import state
from devices.models import Command, Device
from tests.factories import GroupFactory, relay, thermostat

pytestmark = pytest.mark.django_db

OPERATOR = Actor("token", "k1/otto", frozenset({"read-status", "command"}))
VIEWER = Actor("token", "k2/vera", frozenset({"read-status"}))
ADMIN = Actor("token", "k3/ada", frozenset({"read-status", "admin", "ota"}))


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1", name="Greenhouse thermostat")
    relay("relay-1", name="Kitchen light")
    relay("relay-2", name="Hall light")
    Device.objects.update(status="provisioned", online=True)
    GroupFactory(name="lights").members.add(*Device.objects.filter(node_id__startswith="relay-"))
    scenes.create(Actor.system("test"), {"name": "evening", "members": [{"device": "relay-1", "capability": "on", "value": True}]})


def test_each_caller_is_offered_the_tools_of_its_scopes() -> None:
    assert {t.name for t in tools.available(VIEWER)} == {"list_devices", "get_device", "list_groups", "list_scenes", "get_telemetry", "list_rules"}
    assert {"send_command", "group_command", "activate_scene"} <= {t.name for t in tools.available(OPERATOR)}
    assert {"list_rollouts", "list_audit"} <= {t.name for t in tools.available(ADMIN)}
    assert "send_command" not in {t.name for t in tools.available(ADMIN)}


def test_reading_tools(fleet: None) -> None:
    ok, found = tools.call(VIEWER, "list_devices", {"query": "light"}, "mcp")
    assert ok and [d["node_id"] for d in found["devices"]] == ["relay-1", "relay-2"] and found["total"] == 2
    ok, groups = tools.call(VIEWER, "list_groups", {}, "mcp")
    assert ok and groups == {"groups": [{"name": "lights", "members": ["relay-1", "relay-2"]}]}
    ok, listed = tools.call(VIEWER, "list_scenes", {}, "mcp")
    assert ok and [s["name"] for s in listed["scenes"]] == ["evening"]
    when = {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}
    rules.create(
        Actor("user", "alice", frozenset({"command"})),
        {"name": "hot", "when": when, "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}]},
    )
    ok, listed_rules = tools.call(VIEWER, "list_rules", {}, "mcp")
    assert ok and listed_rules["rules"][0]["name"] == "hot" and listed_rules["rules"][0]["enabled"] is True


def test_telemetry_comes_bucketed(fleet: None) -> None:
    now = timezone.now()
    for minutes, value in ((50, 20.0), (40, 22.0), (10, 24.0)):
        ts = now - timedelta(minutes=minutes)
        state.apply_reports([state.StateReport("thermo-1", {"temperature": value}, ts)], now=ts)
    ok, telemetry = tools.call(VIEWER, "get_telemetry", {"node_id": "thermo-1", "capability": "temperature", "hours": 1, "bucket_s": 1800}, "llm")
    assert ok and telemetry["bucket_s"] == 1800
    assert sum(b["count"] for b in telemetry["buckets"]) == 3 and max(b["max"] for b in telemetry["buckets"]) == 24.0
    ok, refused = tools.call(VIEWER, "get_telemetry", {"node_id": "thermo-1", "capability": "temperature", "hours": 9999}, "llm")
    assert not ok and refused["error"]["field"] == "hours"


def test_acting_tools_go_through_the_command_path_as_the_caller(fleet: None) -> None:
    ok, sent = tools.call(OPERATOR, "group_command", {"group": "lights", "action": "set", "capability": "on", "value": False}, "mcp")
    assert ok and [c["device"] for c in sent["commands"]] == ["relay-1", "relay-2"]
    ok, scene = tools.call(OPERATOR, "activate_scene", {"name": "evening"}, "mcp")
    assert ok and scene["members"][0]["device"] == "relay-1" and scene["members"][0]["command_id"]
    assert set(Command.objects.values_list("requested_by", flat=True)) == {"token:k1/otto"}
    ok, rejected = tools.call(OPERATOR, "send_command", {"node_id": "thermo-1", "action": "set", "capability": "setpoint", "value": 99}, "mcp")
    assert not ok and rejected["error"]["level"] == "value" and rejected["error"]["field"] == "value"
    assert Command.objects.count() == 3


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("fly", {}, "name"),
        ("get_device", {}, "node_id"),
        ("get_device", {"node_id": "nobody"}, "node_id"),
        ("get_device", ["relay-1"], "arguments"),
        ("list_devices", {"limit": "ten"}, "limit"),
        ("send_command", {"node_id": "relay-1", "action": "fly", "capability": "on"}, "action"),
        ("group_command", {"group": "nobody", "action": "set", "capability": "on", "value": True}, "group"),
    ],
)
def test_a_malformed_call_gets_its_field_and_reason_and_is_audited(fleet: None, name: str, args: Any, field: str) -> None:
    ok, answer = tools.call(OPERATOR, name, args, "mcp")
    assert not ok and answer["error"]["field"] == field and answer["error"]["reason"], answer
    assert AuditEvent.objects.filter(action="assistant.tool", decision="deny", actor_id="k1/otto").exists()


def test_the_admin_tools_need_their_scope(fleet: None) -> None:
    ok, answer = tools.call(OPERATOR, "list_audit", {"limit": 5}, "mcp")
    assert not ok and answer["error"]["scope"] == "admin"
    ok, events = tools.call(ADMIN, "list_audit", {"limit": 5}, "mcp")
    assert ok and [e["action"] for e in events["events"]] == ["assistant.tool", "scene.create"], "newest first: the refused call, the fixture's scene"
    ok, rollouts = tools.call(ADMIN, "list_rollouts", {}, "mcp")
    assert ok and rollouts == {"rollouts": []}
