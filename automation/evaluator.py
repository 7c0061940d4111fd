"""Rules evaluated live: after each committed state batch (devices and PLCs alike, through
`devices.events.on_state`, on the subscribers' thread, off the gateway's ack path), and when a
`for` duration runs out (`recheck_due`, beat every second).

Only the rules that read one of the batch's (device, capability) pairs, directly or through
a group, are evaluated (`InputIndex`, in memory). A batch is one transaction: it locks the
rules it evaluates (in id order), reads their inputs once, runs the pure engine report by
report in time order (each rule seeing the batch's values up to that report, as a dry-run
replays them), and writes the engines' new states together, with the runs and the commands
they sent (`send_command()`, with the rule as actor). A firing and its commands commit
together or not at all, so a crash or restart neither loses a committed firing nor doubles
it, and a `for` timer that was running survives a restart. One failing firing is rolled back
to its savepoint (its rule keeps its previous state) without stopping the others.

Actions run here: device and group commands, and scenes (one command per member). A refused command (an interlock: the device
is mid-update or in safe mode; or a value the device would no longer take) is recorded in
the run with its reason, audited by `send_command()`, and does not stop the others.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from audit.models import ActorType
from audit.services import Actor
from automation import engine, runs
from automation.models import Rule, RuleInput, RuleRun, RuleState, RunOutcome
from devices.models import Command, Device, Group
from hub import outages
from hub.scopes import Scope

if TYPE_CHECKING:
    from devices.state import StateReport

logger = logging.getLogger("meshhub.automation")


def rule_actor(rule: Rule) -> Actor:
    """A rule acts with the command scope only: it can send what its conditions ask, nothing else."""
    return Actor(ActorType.RULE, str(rule.pk), scopes=frozenset({Scope.COMMAND}))


def on_state(reports: list[StateReport]) -> None:
    """devices.events state subscriber: evaluate the rules that read what changed, at each
    report's own time, in time order (as a dry-run replays the stored samples). A database
    outage skips the batch with one line in the log (the next report evaluates again; `for`
    timers are re-checked by beat), never a traceback per report."""
    try:
        evaluate_batch(reports)
    except DatabaseError as exc:
        if outages.unavailable(exc) is None:
            raise
        outages.report_failure(exc, "rule evaluation")


class InputIndex:
    """Which enabled rules read which (device, capability), directly or through a group: kept
    in memory and reloaded at most every REFRESH_S (a rule saved in another process takes
    effect within that) or at once when this process saved one. A state batch that no rule
    reads costs no query, whatever the fleet's size."""

    REFRESH_S = 1.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded_at = -math.inf
        self.generation = 0
        self.loaded_generation = -1
        self.direct: dict[tuple[str, str], set[int]] = {}
        self.by_group: dict[tuple[str, str], set[int]] = {}
        self.groups_of: dict[str, set[str]] = {}

    def invalidate(self) -> None:
        with self.lock:
            self.generation += 1

    def _load(self) -> None:
        direct: dict[tuple[str, str], set[int]] = {}
        by_group: dict[tuple[str, str], set[int]] = {}
        for rule_id, node_id, group, capability in RuleInput.objects.filter(rule__enabled=True).values_list("rule_id", "node_id", "group", "capability"):
            if node_id:
                direct.setdefault((node_id, capability), set()).add(rule_id)
            else:
                by_group.setdefault((group, capability), set()).add(rule_id)
        groups_of: dict[str, set[str]] = {}
        names = {g for g, _ in by_group}
        if names:
            for name, node_id in Group.objects.filter(name__in=names).values_list("name", "members__node_id"):
                if node_id:
                    groups_of.setdefault(node_id, set()).add(name)
        self.direct, self.by_group, self.groups_of = direct, by_group, groups_of

    def rules_reading(self, touched: set[tuple[str, str]]) -> list[int]:
        with self.lock:
            now = time.monotonic()
            if now - self.loaded_at > self.REFRESH_S or self.loaded_generation != self.generation:
                generation = self.generation
                self._load()
                self.loaded_at, self.loaded_generation = now, generation
            found: set[int] = set()
            for node_id, capability in touched:
                found |= self.direct.get((node_id, capability), set())
                for group in self.groups_of.get(node_id, ()):
                    found |= self.by_group.get((group, capability), set())
            return sorted(found)


