"""Telemetry range queries: raw samples, or time buckets computed in the database from the
raw samples and the rollups that retention (devices/retention.py) made of older ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, Func, IntegerField, Max, Min, Q, QuerySet, Sum
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from devices.models import RESOLUTION_SECONDS, Device, Resolution, TelemetryRollup, TelemetrySample
from devices.retention import Policy

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


SOURCE_ORDER = {"raw": 0, Resolution.HOUR.value: 1, Resolution.DAY.value: 2}


@dataclass(frozen=True)
class TelemetryQuery:
    """A device's telemetry over [start, end): raw samples, or buckets that add what is still
    raw to what retention has rolled up (each sample is in exactly one of the two)."""

    device: Device
    start: datetime
    end: datetime
    capability: str | None = None
    bucket_s: int | None = None
    policy: Policy = field(default_factory=Policy.from_settings)
    now: datetime = field(default_factory=timezone.now)

    def samples(self) -> QuerySet[TelemetrySample]:
        qs = TelemetrySample.objects.filter(device=self.device, ts__gte=self.start, ts__lt=self.end)
        if self.capability:
            qs = qs.filter(capability=self.capability)
        return qs

    def retention(self) -> dict[str, datetime | None]:
        """Where each tier begins now: raw samples from `raw_from`, hourly rollups from
        `hourly_from`, daily ones from `daily_from` (None: kept forever)."""
        return {"raw_from": self.policy.raw_from(self.now), "hourly_from": self.policy.hourly_from(self.now), "daily_from": self.policy.daily_from(self.now)}

    def finest_resolution_s(self) -> int:
        """The finest bucket the whole range can be told at: 0 (any) while it lies in the raw
        window, an hour once it reaches back into the hourly rollups, a day beyond them."""
        hourly_from = self.policy.hourly_from(self.now)
        raw_from = self.policy.raw_from(self.now)
        if hourly_from is not None and self.start < hourly_from:
            return RESOLUTION_SECONDS[Resolution.DAY]
        if raw_from is not None and self.start < raw_from:
            return RESOLUTION_SECONDS[Resolution.HOUR]
        return 0

    def effective_bucket_s(self) -> int:
        """The asked bucket width, rounded up to a whole number of the rollups it must read."""
        assert self.bucket_s
        finest = self.finest_resolution_s()
        return -(-self.bucket_s // finest) * finest if finest else self.bucket_s

    def raw(self) -> tuple[list[dict[str, Any]], bool]:
        """Samples oldest first, at most RAW_LIMIT; the flag says whether more existed."""
        rows = list(self.samples().order_by("ts", "id").values("ts", "capability", "value", "text")[: RAW_LIMIT + 1])
        truncated = len(rows) > RAW_LIMIT
        return [
            {"ts": row["ts"], "capability": row["capability"], "value": row["text"] if row["text"] else row["value"]} for row in rows[:RAW_LIMIT]
        ], truncated

    def buckets(self) -> list[dict[str, Any]]:
        """count/avg/min/max of the numeric samples per capability and bucket, raw and rolled
        up together; `resolution` names the coarsest source in the bucket (raw, hour, day)."""
        width = self.effective_bucket_s()
        merged: dict[tuple[str, int], dict[str, Any]] = {}

        def fold(capability: str, bucket: int, source: str, count: int, total: float, low: float, high: float) -> None:
            into = merged.get((capability, bucket))
            if into is None:
                merged[(capability, bucket)] = {"count": count, "sum": total, "min": low, "max": high, "resolution": source}
                return
            into["count"] += count
            into["sum"] += total
            into["min"] = min(into["min"], low)
            into["max"] = max(into["max"], high)
            if SOURCE_ORDER[source] > SOURCE_ORDER[into["resolution"]]:
                into["resolution"] = source

        raw = (
            self.samples()
            .filter(value__isnull=False)
            .annotate(bucket=EpochBucket("ts", width))
            .values("capability", "bucket")
            .annotate(total=Sum("value"), low=Min("value"), high=Max("value"), n=Count("id"))
        )
        for row in raw:
            fold(row["capability"], row["bucket"], "raw", row["n"], row["total"], row["low"], row["high"])
        for rolled in self.rollups(width):
            fold(rolled["capability"], rolled["bucket"], rolled["resolution"], rolled["n"], rolled["total"], rolled["low"], rolled["high"])
        return [
            {
                "capability": capability,
                "ts": datetime.fromtimestamp(bucket * width, tz=UTC),
                "avg": agg["sum"] / agg["count"],
                "min": agg["min"],
                "max": agg["max"],
                "count": agg["count"],
                "resolution": agg["resolution"],
            }
            for (capability, bucket), agg in sorted(merged.items())
        ]

    def rollups(self, width: int) -> list[dict[str, Any]]:
        """The rollups that overlap the range, summed per capability, output bucket and resolution."""
        overlaps = Q()
        for resolution, seconds in RESOLUTION_SECONDS.items():
            overlaps |= Q(resolution=resolution, bucket_start__gt=self.start - timedelta(seconds=seconds))
        qs = TelemetryRollup.objects.filter(overlaps, device=self.device, bucket_start__lt=self.end)
        if self.capability:
            qs = qs.filter(capability=self.capability)
        rows = (
            qs.annotate(bucket=EpochBucket("bucket_start", width))
            .values("capability", "bucket", "resolution")
            .annotate(total=Sum("sum"), low=Min("min"), high=Max("max"), n=Sum("count"))
            .order_by()
        )
        return [dict(row) for row in rows]
