"""Value checks against capability specs (pure)."""

from __future__ import annotations

import math

import pytest

from devices.values import ValueSpec, check_value

SETPOINT = ValueSpec("setpoint", "float", 5, 35)
LEVEL = ValueSpec("level", "int", 0, 100)
ON = ValueSpec("on", "bool")
MODE = ValueSpec("mode", "enum", enum_values=("off", "heat", "auto"))
LABEL = ValueSpec("label", "string")


@pytest.mark.parametrize(
    ("spec", "value"),
    [(SETPOINT, 21.5), (SETPOINT, 5), (SETPOINT, 35.0), (LEVEL, 0), (LEVEL, 100), (LEVEL, 50.0), (ON, True), (ON, False), (MODE, "auto"), (LABEL, "kitchen")],
)
def test_it_accepts_values_that_fit(spec: ValueSpec, value: object) -> None:
    assert check_value(spec, value) is None


@pytest.mark.parametrize(
    ("spec", "value", "reason"),
    [
        (SETPOINT, 40, "value 40 above max 35 for capability 'setpoint'"),
        (SETPOINT, 4.9, "value 4.9 below min 5 for capability 'setpoint'"),
        (SETPOINT, "21.5", "capability 'setpoint' takes a number, got string '21.5'"),
        (SETPOINT, True, "capability 'setpoint' takes a number, got boolean True"),
        (SETPOINT, math.nan, "capability 'setpoint' takes a finite number, got nan"),
        (SETPOINT, None, "capability 'setpoint' takes a number, got null None"),
        (LEVEL, 50.5, "capability 'level' takes an integer, got 50.5"),
        (LEVEL, 101, "value 101 above max 100 for capability 'level'"),
        (ON, 1, "capability 'on' takes a boolean, got integer 1"),
        (ON, "true", "capability 'on' takes a boolean, got string 'true'"),
        (MODE, "cool", "value 'cool' is not one of off, heat, auto for capability 'mode'"),
        (MODE, 2, "capability 'mode' takes one of off, heat, auto, got integer 2"),
        (LABEL, "x" * 257, "capability 'label' takes at most 256 characters, got 257"),
        (LABEL, ["a"], "capability 'label' takes a string, got array ['a']"),
    ],
)
def test_it_names_why_a_value_does_not_fit(spec: ValueSpec, value: object, reason: str) -> None:
    assert check_value(spec, value) == reason
