"""The rule engine: pure, deterministic, no Django (ARCHITECTURE §6 "Automation", §9.2).

Live evaluation and dry-run call the same `evaluate()` with the same inputs, so a dry-run over
recorded telemetry shows exactly what the live rule would have done on it.

- `parse_rule(document)` checks a rule document's shape and returns a `Rule`; a refusal is
  a `RuleError` naming the field path (`when.all[0].value`) and the reason. What only the
  fleet knows (does the device exist, is the value in range) is `automation.validation`.
- `evaluate(rule, state, values, previous, now, minute_of_day, ...)` → `Evaluation`: the
  new `RuleState`, whether the rule fires now and on what, when it must look again without
  new state (a `for` duration running out), and why it did not fire.
- `admit(mode, running, queued)`: what a firing does given the runs in flight.

Semantics. A condition leaf is true or false on the latest values; with `hysteresis` a true
threshold stays true until the value leaves the threshold by that margin (no chatter). A
leaf with `for_s` is *satisfied* once it has been true for that long. The rule fires when its
tree becomes satisfied (edge-triggered: not again while it stays satisfied), unless a
cooldown runs; a firing refused by the cooldown is used up, so a condition that stays true
fires once per true period and at most once per cooldown. `changed` and `changed_to` are
events: true in the evaluation whose values changed, each one an edge of its own (two changes
in a row fire twice, cooldown permitting). A `schedule` condition is true in an
evaluation triggered by its tick; a `time` window is checked against the local minute of
the day and may cross midnight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

OPS = ("eq", "ne", "gt", "ge", "lt", "le", "between", "changed", "changed_to")
ORDERING = ("gt", "ge", "lt", "le", "between")
EVENTS = ("changed", "changed_to")
MODES = ("single", "restart", "queued", "parallel")
MAX_QUEUED = 10
MAX_FOR_S = 7 * 24 * 3600
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_CRON_FIELD = re.compile(r"^[\d*/,\-]+$")

Values = Mapping[tuple[str, str], Any]  # (node_id, capability) -> value


class RuleError(Exception):
    """A rule document's shape is wrong: `field` is the path, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# --- the parsed rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    path: str
    capability: str
    op: str
    value: Any = None
    device: str = ""
    group: str = ""
    members: str = "any"  # for a group: any member, or all members
    for_s: float = 0.0
    hysteresis: float = 0.0


@dataclass(frozen=True)
class Schedule:
    path: str
    cron: str


@dataclass(frozen=True)
class TimeWindow:
    path: str
    after: int | None  # minutes of the day
    before: int | None


@dataclass(frozen=True)
class Tree:
    path: str
    kind: str  # all | any
    children: tuple[Node, ...]


Node = Leaf | Schedule | TimeWindow | Tree


@dataclass(frozen=True)
class Rule:
    name: str
    when: Node
    then: tuple[dict[str, Any], ...]
    enabled: bool = True
    mode: str = "single"
    cooldown_s: float = 0.0

    def leaves(self) -> tuple[Leaf, ...]:
        return self._leaves

    def schedules(self) -> tuple[Schedule, ...]:
        return self._schedules

    @cached_property
    def _leaves(self) -> tuple[Leaf, ...]:
        # Walked once per parsed rule, not once per evaluation (the engine's hot path).
        return tuple(n for n in _walk(self.when) if isinstance(n, Leaf))

    @cached_property
    def _schedules(self) -> tuple[Schedule, ...]:
        return tuple(n for n in _walk(self.when) if isinstance(n, Schedule))


def _walk(node: Node) -> list[Node]:
    if isinstance(node, Tree):
        return [node, *(n for child in node.children for n in _walk(child))]
    return [node]


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _duration(doc: Mapping[str, Any], key: str, path: str, limit: float = MAX_FOR_S) -> float:
    value = doc.get(key, 0)
    if not _number(value) or value < 0:
        raise RuleError(_at(path, key), f"{key} must be a number of seconds >= 0, got {value!r}")
    if value > limit:
        raise RuleError(_at(path, key), f"{key} must be at most {limit:g} s, got {value!r}")
    return float(value)


