"""Telemetry range queries: raw samples or time buckets computed in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Avg, Count, Func, IntegerField, Max, Min, QuerySet
from django.db.models.sql.compiler import SQLCompiler

from devices.models import Device, TelemetrySample

RAW_LIMIT = 10_000


class EpochBucket(Func):
    """floor(unix_seconds(ts) / size): the bucket a sample falls in, per database."""

    output_field = IntegerField()

    def __init__(self, expression: Any, size: int) -> None:
        super().__init__(expression)
        self.size = int(size)

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        # '%%s' survives the backend's placeholder conversion as strftime's '%s'.
        return f"(CAST(strftime('%%s', {sql}) AS INTEGER) / {self.size})", tuple(params)

    def as_postgresql(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"FLOOR(EXTRACT(EPOCH FROM {sql}) / {self.size})::bigint", tuple(params)


@dataclass(frozen=True)
class TelemetryQuery:
    device: Device
    start: datetime
    end: datetime
    capability: str | None = None
    bucket_s: int | None = None

    def samples(self) -> QuerySet[TelemetrySample]:
        qs = TelemetrySample.objects.filter(device=self.device, ts__gte=self.start, ts__lt=self.end)
        if self.capability:
            qs = qs.filter(capability=self.capability)
        return qs

    def raw(self) -> tuple[list[dict[str, Any]], bool]:
        """Samples oldest first, at most RAW_LIMIT; the flag says whether more existed."""
        rows = list(self.samples().order_by("ts", "id").values("ts", "capability", "value", "text")[: RAW_LIMIT + 1])
        truncated = len(rows) > RAW_LIMIT
        return [
            {"ts": row["ts"], "capability": row["capability"], "value": row["text"] if row["text"] else row["value"]} for row in rows[:RAW_LIMIT]
        ], truncated

    def buckets(self) -> list[dict[str, Any]]:
        """avg/min/max/count of the numeric samples per capability and bucket."""
        assert self.bucket_s
        rows = (
            self.samples()
            .filter(value__isnull=False)
            .annotate(bucket=EpochBucket("ts", self.bucket_s))
            .values("capability", "bucket")
            .annotate(avg=Avg("value"), min=Min("value"), max=Max("value"), count=Count("id"))
            .order_by("capability", "bucket")
        )
        return [
            {
                "capability": row["capability"],
                "ts": datetime.fromtimestamp(row["bucket"] * self.bucket_s, tz=UTC),
                "avg": row["avg"],
                "min": row["min"],
                "max": row["max"],
                "count": row["count"],
            }
            for row in rows
        ]
