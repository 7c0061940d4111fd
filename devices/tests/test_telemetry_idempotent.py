"""A report the device resends (its ack was lost, or the hub answered `unavailable`) is
stored once: one TelemetrySample per device, capability and ts (issue #14, item 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from devices import state
from devices.models import TelemetrySample
from tests.factories import thermostat

BEFORE = [("devices", "0004_signing_keys_to_hub")]
AFTER = [("devices", "0005_telemetry_sample_unique")]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_it_stores_a_resent_report_once_and_keeps_the_first_value() -> None:
    thermostat("sensor-1")
    state.apply_reports([state.StateReport("sensor-1", {"temperature": 20.5, "mode": "heat"}, T0)])
    # The same measurement again, in a batch with a new one and with itself twice.
    resent = state.StateReport("sensor-1", {"temperature": 20.5, "mode": "heat"}, T0)
    later = state.StateReport("sensor-1", {"temperature": 21.0}, T0 + timedelta(seconds=5))
    state.apply_reports([resent, later, resent])
    rows = TelemetrySample.objects.filter(device__node_id="sensor-1").order_by("ts", "capability")
    assert [(r.capability, r.ts, r.display_value) for r in rows] == [
        ("mode", T0, "heat"),
        ("temperature", T0, 20.5),
        ("temperature", T0 + timedelta(seconds=5), 21.0),
    ]


@pytest.fixture
def back_to_latest() -> Iterator[None]:
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_latest")
def test_the_migration_removes_stored_duplicates_and_keeps_the_first_of_each() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Device = apps.get_model("devices", "Device")
    Sample = apps.get_model("devices", "TelemetrySample")
    device = Device.objects.create(node_id="sensor-1", name="sensor-1", device_type="thermostat")
    first = Sample.objects.create(device=device, capability="temperature", ts=T0, value=20.5)
    Sample.objects.create(device=device, capability="temperature", ts=T0, value=20.5)  # a resent report, stored twice before
    Sample.objects.create(device=device, capability="temperature", ts=T0, value=99.0)
    other = Sample.objects.create(device=device, capability="temperature", ts=T0 + timedelta(seconds=5), value=21.0)
    kept_mode = Sample.objects.create(device=device, capability="mode", ts=T0, text="heat")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    remaining = apps.get_model("devices", "TelemetrySample").objects.order_by("pk")
    assert list(remaining.values_list("pk", flat=True)) == [first.pk, other.pk, kept_mode.pk]
