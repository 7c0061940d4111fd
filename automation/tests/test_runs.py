"""Rule runs with delays, the four modes, and their retention: a run waits at a `delay_s`
and beat goes on at its due time, once; single skips, restart cancels, queued waits its
turn, parallel overlaps; a changed rule cancels its runs in flight; old runs are pruned but
a rule's latest run stays."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.services import Actor
from automation import evaluator, rules, runs
from automation.models import RuleRun
from devices import state
from devices.models import Command, Device
from tests.factories import relay, thermostat

pytestmark = pytest.mark.django_db

ALICE = Actor("user", "alice", scopes=frozenset({"command", "read-status"}))
ON = {"device": "relay-1", "capability": "on", "action": "set", "value": True}
OFF = {"device": "relay-1", "capability": "on", "action": "set", "value": False}
T0 = timezone.now()


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    relay("relay-1")
    Device.objects.update(status="provisioned")


def report(at: float, temperature: float) -> None:
    ts = T0 + timedelta(seconds=at)
    reports = [state.StateReport("thermo-1", {"temperature": temperature}, ts)]
    state.apply_reports(reports, now=ts)
    evaluator.on_state(reports)


def save(mode: str = "single", then: list[dict[str, Any]] | None = None) -> int:
    when = {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}
    return rules.create(ALICE, {"name": "pulse", "mode": mode, "when": when, "then": then or [ON, {"delay_s": 30}, OFF]}).pk


def sent() -> list[Any]:
    return list(Command.objects.order_by("created_at").values_list("value", flat=True))


def outcomes() -> list[str]:
    return list(RuleRun.objects.order_by("started_at", "pk").values_list("outcome", flat=True))


def test_a_delay_waits_and_beat_goes_on_at_its_due_time_once(fleet: None) -> None:
    save()
    report(0, 31)
    run = RuleRun.objects.get()
    assert run.outcome == "running" and run.reason == "waiting 30 s at then[1]" and run.resume_at == T0 + timedelta(seconds=30)
    assert sent() == [True]
    assert runs.resume_due(T0 + timedelta(seconds=29)) == 0
    assert runs.resume_due(T0 + timedelta(seconds=31)) == 1
    assert runs.resume_due(T0 + timedelta(seconds=32)) == 0, "advanced once: nothing left to resume"
    run.refresh_from_db()
    assert run.outcome == "fired" and run.reason == "2 of 2 commands sent" and run.finished_at == T0 + timedelta(seconds=30)
    assert sent() == [True, False]
    assert run.actions_text == "relay-1 pending, delay 30 s, relay-1 pending"


def test_single_mode_skips_a_firing_while_a_run_waits(fleet: None) -> None:
    save("single")
    report(0, 31)
    report(5, 25)
    report(6, 32)
    assert outcomes() == ["running", "skipped"]
    assert RuleRun.objects.get(outcome="skipped").reason == "single mode: a run of this rule is still in progress"
    assert sent() == [True]


def test_restart_mode_cancels_the_waiting_run_and_starts_again(fleet: None) -> None:
    save("restart")
    report(0, 31)
    report(5, 25)
    report(6, 32)
    assert outcomes() == ["cancelled", "running"]
    runs.resume_due(T0 + timedelta(seconds=31))
    assert outcomes() == ["cancelled", "running"], "the cancelled run does not go on"
    runs.resume_due(T0 + timedelta(seconds=37))
    assert outcomes() == ["cancelled", "fired"] and sent() == [True, True, False]


def test_queued_mode_runs_the_next_firing_when_the_first_is_done(fleet: None) -> None:
    save("queued")
    report(0, 31)
    report(5, 25)
    report(6, 32)
    assert outcomes() == ["running", "queued"] and sent() == [True]
    runs.resume_due(T0 + timedelta(seconds=31))  # the first finishes; the queued one starts at once
    assert outcomes() == ["fired", "running"] and sent() == [True, False, True]
    assert runs.resume_due(T0 + timedelta(seconds=61)) == 1
    assert outcomes() == ["fired", "fired"] and sent() == [True, False, True, False]


def test_parallel_mode_runs_overlap(fleet: None) -> None:
    save("parallel")
    report(0, 31)
    report(5, 25)
    report(6, 32)
    assert outcomes() == ["running", "running"] and sent() == [True, True]
    assert runs.resume_due(T0 + timedelta(seconds=40)) == 2
    assert outcomes() == ["fired", "fired"]


def test_a_changed_rule_cancels_its_runs_in_flight(fleet: None) -> None:
    rule_id = save()
    report(0, 31)
    rules.change(ALICE, rule_id, {"cooldown_s": 5})
    run = RuleRun.objects.get()
    assert run.outcome == "cancelled" and run.reason == "the rule was changed"
    assert runs.resume_due(T0 + timedelta(seconds=31)) == 0 and sent() == [True]


def test_old_runs_are_pruned_but_a_rules_latest_and_runs_in_flight_stay(fleet: None, settings: Any) -> None:
    settings.AUTOMATION_RUN_DAYS = 7
    save("parallel", then=[ON])
    for day in range(10):
        report(day * 86400, 25)
        report(day * 86400 + 1, 31)
    assert RuleRun.objects.count() == 10
    now = T0 + timedelta(days=20)
    assert runs.prune(now) == 9
    assert list(RuleRun.objects.values_list("started_at", flat=True)) == [T0 + timedelta(days=9, seconds=1)]