inputs = InputIndex()


def rules_reading(touched: set[tuple[str, str]]) -> list[int]:
    """Enabled rules with an input among `touched`, directly or through a group."""
    return inputs.rules_reading(touched)


_SEP = "\x1f"


def _key(node_id: str, capability: str) -> str:
    return f"{node_id}{_SEP}{capability}"


def _unkey(key: str) -> tuple[str, str]:
    node_id, capability = key.split(_SEP, 1)
    return node_id, capability


def inputs_of(parsed: engine.Rule, members: dict[str, list[str]]) -> dict[str, set[str]]:
    """node_id → the capabilities of it the rule reads (group conditions through `members`)."""
    wanted: dict[str, set[str]] = {}
    for leaf in parsed.leaves():
        for node_id in [leaf.device] if leaf.device else members.get(leaf.group, []):
            wanted.setdefault(node_id, set()).add(leaf.capability)
    return wanted


def members_of(*rules: engine.Rule) -> dict[str, list[str]]:
    """group name → its members' node ids (in node id order), for the groups the rules'
    conditions name: one query for any number of rules (live batches and dry-runs alike)."""
    names = {leaf.group for parsed in rules for leaf in parsed.leaves() if leaf.group}
    members: dict[str, list[str]] = {name: [] for name in names}
    if names:
        for name, node_id in Group.objects.filter(name__in=names).values_list("name", "members__node_id").order_by("name", "members__node_id"):
            if node_id:
                members[name].append(node_id)
    return members


def minute_of_day(moment: datetime) -> int:
    local = timezone.localtime(moment)
    return local.hour * 60 + local.minute


@dataclass
class _Locked:
    """A rule locked for this transaction with what its evaluations need and change."""

    rule: Rule
    parsed: engine.Rule
    stored: RuleState
    state: engine.RuleState
    seen: dict[tuple[str, str], Any]  # what its last evaluation saw
    at: float | None  # its last evaluation's moment: time only moves forward for a rule
    members: dict[str, list[str]]
    wanted: list[tuple[str, str]]  # the (device, capability) pairs it reads
    changed: bool = False


_parsed: dict[int, tuple[datetime, engine.Rule]] = {}  # rule id -> (updated_at, parsed): parsed once per save


def _parse(rule: Rule) -> engine.Rule:
    cached = _parsed.get(rule.pk)
    if cached is not None and cached[0] == rule.updated_at:
        return cached[1]
    parsed = engine.parse_rule(rule.document)
    _parsed[rule.pk] = (rule.updated_at, parsed)
    return parsed


def _lock(rule_ids: Iterable[int]) -> dict[int, _Locked]:
    """The enabled ones of `rule_ids`, locked in id order (no deadlock between batches), with
    their states (created if missing) and their groups' members: a fixed number of queries."""
    ids = sorted(set(rule_ids))
    found = list(Rule.objects.select_for_update().filter(pk__in=ids, enabled=True).order_by("pk"))
    if not found:
        return {}
    stored = {s.rule_id: s for s in RuleState.objects.select_for_update().filter(rule_id__in=[r.pk for r in found]).order_by("rule_id")}
    for rule in found:
        if rule.pk not in stored:
            stored[rule.pk], _ = RuleState.objects.get_or_create(rule=rule)
    parsed = {rule.pk: _parse(rule) for rule in found}
    members_by_group = members_of(*parsed.values())
    locked: dict[int, _Locked] = {}
    for rule in found:
        p, s = parsed[rule.pk], stored[rule.pk]
        members = {leaf.group: members_by_group.get(leaf.group, []) for leaf in p.leaves() if leaf.group}
        wanted = sorted({(node, cap) for node, caps in inputs_of(p, members).items() for cap in caps})
        last = s.state.get("at")
        locked[rule.pk] = _Locked(
            rule,
            p,
            s,
            engine.RuleState.from_dict(s.state),
            {_unkey(k): v for k, v in (s.state.get("seen") or {}).items()},
            last if isinstance(last, int | float) else None,
            members,
            wanted,
        )
    return locked


