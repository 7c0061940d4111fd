"""Dry-run: a rule (saved or not) replayed over recorded telemetry through the same engine,
listing each firing with its moment, what completed the conditions and the commands it
would have sent. Nothing is sent or written.

The replay does what the live evaluator does (`automation.evaluator`), in the same order:
the samples of the rule's inputs in time order, one evaluation per device report (the
samples of one device at one time); before each, any `for` timer that ran out is evaluated
at its due time on the values it was running on; `previous` is what the last evaluation saw.
It starts from a clean state (no cooldown or timers carried over) and uses today's group
membership. So on the same data a dry-run lists exactly the live rule's firings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from django.conf import settings

from automation import engine, evaluator, rules
from automation.validation import RuleInvalid
from devices.models import Capability, Group, TelemetrySample, ValueType


class DryRunRefused(RuleInvalid):
    """A range a dry-run will not replay (`from`, `to`): answered like a refused rule."""


def _typed(value_type: str, number: float | None, text: str) -> Any:
    """A stored sample back as the device reported it (booleans are stored as 0/1)."""
    if number is None:
        return text
    if value_type == ValueType.BOOL:
        return number != 0
    if value_type == ValueType.INT and number.is_integer():
        return int(number)
    return number


def _samples(parsed: engine.Rule, members: dict[str, list[str]], start: datetime, end: datetime) -> Iterator[tuple[datetime, str, dict[str, Any]]]:
    """(ts, node_id, {capability: value}) in time order, one per device report."""
    wanted = evaluator.inputs_of(parsed, members)
    caps = {cap for names in wanted.values() for cap in names}
    types = dict(
        ((node, name), value_type)
        for node, name, value_type in Capability.objects.filter(device__node_id__in=list(wanted), name__in=caps).values_list(
            "device__node_id", "name", "value_type"
        )
    )
    rows = (
        TelemetrySample.objects.filter(device__node_id__in=list(wanted), capability__in=caps, ts__gte=start, ts__lte=end)
        .order_by("ts", "device__node_id")
        .values_list("ts", "device__node_id", "capability", "value", "text")
    )
    count = rows.count()
    if count > settings.AUTOMATION_DRY_RUN_MAX_SAMPLES:
        raise DryRunRefused("from", f"{count:,} samples in that range, more than {settings.AUTOMATION_DRY_RUN_MAX_SAMPLES:,}: choose a shorter one")
    for (ts, node_id), group in groupby(rows.iterator(chunk_size=5000), key=lambda r: (r[0], r[1])):
        values = {cap: _typed(types.get((node_id, cap), ""), number, text) for _, _, cap, number, text in group if cap in wanted[node_id]}
        if values:
            yield ts, node_id, values


def _would_send(parsed: engine.Rule) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    for action in parsed.then:
        if "device" in action:
            sent.append({k: action.get(k) for k in ("device", "capability", "action", "value") if k in action})
        elif "group" in action:
            nodes = Group.objects.filter(name=action["group"]).values_list("members__node_id", flat=True)
            sent.extend({"device": node, **{k: action[k] for k in ("capability", "action", "value") if k in action}} for node in sorted(n for n in nodes if n))
    return sent


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def dry_run(document: Any, start: Any, end: Any) -> dict[str, Any]:
    """{"firings": [{at, trigger, actions}]} of `document` over [start, end]."""
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise DryRunRefused("from", "from and to are ISO 8601 times")
    if end <= start:
        raise DryRunRefused("to", f"to ({end.isoformat()}) must be after from ({start.isoformat()})")
    if end - start > timedelta(days=settings.AUTOMATION_DRY_RUN_MAX_DAYS):
        raise DryRunRefused("to", f"a dry-run covers at most {settings.AUTOMATION_DRY_RUN_MAX_DAYS} days")
    parsed = rules.validate(document)
    parsed = engine.Rule(parsed.name, parsed.when, parsed.then, True, parsed.mode, parsed.cooldown_s)  # a disabled rule is dry-run as if enabled
    members = evaluator.members_of(parsed)
    actions = _would_send(parsed)
    state = engine.RuleState()
    values: dict[tuple[str, str], Any] = {}
    seen: dict[tuple[str, str], Any] = {}
    recheck_at: float | None = None
    firings: list[dict[str, Any]] = []

    def run(moment: float, current: dict[tuple[str, str], Any], previous: dict[tuple[str, str], Any]) -> None:
        nonlocal state, recheck_at
        result = engine.evaluate(parsed, state, current, previous, moment, evaluator.minute_of_day(datetime.fromtimestamp(moment, tz=UTC)), members=members)
        state, recheck_at = result.state, result.recheck_at
        if result.fires:
            firings.append({"at": _iso(moment), "trigger": result.trigger, "actions": actions})

    for ts, node_id, reported in _samples(parsed, members, start, end):
        moment = ts.timestamp()
        if recheck_at is not None and recheck_at < moment:
            run(recheck_at, dict(seen), dict(seen))
        values.update({(node_id, cap): value for cap, value in reported.items()})
        run(moment, dict(values), seen)
        seen = dict(values)
    if recheck_at is not None and recheck_at <= end.timestamp():
        run(recheck_at, dict(seen), dict(seen))
    return {"firings": firings}
