"""Template helpers for the operator pages."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    """`{{ points|get_item:name }}`: a dict value by a variable key ({} when absent)."""
    if isinstance(mapping, dict):
        return mapping.get(key) or {}
    return {}


@register.filter
def value_of(mapping: Any, key: str) -> Any:
    """`{{ reported|value_of:name }}`: the value itself, None when absent (get_item's {}
    fallback would turn a reported 0 or false into "{}")."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def wire(value: Any, absent: str = "") -> str:
    """`{{ value|wire:"—" }}`: a device value as the protocol and the API spell it
    (`true`, `21.5`, `auto`), the same text the live script (static/meshhub/app.js,
    `shown`) puts in the cell when the value changes, not Python's `True`/`None`."""
    if value is None:
        return absent
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # JavaScript's JSON.stringify(0.0) is "0", Python's "0.0"
    return json.dumps(value, ensure_ascii=False)


@register.filter
def command_result(result: Any) -> str:
    """A finished command's `{value, reason}` as one cell, as the live script shows it."""
    if not isinstance(result, dict):
        return ""
    return " ".join(part for part in (wire(result.get("value")), str(result.get("reason") or "")) if part)


@register.filter
def parse_time(value: Any) -> Any:
    """An ISO-8601 string from a JSON section (devices.details) as a datetime for time.html."""
    if isinstance(value, str):
        from django.utils.dateparse import parse_datetime

        return parse_datetime(value)
    return value
