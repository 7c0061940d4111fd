"""Scenes through the API: members checked like rule actions (field path and reason, nothing
stored, refusal audited); only the command scope saves or activates; a rule's scene action
runs the scene's members as the rule."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from automation.models import RuleRun, Scene
from devices.models import Command, Device
from tests.factories import GroupFactory, relay, thermostat

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    relay("relay-1")
    relay("relay-2")
    Device.objects.update(status="provisioned", online=True)
    GroupFactory(name="fans").members.add(*Device.objects.filter(node_id__startswith="relay-"))


@pytest.mark.parametrize(
    ("members", "field", "words"),
    [
        ([], "members", "non-empty list"),
        ([{"device": "nope", "capability": "on", "value": True}], "members[0].device", "no device 'nope'"),
        ([{"device": "thermo-1", "capability": "temperature", "value": 20}], "members[0].action", "sensors are read-only"),
        ([{"device": "thermo-1", "capability": "setpoint", "value": 99}], "members[0].value", "99"),
        ([{"group": "fans", "capability": "on", "value": "yes"}], "members[0].value", "takes a boolean"),
        ([{"device": "relay-1", "capability": "on"}], "members[0].value", "needs the value"),
        ([{"device": "relay-1", "capability": "on", "value": True, "colour": 1}], "members[0].colour", "unknown field"),
    ],
)
def test_a_scene_with_a_bad_member_is_refused_naming_it(fleet: None, alice_api: APIClient, members: list[Any], field: str, words: str) -> None:
    answer = alice_api.post("/api/v1/scenes/", {"name": "evening", "members": members}, format="json")
    assert answer.status_code == 400 and answer.json()["field"] == field and words in answer.json()["reason"], answer.json()
    assert not Scene.objects.exists()
    assert AuditEvent.objects.filter(action="scene.create", decision="deny", details__field=field).exists()


def test_scenes_are_saved_activated_and_deleted_with_the_command_scope_only(fleet: None, alice_api: APIClient, bob_api: APIClient) -> None:
    body = {"name": "fans on", "members": [{"group": "fans", "capability": "on", "value": True}, {"device": "thermo-1", "capability": "setpoint", "value": 19}]}
    assert bob_api.post("/api/v1/scenes/", body, format="json").status_code == 403
    scene_id = alice_api.post("/api/v1/scenes/", body, format="json").json()["id"]
    assert alice_api.post("/api/v1/scenes/", body, format="json").json()["field"] == "name"
    assert bob_api.post(f"/api/v1/scenes/{scene_id}/activate/").status_code == 403
    Device.objects.filter(node_id="relay-2").update(online=False)
    results = alice_api.post(f"/api/v1/scenes/{scene_id}/activate/").json()["results"]
    assert [(r["device"], r["status"]) for r in results] == [("relay-1", "pending"), ("relay-2", "failed"), ("thermo-1", "pending")]
    assert set(Command.objects.values_list("device__node_id", "capability")) == {("relay-1", "on"), ("thermo-1", "setpoint")}
    assert alice_api.post("/api/v1/scenes/snapshot/", {"name": "x", "devices": ["ghost"]}, format="json").json() == {
        "field": "devices[0]",
        "reason": "no device 'ghost'",
    }
    assert alice_api.post("/api/v1/scenes/snapshot/", {"name": "x", "devices": ["relay-1"]}, format="json").json()["field"] == "devices"  # nothing reported yet
    assert bob_api.delete(f"/api/v1/scenes/{scene_id}/").status_code == 403
    assert alice_api.delete(f"/api/v1/scenes/{scene_id}/").status_code == 204
    assert alice_api.post(f"/api/v1/scenes/{scene_id}/activate/").status_code == 404


def test_a_rule_activates_a_scene_as_the_rule(fleet: None, alice_api: APIClient) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from automation import evaluator
    from devices import state

    alice_api.post("/api/v1/scenes/", {"name": "cool down", "members": [{"group": "fans", "capability": "on", "value": True}]}, format="json")
    rule = {"name": "hot", "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}, "then": [{"scene": "cool down"}]}
    rule_id = alice_api.post("/api/v1/rules/", rule, format="json").json()["id"]
    ts = timezone.now() + timedelta(seconds=1)
    reports = [state.StateReport("thermo-1", {"temperature": 31.0}, ts)]
    state.apply_reports(reports, now=ts)
    evaluator.on_state(reports)
    run = RuleRun.objects.get()
    assert run.outcome == "fired" and [a["device"] for a in run.actions] == ["relay-1", "relay-2"] and all(a["scene"] == "cool down" for a in run.actions)
    assert set(Command.objects.values_list("requested_by", flat=True)) == {f"rule:{rule_id}"}
