"""Rules through the API (ARCHITECTURE §9.2): a valid rule is stored with its input index
and a fresh engine state; every invalid rule of the issue's item 4 is refused at save with
the field path and the reason, nothing written, the refusal audited; PUT, PATCH, DELETE;
only the `command` scope writes."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from automation.models import Rule, RuleInput, RuleState
from devices.models import Device
from industrial import config
from tests.factories import GroupFactory, dimmer, relay, thermostat

pytestmark = pytest.mark.django_db

URL = "/api/v1/rules/"


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    thermostat("thermo-2")
    relay("relay-1")
    dimmer("dimmer-1")
    GroupFactory(name="greenhouse").members.add(*Device.objects.filter(node_id__startswith="thermo-"))
    config.import_document(
        Actor("user", "root"),
        {
            "bridges": [
                {
                    "node_id": "plc-line-1", "host": "127.0.0.1", "port": 5020, "unit_id": 1,
                    "points": [
                        {"capability": "speed", "register": "holding", "address": 10, "data_type": "u16", "writable": True, "min": 0, "max": 3000},
                        {"capability": "oven_temp", "register": "holding", "address": 0, "data_type": "u16", "min": 0, "max": 400},
                    ],
                }
            ]
        },
    )  # fmt: skip


def cool(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "cool the room",
        "mode": "single",
        "cooldown_s": 60,
        "when": {"all": [{"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10}]},
        "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}],
    }
    doc.update(changes)
    return doc


def test_a_valid_rule_is_stored_with_its_inputs_and_a_fresh_state(fleet: None, alice_api: APIClient) -> None:
    answer = alice_api.post(URL, cool(), format="json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["name"] == "cool the room" and body["enabled"] is True and body["when"]["all"][0]["for_s"] == 10
    rule = Rule.objects.get(pk=body["id"])
    assert list(RuleInput.objects.filter(rule=rule).values_list("node_id", "capability")) == [("thermo-1", "temperature")]
    assert RuleState.objects.get(rule=rule).state == {}
    assert AuditEvent.objects.filter(action="automation.rule.create", decision="allow", actor_id__endswith="alice").exists()
    assert alice_api.get(f"{URL}{rule.pk}/").json()["then"][0]["device"] == "relay-1"
    runs = alice_api.get(f"{URL}{rule.pk}/runs/").json()
    assert (runs["results"] if isinstance(runs, dict) else runs) == []


W = "when.all[0]"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"when": {"all": [{"device": "nope", "capability": "temperature", "op": "gt", "value": 30}]}}, f"{W}.device", "no device 'nope'"),
        ({"when": {"all": [{"group": "attic", "capability": "temperature", "op": "gt", "value": 30}]}}, f"{W}.group", "no group 'attic'"),
        ({"when": {"all": [{"device": "thermo-1", "capability": "humidity", "op": "gt", "value": 30}]}}, f"{W}.capability", "has no capability 'humidity' (it has: mode, setpoint, temperature)"),
        ({"when": {"all": [{"group": "greenhouse", "capability": "on", "op": "eq", "value": True}]}}, f"{W}.capability", "no member of group 'greenhouse' has capability 'on'"),
        ({"when": {"all": [{"device": "relay-1", "capability": "on", "op": "gt", "value": 1}]}}, f"{W}.op", "'gt' compares numbers, and 'on' of relay-1 is bool"),
        ({"when": {"all": [{"device": "thermo-1", "capability": "mode", "op": "eq", "value": "cool"}]}}, f"{W}.value", "'cool'"),
        ({"when": {"all": [{"device": "relay-1", "capability": "on", "op": "eq", "value": "yes"}]}}, f"{W}.value", "takes a boolean"),
        ({"when": {"all": [{"device": "dimmer-1", "capability": "level", "op": "gt", "value": 150}]}}, f"{W}.value", "reads 0..100: it can never be above 150"),
        ({"when": {"all": [{"device": "thermo-1", "capability": "setpoint", "op": "between", "value": [40, 50]}]}}, f"{W}.value", "it can never be between 40 and 50"),
        ({"when": {"all": [{"device": "thermo-1", "capability": "temperature", "op": "between", "value": [30, 20]}]}}, f"{W}.value", "low is above high"),
        ({"then": [{"device": "thermo-1", "capability": "temperature", "action": "set", "value": 20}]}, "then[0].action", "sensors are read-only"),
        ({"then": [{"device": "relay-1", "capability": "on", "action": "set", "value": "on"}]}, "then[0].value", "takes a boolean"),
        ({"then": [{"device": "thermo-1", "capability": "setpoint", "action": "set", "value": 80}]}, "then[0].value", "80"),
        ({"then": [{"device": "plc-line-1", "capability": "speed", "action": "set", "value": 5000}]}, "then[0].value", "5000"),
        ({"then": [{"device": "plc-line-1", "capability": "oven_temp", "action": "set", "value": 100}]}, "then[0].action", "read-only"),
        ({"then": [{"device": "relay-1", "capability": "on", "action": "fly"}]}, "then[0].action", "unknown action 'fly'"),
        ({"then": [{"scene": "movie night"}]}, "then[0].scene", "no scene 'movie night'"),
        ({"then": [{"webhook": "http://127.0.0.1:8000/hook"}]}, "then[0].webhook", "loopback"),
        ({"then": [{"webhook": "http://169.254.169.254/latest"}]}, "then[0].webhook", "link-local"),
        ({"then": [{"webhook": "ftp://example.com/"}]}, "then[0].webhook", "http(s) URL"),
        ({"then": [{"delay_s": 7200}]}, "then[0].delay_s", "at most 3600 s"),
        ({"mode": "often"}, "mode", "unknown mode 'often'"),
    ],
)  # fmt: skip
def test_an_invalid_rule_is_refused_naming_the_field_and_nothing_is_stored(
    fleet: None, alice_api: APIClient, changes: dict[str, Any], field: str, words: str
) -> None:
    answer = alice_api.post(URL, cool(**changes), format="json")
    assert answer.status_code == 400, answer.content
    body = answer.json()
    assert body["field"] == field and words in body["reason"], body
    assert not Rule.objects.exists()
    assert AuditEvent.objects.filter(action="automation.rule.create", decision="deny", details__field=field).exists()


def test_a_rule_is_replaced_changed_and_deleted(fleet: None, alice_api: APIClient) -> None:
    rule_id = alice_api.post(URL, cool(), format="json").json()["id"]
    replaced = alice_api.put(
        f"{URL}{rule_id}/", cool(name="cool it", when={"device": "thermo-2", "capability": "temperature", "op": "gt", "value": 28}), format="json"
    )
    assert replaced.status_code == 200 and replaced.json()["name"] == "cool it"
    assert list(RuleInput.objects.filter(rule_id=rule_id).values_list("node_id", flat=True)) == ["thermo-2"]
    assert alice_api.patch(f"{URL}{rule_id}/", {"enabled": False}, format="json").json()["enabled"] is False
    refused = alice_api.patch(f"{URL}{rule_id}/", {"cooldown_s": -5}, format="json")
    assert refused.status_code == 400 and refused.json()["field"] == "cooldown_s"
    assert alice_api.patch(f"{URL}{rule_id}/", {"colour": "red"}, format="json").json()["field"] == "colour"
    assert Rule.objects.get(pk=rule_id).cooldown_s == 60
    second = alice_api.post(URL, cool(name="other"), format="json").json()["id"]
    assert alice_api.patch(f"{URL}{second}/", {"name": "cool it"}, format="json").json() == {"field": "name", "reason": "another rule is named 'cool it'"}
    assert alice_api.post(URL, cool(name="cool it"), format="json").json()["field"] == "name"
    assert alice_api.delete(f"{URL}{rule_id}/").status_code == 204
    assert alice_api.get(f"{URL}{rule_id}/").status_code == 404 and alice_api.delete(f"{URL}{rule_id}/").status_code == 404
    assert alice_api.put(f"{URL}abc/", cool(), format="json").status_code == 404
    actions = list(AuditEvent.objects.filter(action__startswith="automation.rule.", decision="allow").values_list("action", flat=True))
    assert actions.count("automation.rule.update") == 2 and "automation.rule.delete" in actions


def test_only_the_command_scope_writes_rules(fleet: None, alice_api: APIClient, bob_api: APIClient) -> None:
    refused = bob_api.post(URL, cool(), format="json")
    assert refused.status_code == 403 and not Rule.objects.exists()
    rule_id = alice_api.post(URL, cool(), format="json").json()["id"]
    assert bob_api.get(f"{URL}{rule_id}/").status_code == 200
    assert bob_api.patch(f"{URL}{rule_id}/", {"enabled": False}, format="json").status_code == 403
    assert bob_api.delete(f"{URL}{rule_id}/").status_code == 403
    assert Rule.objects.get(pk=rule_id).enabled
    assert AuditEvent.objects.filter(action__startswith="automation.rule.", decision="deny", actor_id__endswith="bob").count() >= 2


SECRET_HOOK = "https://ha.example.com:8123/api/webhook/greenhouse-s3cr3t?token=abc"


def test_a_reader_sees_a_webhook_s_address_without_its_secret(fleet: None, alice_api: APIClient, bob_api: APIClient, alice_web: Any, bob_web: Any) -> None:
    """Scope read-status (bob) reads rules, their runs and the rule page with each webhook's
    path and query hidden (they often are its credential); scope command (alice, who may
    change the rule anyway) gets the document as written. The runs line on the pages and
    in live events is masked for everyone."""
    from automation.models import RuleRun

    then = [{"device": "relay-1", "capability": "on", "action": "set", "value": True}, {"webhook": SECRET_HOOK, "body": {"text": "hot"}}]
    created = alice_api.post(URL, cool(then=then), format="json")
    assert created.status_code == 201 and created.json()["then"][1]["webhook"] == SECRET_HOOK
    rule_id = created.json()["id"]
    run = RuleRun.objects.create(
        rule_id=rule_id, started_at=Rule.objects.get(pk=rule_id).created_at, outcome="fired", actions=[{"action": 1, "webhook": SECRET_HOOK, "status": "sent"}]
    )
    shown = "https://ha.example.com:8123/…"
    assert bob_api.get(f"{URL}{rule_id}/").json()["then"][1] == {"webhook": shown, "body": {"text": "hot"}}
    assert bob_api.get(URL).json()["results"][0]["then"][1]["webhook"] == shown
    assert bob_api.get(f"{URL}{rule_id}/runs/").json()["results"][0]["actions"][0]["webhook"] == shown
    assert alice_api.get(f"{URL}{rule_id}/").json()["then"][1]["webhook"] == SECRET_HOOK
    assert alice_api.get(f"{URL}{rule_id}/runs/").json()["results"][0]["actions"][0]["webhook"] == SECRET_HOOK
    assert "s3cr3t" not in bob_web.get(f"/automation/{rule_id}/").content.decode()
    assert "greenhouse-s3cr3t" in alice_web.get(f"/automation/{rule_id}/").content.decode()  # in the document it edits
    assert run.actions_text == f"{shown} sent"
