"""Value checks against a capability's declared type, range and enum, without Django.

Shared by command validation (the API, rules, pages) and, later, the gateway's state
validation, so a device and an operator are held to the same reading of a capability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_STRING_LENGTH = 256


@dataclass(frozen=True)
class ValueSpec:
    name: str
    value_type: str
    min_value: float | None = None
    max_value: float | None = None
    enum_values: Sequence[str] = field(default_factory=tuple)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_value(spec: ValueSpec, value: Any) -> str | None:
    """Return why `value` does not fit `spec`, or None when it fits.

    JSON types are taken literally: `true` is not 1, `"21.5"` is not a number, and an
    int capability refuses 21.5 rather than rounding it.
    """
    what = f"capability '{spec.name}'"
    vt = spec.value_type
    if vt == "bool":
        if not isinstance(value, bool):
            return f"{what} takes a boolean, got {_type_name(value)} {value!r}"
        return None
    if vt in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{what} takes {'an integer' if vt == 'int' else 'a number'}, got {_type_name(value)} {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{what} takes a finite number, got {value!r}"
        if vt == "int" and isinstance(value, float):
            if not value.is_integer():
                return f"{what} takes an integer, got {value!r}"
        if spec.min_value is not None and value < spec.min_value:
            return f"value {value!r} below min {spec.min_value:g} for {what}"
        if spec.max_value is not None and value > spec.max_value:
            return f"value {value!r} above max {spec.max_value:g} for {what}"
        return None
    if vt == "string":
        if not isinstance(value, str):
            return f"{what} takes a string, got {_type_name(value)} {value!r}"
        if "\x00" in value:
            return f"{what} does not take NUL characters"
        if len(value) > MAX_STRING_LENGTH:
            return f"{what} takes at most {MAX_STRING_LENGTH} characters, got {len(value)}"
        return None
    if vt == "enum":
        if not isinstance(value, str):
            return f"{what} takes one of {', '.join(spec.enum_values)}, got {_type_name(value)} {value!r}"
        if value not in spec.enum_values:
            return f"value {value!r} is not one of {', '.join(spec.enum_values)} for {what}"
        return None
    return f"{what} has unknown value type {vt!r}"
