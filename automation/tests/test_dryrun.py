"""Dry-run = live: a rule fed live through the state path (the real subscriber function,
beat's re-checks between reports), then dry-run over the telemetry that the same reports
stored, lists exactly the live runs' moments and triggers; a rule not saved yet dry-runs
through the API; bad ranges are refused with the field."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from audit.services import Actor
from automation import dryrun, evaluator, rules
from automation.models import RuleRun
from devices import state
from devices.models import Device
from tests.factories import GroupFactory, relay, thermostat

pytestmark = pytest.mark.django_db

ALICE = Actor("user", "alice", scopes=frozenset({"command", "read-status"}))
BASE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    thermostat("thermo-2")
    relay("relay-1")
    Device.objects.update(status="provisioned")
    GroupFactory(name="rooms").members.add(*Device.objects.filter(node_id__startswith="thermo-"))


def live(seed: int) -> None:
    """Two thermostats wandering around 30 °C for almost seven minutes, reports every 1-4 s each,
    beat re-checking every second in between."""
    rng = random.Random(seed)
    events: list[tuple[float, str, float]] = []
    for node in ("thermo-1", "thermo-2"):
        t, temp = 0.0, 29.0
        while t < 400:
            t += rng.choice([1.0, 2.0, 3.0, 4.0]) + rng.random() / 10
            temp = round(min(36.0, max(24.0, temp + rng.uniform(-1.2, 1.2))), 1)
            events.append((t, node, temp))
    events.sort()
    beat = 0.0
    for t, node, temp in events:
        while beat + 1 < t:
            beat += 1
            evaluator.recheck_due(BASE + timedelta(seconds=beat))
        ts = BASE + timedelta(seconds=t)
        reports = [state.StateReport(node, {"temperature": temp, "mode": "heat" if temp > 30 else "auto"}, ts)]
        state.apply_reports(reports, now=ts)
        evaluator.on_state(reports)  # what the events thread runs after the commit
    evaluator.recheck_due(BASE + timedelta(seconds=500))


RULES: list[dict[str, Any]] = [
    {"name": "hot for 10 s", "cooldown_s": 30, "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10, "hysteresis": 1}},
    {"name": "any room hot", "when": {"group": "rooms", "capability": "temperature", "op": "ge", "value": 33}},
    {"name": "both warm", "when": {"all": [{"device": "thermo-1", "capability": "temperature", "op": "between", "value": [29, 31]},
                                           {"device": "thermo-2", "capability": "temperature", "op": "lt", "value": 28, "for_s": 5}]}},
    {"name": "mode flips", "cooldown_s": 20, "when": {"device": "thermo-2", "capability": "mode", "op": "changed_to", "value": "heat"}},
]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
def test_a_dry_run_lists_exactly_what_the_live_rules_did_on_the_same_data(fleet: None, seed: int) -> None:
    saved = [rules.create(ALICE, {**doc, "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}]}) for doc in RULES]
    live(seed)
    assert RuleRun.objects.filter(outcome="fired").count() > 5, "the data makes the rules fire"
    for rule in saved:
        ran = [(r.started_at, r.trigger) for r in RuleRun.objects.filter(rule=rule).order_by("started_at")]
        replayed = dryrun.dry_run(rule.document, BASE, BASE + timedelta(seconds=500))["firings"]
        again = [(datetime.fromisoformat(f["at"]), f["trigger"]) for f in replayed]
        assert again == ran, (rule.name, again, ran)
        assert all(f["actions"] == [{"device": "relay-1", "capability": "on", "action": "set", "value": True}] for f in replayed)


def test_an_unsaved_rule_dry_runs_through_the_api_and_bad_ranges_are_refused(fleet: None, alice_api: APIClient) -> None:
    live(7)
    rule = {"name": "try", "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 31},
            "then": [{"group": "rooms", "capability": "setpoint", "action": "set", "value": 20}]}  # fmt: skip
    window = {"from": BASE.isoformat(), "to": (BASE + timedelta(minutes=15)).isoformat()}
    answer = alice_api.post("/api/v1/rules/dry-run/", {"rule": rule, **window}, format="json")
    assert answer.status_code == 200, answer.content
    firings = answer.json()["firings"]
    assert firings and firings[0]["trigger"]["device"] == "thermo-1" and firings[0]["trigger"]["value"] > 31
    assert [a["device"] for a in firings[0]["actions"]] == ["thermo-1", "thermo-2"]
    assert not RuleRun.objects.filter(rule__name="try").exists()
    saved = rules.create(ALICE, rule)
    assert alice_api.post(f"/api/v1/rules/{saved.pk}/dry-run/", window, format="json").json()["firings"] == firings
    bad = {**rule, "when": {**rule["when"], "op": "hotter"}}
    assert alice_api.post("/api/v1/rules/dry-run/", {"rule": bad, **window}, format="json").json()["field"] == "when.op"
    assert alice_api.post("/api/v1/rules/dry-run/", {"rule": rule, "from": "yesterday", "to": window["to"]}, format="json").json()["field"] == "from"
    backwards = {"from": window["to"], "to": window["from"]}
    assert alice_api.post(f"/api/v1/rules/{saved.pk}/dry-run/", backwards, format="json").json()["field"] == "to"
    year = {"from": BASE.isoformat(), "to": (BASE + timedelta(days=400)).isoformat()}
    assert "at most 31 days" in alice_api.post(f"/api/v1/rules/{saved.pk}/dry-run/", year, format="json").json()["reason"]
