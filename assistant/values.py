"""A spoken value for a capability: "21 degrees", "21.5 °C", "50 %", "half", "on", "heat".

`parse(text, spec)` returns the value the capability takes, or raises ValueRefused with a
reason; the command's own six levels check it again (range, type) when it is sent."""

from __future__ import annotations

import re
from typing import Any

from devices.models import Capability, ValueType

NUMBER = re.compile(r"^(?P<number>[-+]?\d+(?:[.,]\d+)?)\s*(?P<unit>.*)$")
PERCENT_WORDS = {"%", "percent", "per cent", "pct"}
UNIT_WORDS = {
    "",
    "degrees",
    "degree",
    "deg",
    "°",
    "°c",
    "c",
    "celsius",
    "degrees celsius",
    "°f",
    "w",
    "watts",
    "watt",
    "rpm",
    "kwh",
    "v",
    "volts",
    "a",
    "amps",
    "s",
    "seconds",
    "units",
}
WORD_NUMBERS = {
    "zero": 0,
    "half": 50,
    "full": 100,
    "max": 100,
    "maximum": 100,
    "min": 0,
    "minimum": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "ten": 10,
    "twenty": 20,
    "thirty": 30,
}
TRUE = {"on", "true", "yes", "open", "enabled", "start", "1"}
FALSE = {"off", "false", "no", "closed", "close", "disabled", "stop", "0"}


class ValueRefused(Exception):
    pass


def _number(text: str) -> tuple[float, bool] | None:
    """(number, is a percentage) or None."""
    text = text.strip().lower()
    if text in WORD_NUMBERS:
        return float(WORD_NUMBERS[text]), text in ("half", "full", "max", "maximum", "min", "minimum")
    match = NUMBER.match(text)
    if match is None:
        return None
    unit = match.group("unit").strip()
    if unit not in UNIT_WORDS and unit not in PERCENT_WORDS:
        return None
    return float(match.group("number").replace(",", ".")), unit in PERCENT_WORDS


def parse(text: str, cap: Capability) -> Any:
    words = text.strip().lower()
    if cap.value_type == ValueType.BOOL:
        if words in TRUE:
            return True
        if words in FALSE:
            return False
        raise ValueRefused(f"'{cap.name}' is on or off; '{text}' is neither")
    if cap.value_type == ValueType.ENUM:
        options = [str(o) for o in cap.enum_values or []]
        for option in options:
            if option.lower() == words:
                return option
        raise ValueRefused(f"'{cap.name}' is one of {', '.join(options)}; '{text}' is none of them")
    if cap.value_type in (ValueType.INT, ValueType.FLOAT):
        parsed = _number(words)
        if parsed is None:
            raise ValueRefused(f"'{cap.name}' takes a number{' in ' + cap.unit if cap.unit else ''}; '{text}' is not one")
        number, percent = parsed
        if percent and cap.unit != "%" and cap.min_value is not None and cap.max_value is not None and (cap.min_value, cap.max_value) != (0, 100):
            number = cap.min_value + number / 100 * (cap.max_value - cap.min_value)  # 50 % of 0..255 is 127.5
        if cap.value_type == ValueType.INT:
            return round(number)
        return number
    return text.strip()


def fits(text: str, cap: Capability) -> bool:
    try:
        parse(text, cap)
    except ValueRefused:
        return False
    return True
