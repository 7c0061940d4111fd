"""Telemetry: the raw samples devices report, and the hourly and daily rollups that keep
their history once the raw samples age out (devices/retention.py moves them)."""

from __future__ import annotations

from django.db import models

from devices.models.registry import Device


class TelemetrySample(models.Model):
    """One reported value. Numbers (and booleans as 0/1) in `value`, text in `text`."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="telemetry")
    capability = models.CharField(max_length=64)
    ts = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    text = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["-ts"]
        constraints = [
            # One value per capability per measurement: a report the device resends (its
            # ack was lost, or the hub answered `unavailable`) is stored once. The unique
            # index also serves the range queries (device, capability, ts).
            models.UniqueConstraint(fields=["device", "capability", "ts"], name="telemetry_sample_unique"),
        ]
        indexes = [
            # Retention takes the oldest samples first, in small batches: without an index
            # on ts each batch would scan the table.
            models.Index(fields=["ts"], name="telemetry_sample_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}:{self.capability}@{self.ts.isoformat()}"

    @property
    def display_value(self) -> float | str | None:
        return self.text if self.text else self.value


class Resolution(models.TextChoices):
    HOUR = "hour", "Hourly"
    DAY = "day", "Daily"


RESOLUTION_SECONDS = {Resolution.HOUR: 3600, Resolution.DAY: 86400}


class TelemetryRollup(models.Model):
    """The numeric samples of one capability in one UTC hour or day, folded: enough to give
    count, min, max and mean of any range of whole buckets exactly.

    Rows only ever grow by merging (count and sum add, min and max widen), so samples that
    arrive late, after their bucket was first written, fold into it on the next retention
    run instead of being lost."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="telemetry_rollups")
    capability = models.CharField(max_length=64)
    resolution = models.CharField(max_length=4, choices=Resolution.choices)
    bucket_start = models.DateTimeField()
    count = models.PositiveIntegerField()
    sum = models.FloatField()
    min = models.FloatField()
    max = models.FloatField()

    class Meta:
        ordering = ["-bucket_start"]
        constraints = [
            models.UniqueConstraint(fields=["device", "capability", "resolution", "bucket_start"], name="telemetry_rollup_unique"),
            models.CheckConstraint(condition=models.Q(count__gt=0), name="telemetry_rollup_count_positive"),
        ]
        indexes = [models.Index(fields=["resolution", "bucket_start"], name="telemetry_rollup_age_idx")]

    def __str__(self) -> str:
        return f"{self.device_id}:{self.capability}@{self.resolution}:{self.bucket_start.isoformat()}"

    @property
    def mean(self) -> float:
        return self.sum / self.count
