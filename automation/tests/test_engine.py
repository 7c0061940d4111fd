"""The rule engine alone (pure): shapes refused with their field paths, every operator,
nesting, `for` durations, hysteresis, cooldown, events, time windows, schedules, groups,
modes, the state's round trip; and properties over random inputs (hysteresis never chatters,
cooldown spaces firings, replay from a fresh state gives the same firings: dry-run = live)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automation.engine import RuleError, RuleState, admit, evaluate, parse_rule

NOON = 12 * 60


def rule(when: Any, **extra: Any) -> Any:
    doc = {"name": "r", "when": when, "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}], **extra}
    return parse_rule(doc)


def temp(op: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"device": "thermo-1", "capability": "temperature", "op": op, "value": value, **extra}


class Feed:
    """Values in time order through one rule, as the live evaluator and dry-run do."""

    def __init__(self, parsed: Any) -> None:
        self.rule = parsed
        self.state = RuleState()
        self.values: dict[tuple[str, str], Any] = {}
        self.fired: list[float] = []
        self.last: Any = None

    def at(self, now: float, minute: int = NOON, schedule_tick: bool = False, members: Any = None, **values: Any) -> bool:
        previous = dict(self.values)
        for key, value in values.items():
            node, cap = key.split("__")
            self.values[(node.replace("_", "-"), cap)] = value
        self.last = evaluate(self.rule, self.state, self.values, previous, now, minute, schedule_tick=schedule_tick, members=members)
        self.state = self.last.state
        if self.last.fires:
            self.fired.append(now)
        return bool(self.last.fires)


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"when": temp("gt", 30), "then": []}, "then", "non-empty list of actions"),
        ({"then": [{"scene": "x"}]}, "when", "needs a condition"),
        ({"when": temp("hotter", 30)}, "when.op", "unknown operator 'hotter'"),
        ({"when": {"all": [temp("gt", 30), temp("between", [30, 20])]}}, "when.all[1].value", "low is above high"),
        ({"when": {"all": [temp("gt", "30")]}}, "when.all[0].value", "compares with a number"),
        ({"when": {"any": []}}, "when.any", "non-empty list"),
        ({"when": temp("gt", 30, for_s=-1)}, "when.for_s", ">= 0"),
        ({"when": temp("changed", None, for_s=5) | {"value": None}}, "when.value", "takes no value"),
        ({"when": {"device": "thermo-1", "capability": "temperature", "op": "changed", "for_s": 5}}, "when.for_s", "is an event"),
        ({"when": temp("eq", 30, hysteresis=1)}, "when.hysteresis", "applies to thresholds"),
        ({"when": {"time": {"after": "25:00"}}}, "when.time.after", "HH:MM"),
        ({"when": {"schedule": "every day"}}, "when.schedule", "5 fields"),
        ({"when": {"capability": "temperature", "op": "gt", "value": 1}}, "when", "either a device or a group"),
        ({"when": temp("gt", 30), "mode": "sometimes"}, "mode", "unknown mode"),
        ({"when": temp("gt", 30), "cooldown_s": "1m"}, "cooldown_s", "number of seconds"),
        ({"when": temp("gt", 30), "then": [{"device": "relay-1", "capability": "on"}]}, "then[0].action", "set, toggle, execute or get"),
        ({"when": temp("gt", 30), "then": [{"delay_s": 5, "value": 1}]}, "then[0].value", "takes delay_s"),
        ({"when": temp("gt", 30), "then": [{"webhook": "http://x", "body": []}]}, "then[0].body", "JSON object"),
        ({"when": temp("gt", 30), "colour": "red"}, "colour", "unknown field"),
        ({"when": {"all": [temp("gt", 30)], "any": [temp("lt", 5)]}}, "when", "stands alone"),
    ],
)
def test_a_malformed_rule_is_refused_naming_the_field(doc: dict[str, Any], field: str, words: str) -> None:
    document = {"name": "r", "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}], **doc}
    with pytest.raises(RuleError) as refused:
        parse_rule(document)
    assert refused.value.field == field and words in refused.value.reason, (refused.value.field, refused.value.reason)


# --- operators and trees -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "target", "value", "expected"),
    [
        ("gt", 30, 30.5, True), ("gt", 30, 30, False), ("ge", 30, 30, True), ("lt", 5, 4, True), ("lt", 5, 5, False),
        ("le", 5, 5, True), ("eq", "auto", "auto", True), ("eq", 1, True, False), ("eq", 21, 21.0, True), ("ne", "auto", "heat", True),
        ("between", [18, 22], 22, True), ("between", [18, 22], 22.1, False), ("gt", 30, "hot", False),
    ],
)  # fmt: skip
def test_each_operator(op: str, target: Any, value: Any, expected: bool) -> None:
    feed = Feed(rule(temp(op, target)))
    assert feed.at(0, thermo_1__temperature=value) is expected


def test_all_and_any_nest() -> None:
    when = {"all": [temp("gt", 25), {"any": [{"device": "door-1", "capability": "open", "op": "eq", "value": True}, {"time": {"after": "22:00"}}]}]}
    feed = Feed(rule(when))
    assert not feed.at(0, thermo_1__temperature=26, door_1__open=False)
    assert feed.at(1, door_1__open=True)
    assert not feed.at(2, door_1__open=False)  # re-armed: the any went false
    assert feed.at(3, minute=22 * 60 + 5)  # late evening satisfies the any instead


def test_a_missing_value_is_false() -> None:
    assert not Feed(rule(temp("lt", 100))).at(0)


# --- durations, hysteresis, cooldown, events -----------------------------------------------------


def test_for_fires_once_after_the_duration_and_not_again_while_true() -> None:
    feed = Feed(rule(temp("gt", 30, for_s=10)))
    assert not feed.at(0, thermo_1__temperature=31)
    assert feed.last.recheck_at == 10 and "true for 0.0 s of 10 s" in feed.last.reason
    assert not feed.at(9.9)
    assert feed.at(10)
    assert not feed.at(11, thermo_1__temperature=32) and not feed.at(60)
    assert not feed.at(61, thermo_1__temperature=29)  # false: re-armed, timer reset
    assert not feed.at(62, thermo_1__temperature=31) and not feed.at(71.9)
    assert feed.at(72)
    assert feed.fired == [10, 72]


def test_a_dip_restarts_the_duration() -> None:
    feed = Feed(rule(temp("gt", 30, for_s=10)))
    feed.at(0, thermo_1__temperature=31)
    feed.at(5, thermo_1__temperature=29)
    feed.at(6, thermo_1__temperature=31)
    assert not feed.at(15) and feed.at(16)


def test_hysteresis_holds_a_threshold_until_the_value_leaves_it_by_the_margin() -> None:
    feed = Feed(rule(temp("gt", 30, hysteresis=2)))
    assert feed.at(0, thermo_1__temperature=30.5)
    for t, v in enumerate([29.9, 30.4, 28.5, 30.6], start=1):  # chatter around 30 stays inside the band
        assert not feed.at(t, thermo_1__temperature=v)
    assert feed.state.leaves["when"].latched
    assert not feed.at(10, thermo_1__temperature=28)  # left the band: released
    assert feed.at(11, thermo_1__temperature=30.1)
    assert feed.fired == [0, 11]


def test_cooldown_uses_up_a_firing_it_refuses() -> None:
    feed = Feed(rule(temp("gt", 30), cooldown_s=60))
    assert feed.at(0, thermo_1__temperature=31)
    feed.at(1, thermo_1__temperature=29)
    assert not feed.at(2, thermo_1__temperature=31) and "in cooldown for 58.0 s more" in feed.last.reason
    assert not feed.at(70)  # still the same true period: used up
    feed.at(71, thermo_1__temperature=29)
    assert feed.at(72, thermo_1__temperature=31)


def test_changed_and_changed_to_are_events() -> None:
    feed = Feed(rule({"device": "thermo-1", "capability": "mode", "op": "changed_to", "value": "heat"}))
    assert not feed.at(0, thermo_1__mode="heat")  # no previous value: not a change
    assert not feed.at(1, thermo_1__mode="auto")
    assert feed.at(2, thermo_1__mode="heat")
    assert not feed.at(3, thermo_1__mode="heat")
    anything = Feed(rule({"device": "thermo-1", "capability": "mode", "op": "changed"}))
    anything.at(0, thermo_1__mode="auto")
    assert anything.at(1, thermo_1__mode="heat") and anything.at(2, thermo_1__mode="auto")


def test_a_time_window_may_cross_midnight() -> None:
    night = Feed(rule({"all": [temp("gt", 0), {"time": {"after": "22:00", "before": "06:00"}}]}))
    assert not night.at(0, minute=21 * 60 + 59, thermo_1__temperature=1)
    assert night.at(1, minute=23 * 60)
    night.at(2, minute=12 * 60)
    assert night.at(3, minute=5 * 60 + 59)


def test_a_schedule_condition_holds_in_its_tick_only() -> None:
    feed = Feed(rule({"all": [{"schedule": "0 7 * * 1-5"}, temp("lt", 18)]}))
    assert not feed.at(0, thermo_1__temperature=15)
    assert feed.at(1, schedule_tick=True)
    assert not feed.at(2)
    assert feed.at(3, schedule_tick=True)


def test_a_rule_on_a_schedule_alone_fires_at_every_tick() -> None:
    """Nothing evaluates it between two ticks: each tick is an edge of its own."""
    feed = Feed(rule({"schedule": "*/5 * * * *"}))
    assert feed.at(0, schedule_tick=True)
    assert feed.at(300, schedule_tick=True)
    assert not feed.at(301), "not satisfied outside a tick"


def test_group_conditions_over_any_or_all_members() -> None:
    members = {"greenhouse": ["thermo-1", "thermo-2"]}
    any_hot = Feed(rule({"group": "greenhouse", "capability": "temperature", "op": "gt", "value": 30}))
    assert any_hot.at(0, members=members, thermo_1__temperature=31, thermo_2__temperature=20)
    assert any_hot.last.trigger == {"device": "thermo-1", "capability": "temperature", "value": 31}
    all_hot = Feed(rule({"group": "greenhouse", "members": "all", "capability": "temperature", "op": "gt", "value": 30}))
    assert not all_hot.at(0, members=members, thermo_1__temperature=31, thermo_2__temperature=20)
    assert all_hot.at(1, members=members, thermo_2__temperature=30.5)


def test_a_disabled_rule_does_not_fire() -> None:
    feed = Feed(rule(temp("gt", 30), enabled=False))
    assert not feed.at(0, thermo_1__temperature=31) and feed.last.reason == "the rule is disabled"


@pytest.mark.parametrize(
    ("mode", "running", "queued", "decision"),
    [
        ("single", 0, 0, "start"),
        ("single", 1, 0, "skip"),
        ("restart", 1, 0, "restart"),
        ("queued", 1, 3, "queue"),
        ("queued", 1, 10, "skip"),
        ("parallel", 5, 0, "start"),
    ],
)
def test_modes(mode: str, running: int, queued: int, decision: str) -> None:
    assert admit(mode, running, queued).decision == decision


def test_the_state_survives_a_round_trip_through_json() -> None:
    import json

    feed = Feed(rule(temp("gt", 30, for_s=10, hysteresis=1), cooldown_s=5))
    feed.at(0, thermo_1__temperature=31)
    restored = RuleState.from_dict(json.loads(json.dumps(feed.state.to_dict())))
    assert restored == feed.state
    feed.state = restored  # a restart in the middle of the duration: fires once, on time
    assert not feed.at(9) and feed.at(10) and not feed.at(11)


# --- properties --------------------------------------------------------------------------------

readings = st.lists(st.floats(min_value=20, max_value=40, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(values=readings, threshold=st.floats(min_value=25, max_value=35), margin=st.floats(min_value=0.1, max_value=5))
def test_hysteresis_never_chatters(values: list[float], threshold: float, margin: float) -> None:
    """Between two firings the value went to threshold - margin or below: a reading that
    only wobbles around the threshold fires once."""
    feed = Feed(rule(temp("gt", threshold, hysteresis=margin)))
    released_since_last = True
    for t, value in enumerate(values):
        fired = feed.at(float(t), thermo_1__temperature=value)
        if fired:
            assert released_since_last
            released_since_last = False
        if value <= threshold - margin:
            released_since_last = True


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(min_value=0.1, max_value=30), st.floats(min_value=20, max_value=40, allow_nan=False)), min_size=1, max_size=60),
    cooldown=st.floats(min_value=1, max_value=120),
)
def test_firings_are_at_least_a_cooldown_apart(steps: list[tuple[float, float]], cooldown: float) -> None:
    feed = Feed(rule(temp("gt", 30), cooldown_s=cooldown))
    now = 0.0
    for gap, value in steps:
        now += gap
        feed.at(now, thermo_1__temperature=value)
    # b >= a + cooldown, the sum the engine stores: b - a can round to just under it
    assert all(b >= a + cooldown for a, b in zip(feed.fired, feed.fired[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(min_value=0.1, max_value=20), st.floats(min_value=20, max_value=40, allow_nan=False)), min_size=1, max_size=40),
    for_s=st.sampled_from([0, 5, 10]),
)
def test_replaying_the_same_inputs_gives_the_same_firings(steps: list[tuple[float, float]], for_s: int) -> None:
    """What dry-run relies on: a fresh state and the same inputs give the same firings."""
    runs = []
    for _ in range(2):
        feed = Feed(rule(temp("gt", 30, for_s=for_s, hysteresis=0.5), cooldown_s=15))
        now = 0.0
        for gap, value in steps:
            now += gap
            feed.at(now, thermo_1__temperature=value)
        runs.append(feed.fired)
    assert runs[0] == runs[1]
