"""Local intents through the API on a demo-like fleet (ARCHITECTURE §9.3): each sentence, in
several phrasings, with numbers and units, names with typos, aliases and node ids read as
words, and ambiguous ones, asserting the commands created (Command rows, through the six
levels) or the clarification asked; no model involved."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from automation import scenes
from devices.models import Capability, CapabilityKind, Command, Device, Group, ValueType
from tests.factories import CapabilityFactory, DeviceFactory, GroupFactory, dimmer, relay, thermostat

pytestmark = pytest.mark.django_db

URL = "/api/v1/assistant/"


@pytest.fixture
def fleet() -> None:
    thermostat("demo-thermostat-1", name="Greenhouse thermostat", aliases=["greenhouse"], reported={"temperature": 24.5, "setpoint": 21.0, "mode": "auto"})
    thermostat("demo-thermostat-2", name="Office thermostat", reported={"temperature": 20.0, "setpoint": 19.5, "mode": "heat"})
    relay("demo-relay-1", name="Kitchen light", reported={"on": False})
    relay("demo-relay-2", name="Hall light", reported={"on": True})
    relay("demo-relay-3", name="Greenhouse fan")
    relay("demo-relay-4", name="Office fan")
    dimmer("demo-dimmer-1", name="Desk light", reported={"level": 10})
    door = DeviceFactory(node_id="demo-door-1", device_type="door", name="Front door", reported={"open": False})
    CapabilityFactory(device=door, name="open", kind=CapabilityKind.SENSOR, value_type=ValueType.BOOL)
    Device.objects.update(status="provisioned", online=True)
    Device.objects.filter(node_id="demo-relay-4").update(online=False)
    GroupFactory(name="fans").members.add(*Device.objects.filter(node_id__in=["demo-relay-3", "demo-relay-4"]))
    scenes.create(
        Actor.system("test"),
        {
            "name": "movie night",
            "members": [{"device": "demo-dimmer-1", "capability": "level", "value": 20}, {"device": "demo-relay-2", "capability": "on", "value": False}],
        },
    )


def C(node: str, capability: str, action: str, value: Any = None) -> tuple[str, str, str, Any]:
    return (f"demo-{node}", capability, action, value)


CASES: list[tuple[str, str, Any]] = [
    # on / off / toggle, several phrasings
    ("turn on the kitchen light", "commands", [C("relay-1", "on", "set", True)]),
    ("switch the kitchen light off", "commands", [C("relay-1", "on", "set", False)]),
    ("Turn ON the Kitchen Light!", "commands", [C("relay-1", "on", "set", True)]),
    ("power on the hall light", "commands", [C("relay-2", "on", "set", True)]),
    ("shut off the hall light", "commands", [C("relay-2", "on", "set", False)]),
    ("switch on hall light please", "commands", [C("relay-2", "on", "set", True)]),
    ("toggle the kitchen light", "commands", [C("relay-1", "on", "toggle")]),
    ("flip the hall light", "commands", [C("relay-2", "on", "toggle")]),
    # typos within a small edit distance; node ids read as words
    ("turn on the kitchn light", "commands", [C("relay-1", "on", "set", True)]),
    ("switch on the hal light", "commands", [C("relay-2", "on", "set", True)]),
    ("turn off the kitchen lihgt", "commands", [C("relay-1", "on", "set", False)]),
    ("turn on the greenhouse fna", "commands", [C("relay-3", "on", "set", True)]),
    ("turn on demo relay 1", "commands", [C("relay-1", "on", "set", True)]),
    ("turn off demo-relay-2", "commands", [C("relay-2", "on", "set", False)]),
    # groups
    ("turn on the fans", "commands", [C("relay-3", "on", "set", True), C("relay-4", "on", "set", True)]),
    ("switch the fans off", "commands", [C("relay-3", "on", "set", False), C("relay-4", "on", "set", False)]),
    # set a value, numbers with units, percentages, enums, aliases of capabilities
    ("set the greenhouse thermostat to 21 degrees", "commands", [C("thermostat-1", "setpoint", "set", 21.0)]),
    ("set the greenhouse thermostat to 22.5°C", "commands", [C("thermostat-1", "setpoint", "set", 22.5)]),
    ("set the greenhouse to 19", "commands", [C("thermostat-1", "setpoint", "set", 19.0)]),
    ("set the setpoint of the office thermostat to 18", "commands", [C("thermostat-2", "setpoint", "set", 18.0)]),
    ("change the office thermostat target temperature to 20,5", "commands", [C("thermostat-2", "setpoint", "set", 20.5)]),
    ("set the greenhouse thermostat mode to heat", "commands", [C("thermostat-1", "mode", "set", "heat")]),
    ("set the greenhouse thermostat to heat", "commands", [C("thermostat-1", "mode", "set", "heat")]),
    ("set the desk light to 40%", "commands", [C("dimmer-1", "level", "set", 40)]),
    ("dim the desk light to 25 percent", "commands", [C("dimmer-1", "level", "set", 25)]),
    ("set the desk light brightness to 70", "commands", [C("dimmer-1", "level", "set", 70)]),
    ("set the desk light to half", "commands", [C("dimmer-1", "level", "set", 50)]),
    ("put the offcie thermostat at 17 degrees", "commands", [C("thermostat-2", "setpoint", "set", 17.0)]),
    # a value the device refuses: listed as rejected with the level's reason, no Command row
    ("set the greenhouse thermostat to 50 degrees", "rejected", [C("thermostat-1", "setpoint", "set", 50.0)]),
    # ambiguous: the choices, nothing sent
    ("turn on the light", "choices", ["Desk light", "Hall light", "Kitchen light"]),
    ("set the thermostat to 21", "choices", ["Greenhouse thermostat", "Office thermostat"]),
    ("what is the temperature of the office", "choices", ["Office fan", "Office thermostat"]),
    # reading
    ("what is the temperature of the greenhouse thermostat", "answer", "temperature: 24.5 °C"),
    ("what's the temperature in the greenhouse", "answer", "temperature: 24.5 °C"),
    ("how warm is the office thermostat", "answer", "temperature: 20.0 °C"),
    ("what is the office thermostat setpoint", "answer", "setpoint: 19.5 °C"),
    ("is the hall light on", "answer", "yes: Hall light is on"),
    ("is the kitchen light on", "answer", "no: Kitchen light is off"),
    ("is the front door open", "answer", "no: Front door is closed"),
    ("which devices are offline", "answer", "1 offline: Office fan"),
    ("what is offline", "answer", "1 offline: Office fan"),
    ("list the offline devices", "answer", "1 offline: Office fan"),
    # scenes
    ("activate the movie night scene", "commands", [C("dimmer-1", "level", "set", 20), C("relay-2", "on", "set", False)]),
    ("run scene movie night", "commands", [C("dimmer-1", "level", "set", 20), C("relay-2", "on", "set", False)]),
    # not understood: 400 with the reason (and what there is, where it helps)
    ("activate the party scene", "refused", "no scene called 'party'"),
    ("turn on the garage door opener", "refused", "no device or group called 'garage door opener'"),
    ("make me a sandwich", "refused", "not understood"),
    ("turn on the greenhouse thermostat", "refused", "nothing to switch on or off"),
    ("set the kitchen light to purple", "refused", "'purple' fits nothing Kitchen light can set"),
]


@pytest.mark.parametrize(("text", "kind", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_sentence_is_understood_and_acted_on_locally(fleet: None, alice_api: APIClient, text: str, kind: str, expected: Any) -> None:
    answer = alice_api.post(URL, {"text": text}, format="json")
    body = answer.json()
    if kind == "refused":
        assert answer.status_code == 400, body
        assert body["field"] == "text" and expected in body["reason"], body
        assert not Command.objects.exists()
        return
    assert answer.status_code == 200, body
    assert body["handled_by"] == "local" and body["provider"] is None and body["understood"]
    sent = [(c["device"], c["capability"], c["action"], c["value"]) for c in body["commands"]]
    if kind == "commands":
        assert sent == expected, body
        assert all(c["status"] == "pending" and c["id"] for c in body["commands"]), body
        rows = {(c.device.node_id, c.capability, c.action, c.value) for c in Command.objects.select_related("device")}
        assert rows == set(expected), "each command went through send_command as the caller"
        assert all(r.startswith("token:") and r.endswith("/alice") for r in Command.objects.values_list("requested_by", flat=True)), "as alice's token"
    elif kind == "rejected":
        assert sent == expected and body["commands"][0]["status"] == "rejected" and body["commands"][0]["id"] is None
        assert "35" in body["commands"][0]["reason"], body
        assert not Command.objects.exists()
    elif kind == "choices":
        assert body["commands"] == [] and not Command.objects.exists()
        assert sorted(c["name"] for c in body["choices"]) == expected, body
        assert all(c.get("node_id") for c in body["choices"]), "each choice names its device"
    else:
        assert body["commands"] == [] and expected in body["answer"], body
    assert AuditEvent.objects.filter(action="assistant.ask", decision="allow", actor_id__endswith="alice").exists()


def test_a_sentence_that_would_act_needs_the_command_scope(fleet: None, bob_api: APIClient) -> None:
    refused = bob_api.post(URL, {"text": "turn on the kitchen light"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["field"] == "text" and "command" in refused.json()["reason"]
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="assistant.act", decision="deny", actor_id__endswith="bob").exists()
    read = bob_api.post(URL, {"text": "what is the temperature of the greenhouse"}, format="json")
    assert read.status_code == 200 and "24.5" in read.json()["answer"]


def test_a_renamed_device_is_matched_by_its_new_name_at_once(
    fleet: None, alice_api: APIClient, django_user_model: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from conftest import make_token_client

    admin_api = make_token_client(django_user_model.objects.create_user("ada", password="ada-Pass-123"), ["admin", "read-status"])[0]
    assert alice_api.patch("/api/v1/devices/demo-relay-1/", {"name": "Pantry light"}, format="json").status_code == 403, "renaming is admin"
    alice_api.post(URL, {"text": "what is the kitchen light power"}, format="json")  # the name index is loaded
    with django_capture_on_commit_callbacks(execute=True):
        renamed = admin_api.patch("/api/v1/devices/demo-relay-1/", {"name": "Pantry light", "aliases": ["larder lamp"]}, format="json")
    assert renamed.status_code == 200 and renamed.json()["aliases"] == ["larder lamp"]
    assert admin_api.patch("/api/v1/devices/demo-relay-1/", {"aliases": "x"}, format="json").json()["field"] == "aliases"
    answer = alice_api.post(URL, {"text": "turn on the larder lamp"}, format="json").json()
    assert [c["device"] for c in answer["commands"]] == ["demo-relay-1"]
    assert AuditEvent.objects.filter(action="device.rename", decision="allow", actor_id__endswith="ada").exists()


def test_a_renamed_group_is_matched_by_its_new_name(
    fleet: None, alice_api: APIClient, django_user_model: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    """Renamed through the API (this process: at once) and then in place by another process
    (its `updated_at` changes the fingerprint the index looks at every second)."""
    from assistant import names
    from conftest import make_token_client

    admin_api = make_token_client(django_user_model.objects.create_user("ada", password="ada-Pass-123"), ["admin", "read-status"])[0]
    fans = Group.objects.get(name="fans")
    alice_api.post(URL, {"text": "what is the kitchen light power"}, format="json")  # the name index is loaded
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.patch(f"/api/v1/groups/{fans.pk}/", {"name": "blowers"}, format="json").status_code == 200
    answer = alice_api.post(URL, {"text": "turn off the blowers"}, format="json").json()
    assert sorted(c["device"] for c in answer["commands"]) == ["demo-relay-3", "demo-relay-4"], answer

    Group.objects.filter(pk=fans.pk).update(name="vents", updated_at=timezone.now())  # another hub process
    monkeypatch.setattr(names.NameIndex, "REFRESH_S", 0.0)  # ... a second later: the fingerprint is looked at again
    answer = alice_api.post(URL, {"text": "turn on the vents"}, format="json").json()
    assert sorted(c["device"] for c in answer["commands"]) == ["demo-relay-3", "demo-relay-4"], answer


@pytest.mark.parametrize("body", [{}, {"text": ""}, {"text": 5}, {"text": "x" * 501}])
def test_a_body_without_a_sentence_is_refused(fleet: None, alice_api: APIClient, body: dict[str, Any]) -> None:
    answer = alice_api.post(URL, body, format="json")
    assert answer.status_code == 400 and answer.json()["field"] == "text"


def test_capability_aliases_are_words_for_it(fleet: None, alice_api: APIClient, monkeypatch: Any) -> None:
    from assistant import names

    assert alice_api.post(URL, {"text": "set the desk light glow to 33"}, format="json").status_code == 400
    # The admin's capability inline, in another process: the aliases and the device's named_at.
    Capability.objects.filter(device__node_id="demo-dimmer-1", name="level").update(aliases=["glow"])
    Device.objects.filter(node_id="demo-dimmer-1").update(named_at=timezone.now())
    monkeypatch.setattr(names.NameIndex, "REFRESH_S", 0.0)  # ... a second later: the fingerprint is looked at again
    answer = alice_api.post(URL, {"text": "set the desk light glow to 33"}, format="json").json()
    assert [(c["capability"], c["value"]) for c in answer["commands"]] == [("level", 33)]
