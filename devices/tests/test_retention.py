"""Telemetry retention (issue #14, item 12): raw samples roll up into hourly and daily
rollups that equal what the raw rows gave, in small batches, idempotently, on SQLite and
PostgreSQL alike; the telemetry API answers the same before and after; the audit log is
never pruned; the system page shows each table's disk use."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core import checks
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor, Decision, record
from devices import retention
from devices.models import Device, TelemetryRollup, TelemetrySample
from devices.retention import Policy, floor_to
from devices.tasks import apply_telemetry_retention
from tests.factories import thermostat

NOW = datetime(2026, 12, 5, 10, 17, 23, 250000, tzinfo=UTC)
POLICY = Policy(raw_days=7, hourly_days=30, daily_days=120, batch=97)  # an odd batch: buckets straddle batches
NUMERIC = ("temperature", "setpoint")


@dataclass(frozen=True)
class Seeded:
    device_id: int
    capability: str
    ts: datetime
    value: float | None
    text: str = ""


def seed_history(devices: list[Device], now: datetime, days: int = 150, seed: int = 7) -> list[Seeded]:
    """Samples every 20 to 70 minutes back `days` days for two numeric capabilities per device,
    and a text capability every ~5 hours; values with fractions, so sums are not trivial."""
    rng = random.Random(seed)
    rows: list[Seeded] = []
    for device in devices:
        for capability in (*NUMERIC, "mode"):
            at = now - timedelta(days=days)
            while at < now:
                if capability == "mode":
                    rows.append(Seeded(device.pk, capability, at, None, rng.choice(["off", "heat", "auto"])))
                    at += timedelta(minutes=rng.randint(200, 400), microseconds=rng.randint(0, 999_999))
                else:
                    rows.append(Seeded(device.pk, capability, at, round(rng.uniform(-20, 40), 3)))
                    at += timedelta(minutes=rng.randint(20, 70), microseconds=rng.randint(0, 999_999))
    TelemetrySample.objects.bulk_create(
        (TelemetrySample(device_id=r.device_id, capability=r.capability, ts=r.ts, value=r.value, text=r.text) for r in rows), batch_size=2000
    )
    return rows


def expected_rollups(rows: list[Seeded], policy: Policy, now: datetime) -> dict[tuple[int, str, str, datetime], tuple[int, float, float, float]]:
    """What the rollups must hold, computed from the seeded rows alone: (count, sum, min, max)."""
    raw_from, hourly_from, daily_from = policy.raw_from(now), policy.hourly_from(now), policy.daily_from(now)
    assert raw_from and hourly_from and daily_from
    found: dict[tuple[int, str, str, datetime], list[float]] = {}
    for r in rows:
        if r.value is None or r.ts >= raw_from or r.ts < daily_from:
            continue
        key = (r.device_id, r.capability, "hour", floor_to(r.ts, 3600)) if r.ts >= hourly_from else (r.device_id, r.capability, "day", floor_to(r.ts, 86400))
        found.setdefault(key, []).append(r.value)
    return {key: (len(values), sum(values), min(values), max(values)) for key, values in found.items()}


def stored_rollups() -> dict[tuple[int, str, str, datetime], tuple[int, float, float, float]]:
    return {(r.device_id, r.capability, r.resolution, r.bucket_start): (r.count, r.sum, r.min, r.max) for r in TelemetryRollup.objects.all()}


def assert_same(stored: dict[Any, tuple[int, float, float, float]], expected: dict[Any, tuple[int, float, float, float]]) -> None:
    assert stored.keys() == expected.keys()
    for key, (count, total, low, high) in expected.items():
        assert stored[key][0] == count, key
        assert stored[key][1] == pytest.approx(total, rel=1e-9, abs=1e-6), key
        assert (stored[key][2], stored[key][3]) == (low, high), key


@pytest.fixture
def fleet() -> list[Device]:
    return [thermostat("sensor-1"), thermostat("sensor-2")]


@pytest.mark.django_db
def test_the_rollups_equal_what_the_raw_rows_gave_and_a_second_run_changes_nothing(fleet: list[Device]) -> None:
    rows = seed_history(fleet, NOW)
    raw_from, daily_from = POLICY.raw_from(NOW), POLICY.daily_from(NOW)
    assert raw_from and daily_from

    report = retention.apply(POLICY, NOW)

    assert report.finished and report.batches > 10
    assert_same(stored_rollups(), expected_rollups(rows, POLICY, NOW))
    # Only the raw window is left raw, text included; older text is gone.
    kept = sorted((r.device_id, r.capability, r.ts) for r in rows if r.ts >= raw_from)
    assert sorted(TelemetrySample.objects.values_list("device_id", "capability", "ts")) == kept
    old_numeric = [r for r in rows if r.ts < raw_from and r.value is not None]
    assert report.raw_rolled_up == len(old_numeric)
    assert report.raw_text_deleted == sum(1 for r in rows if r.ts < raw_from and r.value is None)
    assert report.hourly_folded > 0 and report.daily_deleted > 0
    assert not TelemetryRollup.objects.filter(bucket_start__lt=daily_from).exists()

    before = stored_rollups()
    again = retention.apply(POLICY, NOW)
    assert (again.raw_rolled_up, again.raw_text_deleted, again.hourly_folded, again.daily_deleted, again.finished) == (0, 0, 0, 0, True)
    assert stored_rollups() == before


@pytest.mark.django_db
def test_a_late_sample_for_an_hour_already_rolled_up_is_merged_into_it(fleet: list[Device]) -> None:
    rows = seed_history(fleet, NOW, days=12)
    retention.apply(POLICY, NOW)
    # A device that was offline for ten days sends what its outbox kept.
    late_ts = NOW - timedelta(days=9, minutes=13)
    late = [Seeded(fleet[0].pk, "temperature", late_ts, -35.5), Seeded(fleet[0].pk, "temperature", late_ts + timedelta(seconds=1), 99.25)]
    TelemetrySample.objects.bulk_create(TelemetrySample(device_id=r.device_id, capability=r.capability, ts=r.ts, value=r.value) for r in late)

    report = retention.apply(POLICY, NOW)

    assert report.raw_rolled_up == 2
    assert_same(stored_rollups(), expected_rollups(rows + late, POLICY, NOW))
    assert stored_rollups()[(fleet[0].pk, "temperature", "hour", floor_to(late_ts, 3600))][2:] == (-35.5, 99.25)


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_neither_lose_nor_count_a_sample_twice(fleet: list[Device]) -> None:
    rows = seed_history(fleet, NOW, days=40)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            retention.apply(Policy(7, 30, 120, batch=50), NOW)
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert_same(stored_rollups(), expected_rollups(rows, POLICY, NOW))


@pytest.mark.django_db
def test_a_run_out_of_time_stops_between_batches_and_the_next_goes_on(fleet: list[Device]) -> None:
    rows = seed_history(fleet, NOW, days=20)
    hurried = Policy(7, 30, 120, batch=10, budget_s=1e-9)

    first = retention.apply(hurried, NOW)

    assert not first.finished and first.batches == 1 and first.raw_rolled_up + first.raw_text_deleted == 10
    runs = 1
    while not retention.apply(hurried, NOW).finished:
        runs += 1
    assert runs > 10
    assert_same(stored_rollups(), expected_rollups(rows, POLICY, NOW))


@pytest.mark.django_db
def test_the_audit_log_is_never_pruned(fleet: list[Device]) -> None:
    seed_history(fleet, NOW, days=10)
    for i in range(5):
        record(Actor.system(), "test.old", Decision.ALLOW, target_type="device", target_id=f"sensor-{i}")
    AuditEvent.objects.update(ts=NOW - timedelta(days=4000))  # older than every tier
    before = list(AuditEvent.objects.order_by("seq").values_list("seq", "hash"))

    retention.apply(Policy(1, 2, 3, batch=100), NOW)

    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "hash")) == before


@pytest.mark.django_db
def test_the_telemetry_api_answers_the_same_buckets_before_and_after_the_prune(fleet: list[Device], bob_api: APIClient, settings: Any) -> None:
    settings.TELEMETRY_RAW_DAYS, settings.TELEMETRY_HOURLY_DAYS, settings.TELEMETRY_DAILY_DAYS = 7, 30, 120
    now = timezone.now()
    seed_history(fleet, now, days=100)
    url = "/api/v1/devices/sensor-1/telemetry/"

    def ask(days: int, bucket: int) -> dict[str, Any]:
        start = floor_to(now - timedelta(days=days), 86400)
        response = bob_api.get(url, {"capability": "temperature", "start": start.isoformat(), "end": now.isoformat(), "bucket": bucket})
        assert response.status_code == 200, response.content
        return response.json()

    asks = {(90, 86400), (20, 3600), (20, 900), (3, 900)}
    before = {key: ask(*key) for key in asks}
    retention.run_and_record(Policy.from_settings())
    after = {key: ask(*key) for key in asks}

    for key in asks:
        old, new = before[key]["buckets"], after[key]["buckets"]
        assert [(b["ts"], b["count"], b["min"], b["max"]) for b in new] == [(b["ts"], b["count"], b["min"], b["max"]) for b in old], key
        assert [b["avg"] for b in new] == pytest.approx([b["avg"] for b in old], rel=1e-9), key
    # 900 s buckets over 20 days reach into the hourly rollups: answered in hours, and said so.
    assert (after[(20, 900)]["bucket_s"], after[(20, 900)]["requested_bucket_s"]) == (3600, 900)
    assert after[(3, 900)]["bucket_s"] == 900
    resolutions = {b["resolution"] for b in after[(90, 86400)]["buckets"]}
    assert resolutions == {"raw", "hour", "day"}
    assert {b["resolution"] for b in before[(90, 86400)]["buckets"]} == {"raw"}
    assert after[(90, 86400)]["retention"]["raw_from"] is not None
    # Raw samples of a range past the raw window: what is left, and a note that says where the rest went.
    raw = bob_api.get(url, {"start": (now - timedelta(days=10)).isoformat(), "end": now.isoformat()}).json()
    assert "hourly and daily rollups" in raw["note"]
    assert min(s["ts"] for s in raw["samples"]) >= raw["retention"]["raw_from"]


@pytest.mark.django_db
def test_the_telemetry_api_refuses_ranges_too_long_or_in_too_many_buckets(fleet: list[Device], bob_api: APIClient) -> None:
    url = "/api/v1/devices/sensor-1/telemetry/"
    now = timezone.now()
    raw = bob_api.get(url, {"start": (now - timedelta(days=400)).isoformat(), "end": now.isoformat()})
    assert raw.status_code == 400 and "ask with bucket" in raw.json()["start"]
    decade = bob_api.get(url, {"start": (now - timedelta(days=3000)).isoformat(), "end": now.isoformat(), "bucket": 86400})
    assert decade.status_code == 200, decade.content
    assert bob_api.get(url, {"start": (now - timedelta(days=4000)).isoformat(), "end": now.isoformat(), "bucket": 86400}).status_code == 400


@pytest.mark.django_db
def test_the_beat_task_records_each_tables_disk_use_for_the_system_page(fleet: list[Device], alice_web: Any, settings: Any) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["telemetry-retention"]["task"] == "devices.tasks.apply_telemetry_retention"
    seed_history(fleet, timezone.now(), days=10)

    details = apply_telemetry_retention.apply().get()

    tables = {t["name"]: t for t in details["tables"]}
    assert tables["devices_telemetrysample"]["bytes"] > 0 and tables["devices_telemetryrollup"]["bytes"] > 0
    assert details["report"]["raw_rolled_up"] > 0
    page = alice_web.get("/system/").content.decode()
    assert "devices_telemetrysample" in page and "devices_telemetryrollup" in page and "audit_auditevent" in page
    assert "kept raw for 7 days" in page


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (Policy(-1, 90, 1830), "MESHHUB_TELEMETRY_RAW_DAYS must be 0 (forever)"),
        (Policy(30, 7, 1830), "MESHHUB_TELEMETRY_HOURLY_DAYS (7) must not be shorter than MESHHUB_TELEMETRY_RAW_DAYS (30)"),
        (Policy(7, 90, 30), "MESHHUB_TELEMETRY_DAILY_DAYS (30) must not be shorter"),
        (Policy(7, 90, 1830, batch=0), "MESHHUB_TELEMETRY_RETENTION_BATCH must be at least 1"),
    ],
)
def test_a_retention_policy_that_cannot_work_is_refused_with_its_reason(policy: Policy, problem: str) -> None:
    assert any(problem in p for p in policy.problems())


def test_zero_keeps_a_tier_forever() -> None:
    assert (Policy(0, 90, 1830).raw_from(NOW), Policy(0, 90, 1830).hourly_from(NOW)) == (None, None)
    assert Policy(7, 0, 1830).hourly_from(NOW) is None and Policy(7, 0, 1830).daily_from(NOW) is None
    assert Policy(7, 90, 0).daily_from(NOW) is None
    assert Policy(7, 90, 1830).raw_from(NOW) == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert Policy(7, 90, 1830).hourly_from(NOW) == datetime(2026, 9, 6, 0, 0, tzinfo=UTC)


def test_a_policy_that_cannot_work_stops_the_hub_at_start(settings: Any) -> None:
    settings.TELEMETRY_RAW_DAYS, settings.TELEMETRY_HOURLY_DAYS = 30, 7
    errors = [e for e in checks.run_checks() if e.id == "meshhub.E001"]
    assert [e.msg for e in errors] == ["MESHHUB_TELEMETRY_HOURLY_DAYS (7) must not be shorter than MESHHUB_TELEMETRY_RAW_DAYS (30)"]
