"""Filter pieces shared by the API's FilterSets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError


def to_utc(value: datetime, field: str) -> datetime:
    """Normalize an aware datetime to UTC. PostgreSQL refuses offsets past ±15:59 that
    Python accepts, and far-past dates can overflow: both become a 400, never a 500."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError({field: f"'{value.isoformat()}' is out of range"}) from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    def __init__(self, *args: Any, param: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.param = param  # the query parameter, named in errors

    def filter(self, qs: QuerySet[Any], value: Any) -> QuerySet[Any]:
        if value:
            value = to_utc(value, self.param)
        return super().filter(qs, value)
