"""Schedule conditions (`{"schedule": "0 7 * * 1-5"}`), ticked by django-celery-beat.

Each enabled rule with schedule conditions has one beat entry per distinct cron expression
(`PeriodicTask` "automation rule <id>: <cron>", a `CrontabSchedule` in the hub's
MESHHUB_TIME_ZONE), written with the rule in the same transaction and removed with it; the
beat process (DatabaseScheduler) picks changes up without a restart. A tick runs
`automation.tasks.schedule_tick(rule_id)`: one evaluation in which the schedule condition
holds (`automation.engine`), audited and recorded like any other run.
"""

from __future__ import annotations

import json

from celery.schedules import crontab
from django.conf import settings
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from automation import engine
from automation.validation import RuleInvalid

TASK = "automation.tasks.schedule_tick"


def _fields(cron: str) -> dict[str, str]:
    minute, hour, day_of_month, month_of_year, day_of_week = cron.split()
    return {"minute": minute, "hour": hour, "day_of_month": day_of_month, "month_of_year": month_of_year, "day_of_week": day_of_week}


def check(parsed: engine.Rule) -> None:
    """RuleInvalid for a cron expression beat would refuse (the engine checked its shape;
    the ranges, `61 * * * *` or `* * 31 2 *`'s day, are celery's parser's to judge)."""
    for schedule in parsed.schedules():
        try:
            crontab(**_fields(schedule.cron))
        except (ValueError, IndexError) as error:
            raise RuleInvalid(f"{schedule.path}.schedule", f"not a valid cron expression: {error}") from None


def _prefix(rule_id: int) -> str:
    return f"automation rule {rule_id}: "


def sync(rule_id: int, enabled: bool, parsed: engine.Rule) -> None:
    """The rule's beat entries, one per distinct cron expression (none when disabled)."""
    forget(rule_id)
    if not enabled:
        return
    for cron in sorted({s.cron for s in parsed.schedules()}):
        schedule, _ = CrontabSchedule.objects.get_or_create(**_fields(cron), timezone=settings.TIME_ZONE)
        PeriodicTask.objects.create(name=f"{_prefix(rule_id)}{cron}", task=TASK, crontab=schedule, args=json.dumps([rule_id]))


def forget(rule_id: int) -> None:
    PeriodicTask.objects.filter(name__startswith=_prefix(rule_id), task=TASK).delete()


def entries(rule_id: int) -> list[str]:
    """The cron expressions beat runs for this rule."""
    return sorted(
        name.removeprefix(_prefix(rule_id)) for name in PeriodicTask.objects.filter(name__startswith=_prefix(rule_id), task=TASK).values_list("name", flat=True)
    )
