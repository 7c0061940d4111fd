"""Telemetry retention: raw samples age into hourly rollups, hourly into daily ones, and the
oldest daily ones go, so the samples table stops growing without losing a fleet's history.

Every move is one short transaction of at most `batch` rows: the oldest rows are deleted
with `DELETE … RETURNING` and folded into their rollups by an upsert that merges (count
and sum add, min and max widen). A sample is thus either raw or inside exactly one
rollup, never both and never neither, whatever fails in between: a crash rolls both
halves back, and a second run finds nothing left to move. Readers (devices/telemetry.py) add raw and rolled-up aggregates of a bucket together,
so a chart is exact whether or not the last run has finished.

Between batches the write lock is released, so the gateway's ingest (and on SQLite every
other writer) waits at most one batch. On PostgreSQL two runs at once take disjoint rows
(`FOR UPDATE SKIP LOCKED`) and lock rollups in one order, so they neither double-count nor
deadlock.

Text samples have no numbers to fold: they are kept raw for `raw_days`, then deleted.
The audit log is not telemetry and nothing here touches it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from devices.models import RESOLUTION_SECONDS, Resolution, TelemetryRollup, TelemetrySample
from hub.models import Heartbeat
from hub.storage import table_sizes

log = logging.getLogger("meshhub.retention")

HEARTBEAT_NAME = "telemetry-retention"  # the hub.Heartbeat row a run leaves for the system page


def floor_to(when: datetime, seconds: int) -> datetime:
    """The start of the UTC bucket of `seconds` that holds `when` (buckets from the epoch)."""
    epoch = int(when.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


@dataclass(frozen=True)
class Policy:
    """How long each tier is kept, in days; 0 keeps a tier forever (and the next ones unused)."""

    raw_days: int
    hourly_days: int
    daily_days: int
    batch: int = 5000
    budget_s: float = 120.0

    @classmethod
    def configured(cls) -> Policy:
        """The policy in the settings, unchecked (the `meshhub.E001` system check reports it)."""
        return cls(
            settings.TELEMETRY_RAW_DAYS,
            settings.TELEMETRY_HOURLY_DAYS,
            settings.TELEMETRY_DAILY_DAYS,
            settings.TELEMETRY_RETENTION_BATCH,
            settings.TELEMETRY_RETENTION_BUDGET_S,
        )

    @classmethod
    def from_settings(cls) -> Policy:
        policy = cls.configured()
        problems = policy.problems()
        if problems:
            raise ImproperlyConfigured("telemetry retention: " + "; ".join(problems))
        return policy

    def problems(self) -> list[str]:
        found = []
        for name in ("raw_days", "hourly_days", "daily_days"):
            if getattr(self, name) < 0:
                found.append(f"MESHHUB_TELEMETRY_{name.upper()} must be 0 (forever) or a number of days, not {getattr(self, name)}")
        if self.raw_days and self.hourly_days and self.hourly_days < self.raw_days:
            found.append(f"MESHHUB_TELEMETRY_HOURLY_DAYS ({self.hourly_days}) must not be shorter than MESHHUB_TELEMETRY_RAW_DAYS ({self.raw_days})")
        if self.hourly_days and self.daily_days and self.daily_days < self.hourly_days:
            found.append(f"MESHHUB_TELEMETRY_DAILY_DAYS ({self.daily_days}) must not be shorter than MESHHUB_TELEMETRY_HOURLY_DAYS ({self.hourly_days})")
        if self.batch < 1:
            found.append(f"MESHHUB_TELEMETRY_RETENTION_BATCH must be at least 1, not {self.batch}")
        if self.budget_s <= 0:
            found.append(f"MESHHUB_TELEMETRY_RETENTION_BUDGET_S must be positive, not {self.budget_s:g}")
        return found

    def raw_from(self, now: datetime) -> datetime | None:
        """Samples older than this are rolled up hourly (whole hours); None: raw kept forever."""
        return floor_to(now - timedelta(days=self.raw_days), 3600) if self.raw_days else None

    def hourly_from(self, now: datetime) -> datetime | None:
        """Hourly rollups older than this are folded into days; None: kept forever."""
        if not self.raw_days or not self.hourly_days:
            return None
        return floor_to(now - timedelta(days=self.hourly_days), 86400)

    def daily_from(self, now: datetime) -> datetime | None:
        """Daily rollups older than this are deleted; None: kept forever."""
        if self.hourly_from(now) is None or not self.daily_days:
            return None
        return floor_to(now - timedelta(days=self.daily_days), 86400)


@dataclass
class Fold:
    """The numeric samples of one bucket, folded; merging is associative and commutative."""

    count: int
    sum: float
    min: float
    max: float

    def merge(self, other: Fold) -> None:
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


FoldKey = tuple[int, str, datetime]  # device id, capability, bucket start


@dataclass(frozen=True)
class Moved:
    rows: int  # rows taken from the older tier
    text: int = 0  # of which text samples, deleted without a rollup


@dataclass
class RunReport:
    started_at: datetime
    raw_rolled_up: int = 0  # numeric samples folded into hourly rollups
    raw_text_deleted: int = 0  # text samples past the raw window
    hourly_folded: int = 0  # hourly rollups folded into daily ones
    daily_deleted: int = 0  # daily rollups past the daily window
    batches: int = 0
    longest_batch_s: float = 0.0  # the longest a batch held the write lock
    seconds: float = 0.0
    finished: bool = False  # False: the time budget ran out with rows still to move
    cutoffs: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["started_at"] = self.started_at.isoformat()
        return found


def _as_datetime(value: datetime | str) -> datetime:
    """A datetime column read by a raw cursor: aware already (PostgreSQL) or text (SQLite)."""
    parsed = value if isinstance(value, datetime) else parse_datetime(value)
    if parsed is None:
        raise ValueError(f"not a datetime: {value!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _delete_returning(queryset: QuerySet[Any], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Delete the rows `queryset` selects (it orders and slices) and return their `columns`."""
    ids = queryset.values("id")
    if connection.features.has_select_for_update_skip_locked:
        ids = ids.select_for_update(skip_locked=True)
    sub_sql, params = ids.query.sql_with_params()
    qn = connection.ops.quote_name
    table = qn(queryset.model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id IN ({sub_sql}) RETURNING {', '.join(qn(c) for c in columns)}", params)  # noqa: S608
        return list(cursor.fetchall())


def _merge_into_rollups(resolution: Resolution, folds: dict[FoldKey, Fold]) -> None:
    """Upsert that merges into existing rollups; in key order, so concurrent runs cannot deadlock."""
    if not folds:
        return
    qn = connection.ops.quote_name
    table = qn(TelemetryRollup._meta.db_table)
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    count, total, low, high = (qn(c) for c in ("count", "sum", "min", "max"))
    sql = (
        f"INSERT INTO {table} (device_id, capability, resolution, bucket_start, {count}, {total}, {low}, {high}) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (device_id, capability, resolution, bucket_start) DO UPDATE SET "
        f"{count} = {table}.{count} + excluded.{count}, "
        f"{total} = {table}.{total} + excluded.{total}, "
        f"{low} = {least}({table}.{low}, excluded.{low}), "
        f"{high} = {greatest}({table}.{high}, excluded.{high})"
    )
    adapt = connection.ops.adapt_datetimefield_value
    rows = [
        (device_id, capability, resolution.value, adapt(bucket), f.count, f.sum, f.min, f.max)
        for (device_id, capability, bucket), f in sorted(folds.items(), key=lambda item: (item[0][0], item[0][1], item[0][2]))
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _fold(into: dict[FoldKey, Fold], key: FoldKey, fold: Fold) -> None:
    existing = into.get(key)
    if existing is None:
        into[key] = fold
    else:
        existing.merge(fold)


def roll_up_raw_batch(cutoff: datetime, limit: int) -> Moved:
    """Move up to `limit` of the oldest samples before `cutoff` into hourly rollups."""
    with transaction.atomic():
        rows = _delete_returning(TelemetrySample.objects.filter(ts__lt=cutoff).order_by("ts", "id")[:limit], ("device_id", "capability", "ts", "value"))
        folds: dict[FoldKey, Fold] = {}
        text = 0
        for device_id, capability, ts, value in rows:
            if value is None:
                text += 1
                continue
            _fold(folds, (device_id, capability, floor_to(_as_datetime(ts), RESOLUTION_SECONDS[Resolution.HOUR])), Fold(1, value, value, value))
        _merge_into_rollups(Resolution.HOUR, folds)
    return Moved(len(rows), text)


def fold_hours_batch(cutoff: datetime, limit: int) -> Moved:
    """Move up to `limit` of the oldest hourly rollups before `cutoff` into daily ones."""
    columns = ("device_id", "capability", "bucket_start", "count", "sum", "min", "max")
    with transaction.atomic():
        queryset = TelemetryRollup.objects.filter(resolution=Resolution.HOUR, bucket_start__lt=cutoff).order_by("bucket_start", "id")[:limit]
        rows = _delete_returning(queryset, columns)
        folds: dict[FoldKey, Fold] = {}
        for device_id, capability, bucket_start, count, total, low, high in rows:
            day = floor_to(_as_datetime(bucket_start), RESOLUTION_SECONDS[Resolution.DAY])
            _fold(folds, (device_id, capability, day), Fold(count, total, low, high))
        _merge_into_rollups(Resolution.DAY, folds)
    return Moved(len(rows))


def delete_days_batch(cutoff: datetime, limit: int) -> Moved:
    """Delete up to `limit` of the oldest daily rollups before `cutoff`."""
    with transaction.atomic():
        queryset = TelemetryRollup.objects.filter(resolution=Resolution.DAY, bucket_start__lt=cutoff).order_by("bucket_start", "id")[:limit]
        return Moved(len(_delete_returning(queryset, ("id",))))


def _stage(step: Callable[[datetime, int], Moved], cutoff: datetime | None, policy: Policy, deadline: float, report: RunReport) -> tuple[Moved, bool]:
    """Run `step` batch after batch until a batch comes back short (nothing older is left)
    or the time is up. Returns what moved in all, and whether the stage finished."""
    total = Moved(0)
    while cutoff is not None:
        began = time.monotonic()
        moved = step(cutoff, policy.batch)
        report.longest_batch_s = round(max(report.longest_batch_s, time.monotonic() - began), 4)
        report.batches += 1
        total = Moved(total.rows + moved.rows, total.text + moved.text)
        if moved.rows < policy.batch:
            break
        if time.monotonic() >= deadline:
            return total, False
    return total, True


def apply(policy: Policy | None = None, now: datetime | None = None) -> RunReport:
    """One retention run: raw → hourly, hourly → daily, old daily deleted, within the budget.
    Safe to run twice at once and to kill at any point."""
    policy = policy or Policy.from_settings()
    now = now or timezone.now()
    report = RunReport(started_at=now)
    raw_from, hourly_from, daily_from = policy.raw_from(now), policy.hourly_from(now), policy.daily_from(now)
    report.cutoffs = {
        name: when.isoformat() if when else None for name, when in (("raw_from", raw_from), ("hourly_from", hourly_from), ("daily_from", daily_from))
    }
    began = time.monotonic()
    deadline = began + policy.budget_s
    raw, finished = _stage(roll_up_raw_batch, raw_from, policy, deadline, report)
    report.raw_rolled_up, report.raw_text_deleted = raw.rows - raw.text, raw.text
    if finished:
        hours, finished = _stage(fold_hours_batch, hourly_from, policy, deadline, report)
        report.hourly_folded = hours.rows
    if finished:
        days, finished = _stage(delete_days_batch, daily_from, policy, deadline, report)
        report.daily_deleted = days.rows
    report.finished = finished
    report.seconds = round(time.monotonic() - began, 3)
    if not finished:
        log.warning("telemetry retention stopped at its %g s budget with rows still to move; the next run goes on", policy.budget_s)
    log.info(
        "telemetry retention: %d samples rolled up, %d text samples deleted, %d hourly rollups folded, %d daily deleted, in %d batches, %.1f s",
        report.raw_rolled_up,
        report.raw_text_deleted,
        report.hourly_folded,
        report.daily_deleted,
        report.batches,
        report.seconds,
        extra={"retention": report.as_dict()},
    )
    return report


def run_and_record(policy: Policy | None = None) -> dict[str, Any]:
    """A run, then the disk use of every table, kept in the `telemetry-retention` heartbeat
    row that the system page shows."""
    report = apply(policy).as_dict()
    details = {"report": report, "tables": [t.as_dict() for t in table_sizes()], "measured_at": timezone.now().isoformat()}
    Heartbeat.objects.update_or_create(name=HEARTBEAT_NAME, defaults={"at": timezone.now(), "details": details})
    return details
