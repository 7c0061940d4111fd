"""API list paging: DRF's limit/offset, bounded so no query string reaches the database
as a number it cannot hold (`?limit=9699000479345157378726309134336` was a 500: SQLite
and PostgreSQL take at most a 64-bit LIMIT/OFFSET)."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination

MAX_LIMIT = 1000  # rows per page; `next` links the rest
MAX_OFFSET = 2**62  # past any table; such an offset simply gives an empty page


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