def _reported(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """The devices' current reported values of `pairs`, in one query."""
    wanted: dict[str, set[str]] = {}
    for node_id, cap in pairs:
        wanted.setdefault(node_id, set()).add(cap)
    values: dict[tuple[str, str], Any] = {}
    for node_id, reported in Device.objects.filter(node_id__in=list(wanted)).values_list("node_id", "reported"):
        for cap in wanted[node_id]:
            if cap in (reported or {}):
                values[(node_id, cap)] = reported[cap]
    return values


def _step(item: _Locked, values: dict[tuple[str, str], Any], now: datetime, schedule_tick: bool = False) -> RuleRun | None:
    """One evaluation of a locked rule at `now`; the run it made, if it fired. A `for` timer
    that ran out before `now` is evaluated first, at its due time and on the values it was
    running on, as a dry-run does: the firing's moment is when the duration ran out,
    whichever of beat or a new report comes first. A firing that fails is rolled back to its
    savepoint and leaves the rule as it was."""
    moment = max(now.timestamp(), item.at) if item.at is not None else now.timestamp()
    run = None
    try:
        state = item.state
        firings: list[tuple[engine.Evaluation, float]] = []
        due = item.stored.recheck_at.timestamp() if item.stored.recheck_at is not None else None
        if due is not None and due < moment:
            timed = engine.evaluate(item.parsed, state, item.seen, item.seen, due, minute_of_day(_at(due)), members=item.members)
            state = timed.state
            firings += [(timed, due)] if timed.fires else []
        result = engine.evaluate(item.parsed, state, values, item.seen, moment, minute_of_day(_at(moment)), members=item.members, schedule_tick=schedule_tick)
        if result.fires and schedule_tick and not result.trigger:
            result = engine.Evaluation(result.state, True, {"schedule": True}, result.recheck_at, result.reason)
        firings += [(result, moment)] if result.fires else []
        if firings:  # a savepoint only where something is written besides the state
            with transaction.atomic():
                for fired, at in firings:
                    run = _fire(item.rule, item.parsed, fired, _at(at))
    except DatabaseError:
        raise
    except Exception:  # one rule's failure never keeps the others from running
        logger.exception("evaluation of rule %s failed", item.rule.pk)
        return None
    item.state, item.seen, item.at = result.state, values, moment
    item.stored.recheck_at = _at(result.recheck_at) if result.recheck_at is not None else None
    item.changed = True
    return run


def _save(items: Iterable[_Locked]) -> None:
    """The evaluated rules' states, in one prepared UPDATE run for each (bulk_update's CASE
    over a JSON column cost more than the evaluations it saved)."""
    field = RuleState._meta.get_field("state")
    rows = []
    stamp = timezone.now()
    for item in items:
        if item.changed:
            item.stored.state = {**item.state.to_dict(), "seen": {_key(n, c): v for (n, c), v in sorted(item.seen.items())}, "at": item.at}
            item.stored.updated_at = stamp
            rows.append((item.stored.state, item.stored.recheck_at, stamp, item.rule.pk))
    if not rows:
        return
    connection = transaction.get_connection()
    ops = connection.ops
    table, quote = RuleState._meta.db_table, ops.quote_name
    sql = f"UPDATE {quote(table)} SET {quote('state')} = %s, {quote('recheck_at')} = %s, {quote('updated_at')} = %s WHERE {quote('rule_id')} = %s"  # noqa: S608  # names from the model, values as parameters
    params = [
        (field.get_db_prep_save(state, connection), ops.adapt_datetimefield_value(recheck), ops.adapt_datetimefield_value(stamp), rule_id)
        for state, recheck, _, rule_id in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def evaluate_batch(reports: list[StateReport]) -> int:
    """Evaluate, in one transaction, the rules that read `reports` (a committed state batch);
    the number of evaluations."""
    plan = []
    for report in sorted(reports, key=lambda r: r.ts):
        rule_ids = rules_reading({(report.node_id, cap) for cap in report.values})
        if rule_ids:
            plan.append((report, rule_ids))
    if not plan:
        return 0
    evaluations = 0
    with transaction.atomic():
        locked = _lock(rule_id for _, rule_ids in plan for rule_id in rule_ids)
        touched = {(report.node_id, cap) for report, _ in plan for cap in report.values}
        stored = _reported({pair for item in locked.values() for pair in item.wanted} - touched)
        applied: dict[tuple[str, str], Any] = {}
        for report, rule_ids in plan:
            applied.update({(report.node_id, cap): value for cap, value in report.values.items()})
            for rule_id in rule_ids:
                item = locked.get(rule_id)
                if item is None:
                    continue  # disabled or deleted since the index was loaded
                values: dict[tuple[str, str], Any] = {}
                for pair in item.wanted:
                    if pair in applied:
                        values[pair] = applied[pair]
                    elif pair in touched:  # reported later in this batch: what the rule saw so far
                        if pair in item.seen:
                            values[pair] = item.seen[pair]
                    elif pair in stored:
                        values[pair] = stored[pair]
                _step(item, values, report.ts)
                evaluations += 1
        _save(locked.values())
    return evaluations


def evaluate_rule(rule_id: int, *, now: datetime | None = None, schedule_tick: bool = False) -> RuleRun | None:
    """One evaluation of one rule at `now` (a timer's due time, a schedule's tick) on the
    devices' current values; the run it made, if it fired."""
    now = now or timezone.now()
    with transaction.atomic():
        item = _lock([rule_id]).get(rule_id)
        if item is None:
            return None
        run = _step(item, _reported(item.wanted), now, schedule_tick)
        _save([item])
        return run


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def chain_of(trigger: dict[str, Any], now: datetime) -> tuple[int, list[str]]:
    """How many rule runs led to this one: the trigger device's value came from a command a
    rule sent shortly before (MESHHUB_AUTOMATION_CHAIN_WINDOW_S), whose run had its own
    depth. (depth, the rule names along the chain, newest first)."""
    node_id = trigger.get("device")
    if not node_id:
        return 0, []
    window = timedelta(seconds=settings.AUTOMATION_CHAIN_WINDOW_S)
    command = (
        Command.objects.filter(
            device__node_id=node_id, requested_by__startswith=f"{ActorType.RULE}:", created_at__gte=now - window, created_at__lte=now + window
        )
        .order_by("-created_at")
        .values_list("requested_by", "created_at")
        .first()
    )
    if command is None:
        return 0, []
    cause = (
        RuleRun.objects.filter(rule_id=command[0].split(":", 1)[1], started_at__lte=command[1] + window).select_related("rule").order_by("-started_at").first()
    )
    if cause is None:
        return 0, []
    return cause.depth + 1, [cause.rule.name, *cause.trigger.get("chain", [])][: settings.AUTOMATION_MAX_CHAIN_DEPTH + 1]


def _fire(rule: Rule, parsed: engine.Rule, result: engine.Evaluation, now: datetime) -> RuleRun:
    depth, chain = chain_of(result.trigger, now)
    trigger = {**result.trigger, **({"chain": chain} if chain else {})}
    if depth > settings.AUTOMATION_MAX_CHAIN_DEPTH:
        # A → B → A: the loop ends here, and the run says where it came from.
        reason = f"stopped at chain depth {depth} (bound {settings.AUTOMATION_MAX_CHAIN_DEPTH}): triggered through {' ← '.join(chain)}"
        run = RuleRun.objects.create(rule=rule, started_at=now, trigger=trigger, outcome=RunOutcome.STOPPED, reason=reason[:500], depth=depth, finished_at=now)
        Rule.objects.filter(pk=rule.pk).update(last_fired_at=now, last_outcome=RunOutcome.STOPPED)
        runs.published(run)
        return run
    return runs.start(rule, parsed, trigger, depth, now)


def recheck_due(now: datetime | None = None) -> int:
    """Beat, every second: rules whose `for` duration has run out without new state, then
    runs whose delay is over (`automation.runs.resume_due`)."""
    now = now or timezone.now()
    due = list(RuleState.objects.filter(recheck_at__lte=now, rule__enabled=True).values_list("rule_id", "recheck_at"))
    for rule_id, recheck_at in due:
        try:
            # At the due time, not beat's: the firing's moment is when the duration ran out.
            evaluate_rule(rule_id, now=(recheck_at or now) + timedelta(microseconds=1))
        except Exception:
            logger.exception("re-check of rule %s failed", rule_id)
    runs.resume_due(now)
    return len(due)
