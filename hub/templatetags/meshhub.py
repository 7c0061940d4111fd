"""Template helpers for the operator pages."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    """`{{ points|get_item:name }}`: a dict value by a variable key ({} when absent)."""
    if isinstance(mapping, dict):
        return mapping.get(key) or {}
    return {}
