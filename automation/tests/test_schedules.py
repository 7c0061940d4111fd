"""Schedule conditions through django-celery-beat: saving a rule with a `schedule` writes its
beat entry (a crontab in the hub's time zone) in the same transaction, disabling or deleting
the rule removes it, an expression beat's parser refuses is refused at save with its path,
and the task beat runs at each tick evaluates the rule with the schedule holding."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from automation import schedules, tasks
from automation.models import Rule, RuleRun
from devices import state
from devices.models import Command, Device
from tests.factories import relay, thermostat

pytestmark = pytest.mark.django_db

URL = "/api/v1/rules/"
WEEKDAY_MORNINGS = {
    "name": "warm up on weekday mornings",
    "when": {"all": [{"schedule": "30 6 * * 1-5"}, {"device": "thermo-1", "capability": "temperature", "op": "lt", "value": 18}]},
    "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}],
}


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    relay("relay-1")
    Device.objects.update(status="provisioned")


def test_a_scheduled_rule_gets_its_beat_entry_and_loses_it_with_the_rule(fleet: None, alice_api: APIClient, settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    created = alice_api.post(URL, WEEKDAY_MORNINGS, format="json")
    assert created.status_code == 201, created.json()
    rule_id = created.json()["id"]
    entry = PeriodicTask.objects.get(task=schedules.TASK)
    assert entry.name == f"automation rule {rule_id}: 30 6 * * 1-5" and json.loads(entry.args) == [rule_id]
    cron = entry.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == ("30", "6", "*", "*", "1-5")
    assert str(cron.timezone) == "Europe/Berlin"
    assert alice_api.patch(f"{URL}{rule_id}/", {"enabled": False}, format="json").status_code == 200
    assert schedules.entries(rule_id) == []
    assert alice_api.patch(f"{URL}{rule_id}/", {"enabled": True, "when": {"schedule": "*/15 * * * *"}}, format="json").status_code == 200
    assert schedules.entries(rule_id) == ["*/15 * * * *"]
    assert alice_api.delete(f"{URL}{rule_id}/").status_code == 204
    assert not PeriodicTask.objects.filter(task=schedules.TASK).exists()


@pytest.mark.parametrize(
    ("cron", "reason"),
    [("61 * * * *", "61"), ("* 24 * * *", "24"), ("* * * 13 *", "13"), ("* * 0 * *", "0")],
)
def test_a_cron_expression_beat_would_refuse_is_refused_at_save(fleet: None, alice_api: APIClient, cron: str, reason: str) -> None:
    answer = alice_api.post(URL, {**WEEKDAY_MORNINGS, "when": {"all": [{"schedule": cron}]}}, format="json")
    assert answer.status_code == 400
    body = answer.json()
    assert body["field"] == "when.all[0].schedule" and reason in body["reason"], body
    assert not Rule.objects.exists() and not PeriodicTask.objects.filter(task=schedules.TASK).exists()


def test_each_tick_evaluates_the_rule_with_its_schedule_holding(fleet: None, alice_api: APIClient) -> None:
    rule_id = alice_api.post(URL, WEEKDAY_MORNINGS, format="json").json()["id"]
    state.apply_reports([state.StateReport("thermo-1", {"temperature": 16.0}, state.timezone.now())])
    assert not RuleRun.objects.exists(), "a report alone is not a tick"
    assert tasks.schedule_tick(rule_id) is True
    assert tasks.schedule_tick(rule_id) is True, "every tick is an edge of its own"
    assert list(RuleRun.objects.values_list("outcome", flat=True)) == ["fired", "fired"]
    assert Command.objects.filter(device__node_id="relay-1", requested_by=f"rule:{rule_id}").count() == 2
    state.apply_reports([state.StateReport("thermo-1", {"temperature": 21.0}, state.timezone.now())])
    assert tasks.schedule_tick(rule_id) is False, "warm enough: the tick finds the other condition false"
