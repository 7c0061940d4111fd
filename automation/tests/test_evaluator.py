"""Live evaluation through the state path (`devices.state.apply_reports`, whose committed
batches reach the rule evaluator through `devices.events`): only the rules that read what
changed run; a firing and its commands are one transaction; group conditions and group
actions; an interlock refuses the actuation and the run says why; a rule that stays true
fires once; cooldown."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.services import Actor
from automation import evaluator, rules, runs
from automation.models import Rule, RuleRun
from devices import state
from devices.models import Command, Device
from ota.models import DeviceFirmware
from tests.factories import GroupFactory, relay, thermostat

pytestmark = pytest.mark.django_db

ALICE = Actor("user", "alice", scopes=frozenset({"command", "read-status"}))


@pytest.fixture
def fleet() -> None:
    for node in ("thermo-1", "thermo-2"):
        thermostat(node)
    relay("relay-1")
    relay("relay-2")
    Device.objects.update(status="provisioned")
    GroupFactory(name="fans").members.add(*Device.objects.filter(node_id__startswith="relay-"))
    GroupFactory(name="rooms").members.add(*Device.objects.filter(node_id__startswith="thermo-"))


def report(node_id: str, at: float, **values: Any) -> None:
    """A committed state batch, evaluated as the events thread does it (synchronously here)."""
    ts = timezone.now() + timedelta(seconds=at)
    reports = [state.StateReport(node_id, values, ts)]
    state.apply_reports(reports, now=ts)
    evaluator.on_state(reports)


def save(**doc: Any) -> Rule:
    base: dict[str, Any] = {"name": "r", "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}}
    base["then"] = [{"device": "relay-1", "capability": "on", "action": "set", "value": True}]
    return rules.create(ALICE, {**base, **doc})


def test_only_rules_reading_what_changed_are_evaluated(fleet: None) -> None:
    hot = save()
    rooms = save(name="rooms", when={"group": "rooms", "capability": "temperature", "op": "lt", "value": 10})
    save(name="other", when={"device": "thermo-2", "capability": "mode", "op": "eq", "value": "heat"})
    assert evaluator.rules_reading({("thermo-1", "temperature")}) == [hot.pk, rooms.pk]
    assert evaluator.rules_reading({("thermo-2", "temperature")}) == [rooms.pk]
    assert evaluator.rules_reading({("relay-1", "on")}) == []


def test_a_firing_sends_its_commands_as_the_rule_and_a_true_condition_fires_once(fleet: None) -> None:
    rule = save(then=[{"group": "fans", "capability": "on", "action": "set", "value": True}])
    report("thermo-1", 0, temperature=29.0)
    assert not RuleRun.objects.exists()
    report("thermo-1", 1, temperature=31.0)
    report("thermo-1", 2, temperature=32.0)
    runs = list(RuleRun.objects.all())
    assert len(runs) == 1 and runs[0].outcome == "fired" and runs[0].reason == "2 of 2 commands sent"
    assert [a["device"] for a in runs[0].actions] == ["relay-1", "relay-2"]
    assert set(Command.objects.values_list("requested_by", flat=True)) == {f"rule:{rule.pk}"}
    assert Rule.objects.get(pk=rule.pk).last_outcome == "fired"


def test_a_device_mid_update_is_not_actuated_and_the_run_says_why(fleet: None) -> None:
    save(then=[{"group": "fans", "capability": "on", "action": "set", "value": True}])
    DeviceFirmware.objects.create(device=Device.objects.get(node_id="relay-2"), version="1.0.0", safe_mode=True)
    report("thermo-1", 0, temperature=31.0)
    run = RuleRun.objects.get()
    assert run.outcome == "fired" and "relay-2: device is in safe mode" in run.reason
    refused = next(a for a in run.actions if a["device"] == "relay-2")
    assert refused["status"] == "refused" and refused["guard"] == "ota.safe_mode" and refused["command_id"] is None
    assert list(Command.objects.values_list("device__node_id", flat=True)) == ["relay-1"]
    DeviceFirmware.objects.filter(device__node_id="relay-2").update(safe_mode=False)
    DeviceFirmware.objects.create(device=Device.objects.get(node_id="relay-1"), version="1.0.0", safe_mode=True)
    save(name="only relay-1", when={"device": "thermo-2", "capability": "temperature", "op": "gt", "value": 30})
    report("thermo-2", 1, temperature=31.0)
    alone = RuleRun.objects.get(rule__name="only relay-1")
    assert alone.outcome == "refused" and "safe mode" in alone.reason


def test_cooldown_and_a_restart_in_the_duration_fire_once(fleet: None) -> None:
    rule = save(when={"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10}, cooldown_s=60)
    report("thermo-1", 0, temperature=31.0)
    assert not RuleRun.objects.exists()
    due = timezone.now() + timedelta(seconds=10.5)
    assert evaluator.recheck_due(due) == 1 and RuleRun.objects.count() == 1
    assert evaluator.recheck_due(due + timedelta(seconds=5)) == 0, "nothing due: fired, the timer is done"
    report("thermo-1", 20, temperature=25.0)
    report("thermo-1", 21, temperature=31.0)
    assert evaluator.recheck_due(timezone.now() + timedelta(seconds=32)) == 1
    runs = list(RuleRun.objects.filter(rule=rule))
    assert len(runs) == 1, "the second firing fell in the cooldown"


def test_the_admin_lists_rules_with_their_runs_and_enables_or_disables_them(fleet: None, django_user_model: Any) -> None:
    from django.test import Client

    from audit.models import AuditEvent

    rule = save()
    report("thermo-1", 0, temperature=31.0)
    root = django_user_model.objects.create_superuser("root", password="root-Pass-123")
    client = Client()
    client.force_login(root)
    assert rule.name in client.get("/admin/automation/rule/").content.decode()
    page = client.get(f"/admin/automation/rule/{rule.pk}/change/").content.decode()
    assert "1 of 1 commands sent" in page
    client.post("/admin/automation/rule/", {"action": "disable", "_selected_action": [rule.pk]})
    assert not Rule.objects.get(pk=rule.pk).enabled
    assert AuditEvent.objects.filter(action="automation.rule.update", decision="allow", actor_id="root").exists()
    assert client.get("/admin/automation/rule/add/").status_code == 403


def test_a_rule_loop_stops_at_the_depth_bound_and_the_run_says_so(fleet: None, settings: Any) -> None:
    """A: relay-1 changed → toggle relay-2; B: relay-2 changed → toggle relay-1. Each device
    here does what it is told and reports the new value, as a real one would."""
    settings.AUTOMATION_MAX_CHAIN_DEPTH = 3
    save(name="A", when={"device": "relay-1", "capability": "on", "op": "changed"}, then=[{"device": "relay-2", "capability": "on", "action": "toggle"}])
    save(name="B", when={"device": "relay-2", "capability": "on", "op": "changed"}, then=[{"device": "relay-1", "capability": "on", "action": "toggle"}])
    values = {"relay-1": False, "relay-2": False}
    for node in values:
        report(node, 0, on=False)
    report("relay-1", 1, on=True)  # someone switches relay-1 on: the loop starts
    values["relay-1"] = True
    t = 2
    while (command := Command.objects.filter(status="pending").order_by("created_at").first()) is not None:
        node = command.device.node_id
        values[node] = not values[node]
        Command.objects.filter(pk=command.pk).update(status="succeeded")
        report(node, t, on=values[node])
        t += 1
        assert t < 20, "the loop did not stop"
    runs = list(RuleRun.objects.order_by("started_at"))
    assert [r.depth for r in runs] == [0, 1, 2, 3, 4]
    assert [r.outcome for r in runs] == ["fired"] * 4 + ["stopped"]
    assert "stopped at chain depth 4 (bound 3): triggered through B ← A ← B ← A" in runs[-1].reason, runs[-1].reason
    assert runs[-1].actions == []


def test_a_device_that_loses_a_capability_disables_the_rules_using_it(fleet: None, django_capture_on_commit_callbacks: Any) -> None:
    from devices.capabilities import store_declaration
    from devices.models import Capability

    uses = save(name="uses temperature")
    other = save(name="uses mode", when={"device": "thermo-2", "capability": "mode", "op": "eq", "value": "heat"})
    keep = [
        {k: v for k, v in c.items() if k not in ("id", "device_id")}
        for c in Capability.objects.filter(device__node_id="thermo-1").exclude(name="temperature").values()
    ]
    with django_capture_on_commit_callbacks(execute=True):
        store_declaration(Device.objects.get(node_id="thermo-1"), keep)  # a new firmware declares no temperature
    rule = Rule.objects.get(pk=uses.pk)
    assert not rule.enabled and rule.disabled_reason == "disabled: when.capability: device 'thermo-1' has no capability 'temperature' (it has: mode, setpoint)"
    assert Rule.objects.get(pk=other.pk).enabled
    report("thermo-1", 0, mode="heat")  # nothing evaluates a disabled rule
    assert not RuleRun.objects.exists()


def test_a_batch_is_evaluated_report_by_report_in_time_order(fleet: None) -> None:
    """Two reports of one device in one committed batch: the rule sees 31 then 29, in report
    order (not the batch's last value twice), and fires on the first."""
    save()
    base = timezone.now()
    reports = [
        state.StateReport("thermo-1", {"temperature": 29.0}, base + timedelta(seconds=2)),
        state.StateReport("thermo-1", {"temperature": 31.0}, base + timedelta(seconds=1)),
    ]
    state.apply_reports(reports, now=base + timedelta(seconds=2))
    assert evaluator.evaluate_batch(reports) == 2
    run = RuleRun.objects.get()
    assert run.trigger["value"] == 31.0 and run.started_at == base + timedelta(seconds=1)


def test_a_batch_costs_a_fixed_number_of_queries_whatever_the_rules(fleet: None, django_assert_max_num_queries: Any) -> None:
    """Twenty rules reading one device, none firing: lock, states, groups, values, one bulk
    write; not a transaction per rule."""
    for n in range(20):
        save(name=f"rule-{n}", when={"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 40 + n})
    reports = [state.StateReport("thermo-1", {"temperature": 31.0}, timezone.now())]
    state.apply_reports(reports, now=reports[0].ts)
    evaluator.rules_reading({("thermo-1", "temperature")})  # the in-memory index, loaded once
    with django_assert_max_num_queries(8):
        assert evaluator.evaluate_batch(reports) == 20
    assert not RuleRun.objects.exists()


def test_a_failing_firing_keeps_its_rule_as_it_was_and_the_others_run(fleet: None, monkeypatch: Any) -> None:
    """A bug in one rule's firing (here: its command path raising) rolls back to its
    savepoint: no half-written run, its state unchanged, so the next report fires it; the
    other rule of the same batch fires."""
    broken = save(name="broken")
    save(name="fine", then=[{"device": "relay-2", "capability": "on", "action": "set", "value": True}])
    real = runs._command

    def failing(actor: Any, node_id: str, action: dict[str, Any], value: Any) -> dict[str, Any]:
        if node_id == "relay-1":
            raise RuntimeError("boom")
        return real(actor, node_id, action, value)

    monkeypatch.setattr(runs, "_command", failing)
    report("thermo-1", 0, temperature=31.0)
    assert list(RuleRun.objects.values_list("rule__name", flat=True)) == ["fine"]
    assert list(Command.objects.values_list("device__node_id", flat=True)) == ["relay-2"]
    monkeypatch.setattr(runs, "_command", real)
    report("thermo-1", 1, temperature=31.5)
    assert RuleRun.objects.filter(rule=broken).count() == 1, "the broken rule's state was not advanced: it fires now"


def test_a_device_installing_firmware_is_not_actuated_and_the_run_says_why(fleet: None, django_user_model: Any) -> None:
    """relay-2 is mid-update (its deployment accepted the offer and is downloading): the rule's
    group command reaches relay-1 only; the run names the guard and the deployment's state."""
    from conftest import make_token_client
    from ota import statemachine as sm
    from ota.models import Deployment
    from ota.tests.test_rollouts import release, walk

    ota_api = make_token_client(django_user_model.objects.create_user("olga", password="olga-Pass-123"), ["ota", "read-status"])[0]
    created = ota_api.post(
        "/api/v1/ota/rollouts/", {"release": release(types=("relay",)).pk, "targets": {"devices": ["relay-2"]}, "waves": ["100%"]}, format="json"
    )
    assert created.status_code == 201, created.content
    walk(Deployment.objects.get(rollout_id=created.json()["id"]), sm.Offer(), sm.Accepted(0))
    save(then=[{"group": "fans", "capability": "on", "action": "set", "value": True}])
    report("thermo-1", 0, temperature=31.0)
    run = RuleRun.objects.get()
    refused = next(a for a in run.actions if a["device"] == "relay-2")
    assert refused["guard"] == "ota.installing" and "installing firmware" in refused["reason"]
    assert run.outcome == "fired" and "relay-2: device is installing firmware" in run.reason
    assert list(Command.objects.values_list("device__node_id", flat=True)) == ["relay-1"]