def _name(doc: Mapping[str, Any], key: str, path: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 100 or "\x00" in value:
        raise RuleError(_at(path, key), f"{key} must be a non-empty string of at most 100 characters, got {value!r}")
    return value


def parse_rule(document: Any) -> Rule:
    if not isinstance(document, Mapping):
        raise RuleError("", f"a rule is a JSON object, got {type(document).__name__}")
    known = {"name", "enabled", "mode", "cooldown_s", "when", "then", "description"}
    for key in document:
        if key not in known:
            raise RuleError(str(key), f"unknown field; a rule has {', '.join(sorted(known))}")
    name = _name(document, "name", "")
    enabled = document.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled", f"enabled must be true or false, got {enabled!r}")
    mode = document.get("mode", "single")
    if mode not in MODES:
        raise RuleError("mode", f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    cooldown = _duration(document, "cooldown_s", "", limit=30 * 24 * 3600) if "cooldown_s" in document else 0.0
    if "when" not in document:
        raise RuleError("when", "a rule needs a condition ('when')")
    when = _parse_node(document["when"], "when")
    then = document.get("then")
    if not isinstance(then, list) or not then:
        raise RuleError("then", f"a rule needs a non-empty list of actions ('then'), got {then!r}")
    actions = tuple(_parse_action(action, f"then[{i}]") for i, action in enumerate(then))
    return Rule(name=name, when=when, then=actions, enabled=enabled, mode=mode, cooldown_s=cooldown)


def _parse_node(doc: Any, path: str) -> Node:
    if not isinstance(doc, Mapping):
        raise RuleError(path, f"a condition is a JSON object, got {doc!r}")
    for kind in ("all", "any"):
        if kind in doc:
            if len(doc) != 1:
                raise RuleError(path, f"'{kind}' stands alone in its object; found also {', '.join(sorted(k for k in doc if k != kind))}")
            children = doc[kind]
            if not isinstance(children, list) or not children:
                raise RuleError(f"{path}.{kind}", f"'{kind}' takes a non-empty list of conditions, got {children!r}")
            return Tree(path, kind, tuple(_parse_node(child, f"{path}.{kind}[{i}]") for i, child in enumerate(children)))
    if "schedule" in doc:
        cron = doc["schedule"]
        fields = cron.split() if isinstance(cron, str) else []
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise RuleError(f"{path}.schedule", f"a schedule is a cron expression of 5 fields (minute hour day month weekday), got {cron!r}")
        return Schedule(path, " ".join(fields))
    if "time" in doc:
        window = doc["time"]
        if not isinstance(window, Mapping) or not window or set(window) - {"after", "before"}:
            raise RuleError(f"{path}.time", f"a time window is {{'after': 'HH:MM', 'before': 'HH:MM'}} (either may be left out), got {window!r}")
        return TimeWindow(path, _minutes(window, "after", f"{path}.time"), _minutes(window, "before", f"{path}.time"))
    return _parse_leaf(doc, path)


def _minutes(window: Mapping[str, Any], key: str, path: str) -> int | None:
    if key not in window:
        return None
    match = _TIME.match(window[key]) if isinstance(window[key], str) else None
    if match is None:
        raise RuleError(f"{path}.{key}", f"a time of day is 'HH:MM' (00:00 to 23:59), got {window[key]!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def _parse_leaf(doc: Mapping[str, Any], path: str) -> Leaf:
    known = {"device", "group", "members", "capability", "op", "value", "for_s", "hysteresis"}
    for key in doc:
        if key not in known:
            raise RuleError(f"{path}.{key}", f"unknown field in a condition; expected {', '.join(sorted(known))}, or all/any/schedule/time")
    if ("device" in doc) == ("group" in doc):
        raise RuleError(path, "a condition names either a device or a group")
    device = _name(doc, "device", path) if "device" in doc else ""
    group = _name(doc, "group", path) if "group" in doc else ""
    members = doc.get("members", "any")
    if members not in ("any", "all") or (members != "any" and not group):
        raise RuleError(f"{path}.members", f"members is 'any' or 'all', for a group condition only; got {members!r}")
    capability = _name(doc, "capability", path)
    op = doc.get("op")
    if op not in OPS:
        raise RuleError(f"{path}.op", f"unknown operator {op!r}; expected one of {', '.join(OPS)}")
    value = doc.get("value")
    if op == "changed":
        if "value" in doc:
            raise RuleError(f"{path}.value", "'changed' takes no value (it is true whenever the value changes)")
    elif "value" not in doc:
        raise RuleError(f"{path}.value", f"'{op}' needs a value")
    if op in ("gt", "ge", "lt", "le") and not _number(value):
        raise RuleError(f"{path}.value", f"'{op}' compares with a number, got {value!r}")
    if op == "between":
        if not isinstance(value, list) or len(value) != 2 or not all(_number(v) for v in value):
            raise RuleError(f"{path}.value", f"'between' takes [low, high], two numbers, got {value!r}")
        if value[0] > value[1]:
            raise RuleError(f"{path}.value", f"'between' [{value[0]}, {value[1]}] can never hold: low is above high")
    if op in ("eq", "ne", "changed_to") and isinstance(value, list | dict):
        raise RuleError(f"{path}.value", f"'{op}' compares with a single value, got {value!r}")
    for_s = _duration(doc, "for_s", path)
    if for_s and op in EVENTS:
        raise RuleError(f"{path}.for_s", f"'{op}' is an event, true for one evaluation: it cannot last {for_s:g} s")
    hysteresis = _duration(doc, "hysteresis", path, limit=math.inf)
    if hysteresis and op not in ORDERING:
        raise RuleError(f"{path}.hysteresis", f"hysteresis applies to thresholds (gt, ge, lt, le, between), not '{op}'")
    return Leaf(path, capability, op, value, device, group, members, for_s, hysteresis)


def _parse_action(doc: Any, path: str) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise RuleError(path, f"an action is a JSON object, got {doc!r}")
    if "scene" in doc:
        _only(doc, {"scene"}, path)
        _name(doc, "scene", path)
    elif "delay_s" in doc:
        _only(doc, {"delay_s"}, path)
        _duration(doc, "delay_s", path, limit=3600)
    elif "webhook" in doc:
        _only(doc, {"webhook", "body"}, path)
        if not isinstance(doc["webhook"], str) or not doc["webhook"]:
            raise RuleError(f"{path}.webhook", f"a webhook is a URL, got {doc['webhook']!r}")
        if "body" in doc and not isinstance(doc["body"], Mapping):
            raise RuleError(f"{path}.body", f"a webhook body is a JSON object, got {doc['body']!r}")
    elif "device" in doc or "group" in doc:
        _only(doc, {"device", "group", "capability", "action", "value"}, path)
        if "device" in doc and "group" in doc:
            raise RuleError(path, "an action names either a device or a group")
        _name(doc, "device" if "device" in doc else "group", path)
        _name(doc, "capability", path)
        if not isinstance(doc.get("action"), str):
            raise RuleError(f"{path}.action", f"a command action is set, toggle, execute or get; got {doc.get('action')!r}")
    else:
        raise RuleError(path, "an action is a device or group command, a scene, a delay_s or a webhook")
    return dict(doc)


def _only(doc: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            raise RuleError(f"{path}.{key}", f"unknown field here; this action takes {', '.join(sorted(allowed))}")


# --- what the engine remembers ------------------------------------------------------------------


@dataclass(frozen=True)
class LeafState:
    latched: bool = False  # true on the last evaluation (hysteresis holds it)
    since: float | None = None  # when it became true


@dataclass(frozen=True)
class RuleState:
    leaves: Mapping[str, LeafState] = field(default_factory=dict)
    armed: bool = True  # the tree was unsatisfied since the last firing
    last_fired_at: float | None = None
    cooldown_until: float | None = None
    running: int = 0
    queued: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaves": {path: {"latched": s.latched, "since": s.since} for path, s in sorted(self.leaves.items())},
            "armed": self.armed,
            "last_fired_at": self.last_fired_at,
            "cooldown_until": self.cooldown_until,
            "running": self.running,
            "queued": self.queued,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RuleState:
        if not data:
            return cls()
        leaves = {str(p): LeafState(bool(s.get("latched")), s.get("since")) for p, s in (data.get("leaves") or {}).items()}
        return cls(
            leaves=leaves,
            armed=bool(data.get("armed", True)),
            last_fired_at=data.get("last_fired_at"),
            cooldown_until=data.get("cooldown_until"),
            running=int(data.get("running", 0)),
            queued=int(data.get("queued", 0)),
        )


@dataclass(frozen=True)
class Evaluation:
    state: RuleState
    fires: bool
    trigger: dict[str, Any]  # {device, capability, value} of the leaf that completed the condition
    recheck_at: float | None
    reason: str


# --- evaluation --------------------------------------------------------------------------------


def _holds(op: str, value: Any, target: Any, latched: bool, hysteresis: float) -> bool:
    """One value against one leaf's threshold; a latched threshold is held by `hysteresis`."""
    if op in ("eq", "changed_to"):
        return bool(value == target and type(value) is type(target)) or (_number(value) and _number(target) and value == target)
    if op == "ne":
        return not _holds("eq", value, target, False, 0.0)
    if not _number(value):
        return False
    margin = hysteresis if latched else 0.0
    if op == "gt":
        return bool(value > target - margin)
    if op == "ge":
        return bool(value >= target - margin)
    if op == "lt":
        return bool(value < target + margin)
    if op == "le":
        return bool(value <= target + margin)
    if op == "between":
        return bool(target[0] - margin <= value <= target[1] + margin)
    return False


def _targets(leaf: Leaf, members: Mapping[str, Sequence[str]]) -> list[str]:
    return [leaf.device] if leaf.device else list(members.get(leaf.group, ()))


def _leaf_true(leaf: Leaf, values: Values, previous: Values, members: Mapping[str, Sequence[str]], latched: bool) -> tuple[bool, str, Any]:
    """(true?, the device that made it so, its value)."""
    results: list[tuple[bool, str, Any]] = []
    for node in _targets(leaf, members):
        key = (node, leaf.capability)
        if key not in values:
            results.append((False, node, None))
            continue
        value = values[key]
        if leaf.op in EVENTS:
            changed = key in previous and previous[key] != value
            truth = changed and (leaf.op == "changed" or _holds("eq", value, leaf.value, False, 0.0))
        else:
            truth = _holds(leaf.op, value, leaf.value, latched, leaf.hysteresis)
        results.append((truth, node, value))
    if not results:
        return False, "", None
    hits = [r for r in results if r[0]]
    if leaf.members == "all":
        return (len(hits) == len(results), hits[0][1] if hits else "", hits[0][2] if hits else None)
    return (bool(hits), hits[0][1] if hits else "", hits[0][2] if hits else None)


def _in_window(window: TimeWindow, minute: int) -> bool:
    after, before = window.after, window.before
    if after is None and before is None:
        return True
    if after is None:
        return before is None or minute < before
    if before is None:
        return minute >= after
    if after <= before:
        return after <= minute < before
    return minute >= after or minute < before  # across midnight


def evaluate(
    rule: Rule,
    state: RuleState,
    values: Values,
    previous: Values,
    now: float,
    minute_of_day: int,
    *,
    members: Mapping[str, Sequence[str]] | None = None,
    schedule_tick: bool = False,
) -> Evaluation:
    """One evaluation of `rule` on the latest `values` (and the `previous` ones, for changed
    ops) at `now` (UTC seconds), `minute_of_day` local. Pure: the same inputs give the same
    result, which is what makes a dry-run equal to the live run."""
    members = members or {}
    leaf_states: dict[str, LeafState] = {}
    satisfied: dict[str, bool] = {}
    recheck: list[float] = []
    pending: list[str] = []
    trigger: dict[str, Any] = {}
    latest_since = -math.inf
    event = False  # an event leaf true now: an edge of its own, whatever `armed` says
    for leaf in rule.leaves():
        before = state.leaves.get(leaf.path, LeafState())
        truth, node, value = _leaf_true(leaf, values, previous, members, before.latched)
        since = (before.since if before.latched and before.since is not None else now) if truth else None
        leaf_states[leaf.path] = LeafState(truth, since)
        done = truth and since is not None and now - since >= leaf.for_s
        satisfied[leaf.path] = done
        event = event or (truth and leaf.op in EVENTS)
        if truth and not done and since is not None:
            recheck.append(since + leaf.for_s)
            pending.append(f"{leaf.device or leaf.group}.{leaf.capability} true for {now - since:.1f} s of {leaf.for_s:g} s")
        if done and since is not None and since + leaf.for_s >= latest_since:
            latest_since = since + leaf.for_s
            trigger = {"device": node, "capability": leaf.capability, "value": value}

    def holds(node: Node) -> bool:
        if isinstance(node, Leaf):
            return satisfied[node.path]
        if isinstance(node, Schedule):
            return schedule_tick
        if isinstance(node, TimeWindow):
            return _in_window(node, minute_of_day)
        results = [holds(child) for child in node.children]
        return all(results) if node.kind == "all" else any(results)

    now_satisfied = holds(rule.when)
    # A tick is an event too: each one is an edge of its own (a rule on a schedule alone
    # is never evaluated between two ticks to be re-armed).
    event = event or (schedule_tick and bool(rule.schedules()))
    recheck_at = min(recheck) if recheck else None

    def remembered(armed: bool, last_fired_at: float | None, cooldown_until: float | None) -> RuleState:
        # Built directly: dataclasses.replace() is a third of an evaluation's cost.
        return RuleState(leaf_states, armed, last_fired_at, cooldown_until, state.running, state.queued)

    if not now_satisfied:
        reason = "; ".join(pending) if pending else "conditions not met"
        return Evaluation(remembered(True, state.last_fired_at, state.cooldown_until), False, {}, recheck_at, reason)
    if not state.armed and not event:
        return Evaluation(remembered(state.armed, state.last_fired_at, state.cooldown_until), False, {}, recheck_at, "already fired while the conditions hold")
    if not rule.enabled:
        return Evaluation(remembered(False, state.last_fired_at, state.cooldown_until), False, trigger, recheck_at, "the rule is disabled")
    if state.cooldown_until is not None and now < state.cooldown_until:
        reason = f"in cooldown for {state.cooldown_until - now:.1f} s more"
        return Evaluation(remembered(False, state.last_fired_at, state.cooldown_until), False, trigger, recheck_at, reason)
    fired = remembered(False, now, now + rule.cooldown_s if rule.cooldown_s else None)
    return Evaluation(fired, True, trigger, recheck_at, "conditions met")


# --- modes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    decision: str  # start | skip | restart | queue
    reason: str


def admit(mode: str, running: int, queued: int) -> Admission:
    """What a firing does, given the rule's runs in flight (`running`) and waiting (`queued`)."""
    if running <= 0 or mode == "parallel":
        return Admission("start", "")
    if mode == "single":
        return Admission("skip", "single mode: a run of this rule is still in progress")
    if mode == "restart":
        return Admission("restart", "restart mode: the run in progress is cancelled")
    if queued >= MAX_QUEUED:
        return Admission("skip", f"queued mode: {queued} runs wait already (at most {MAX_QUEUED})")
    return Admission("queue", f"queued mode: waits for the run in progress ({queued + 1} in the queue)")
