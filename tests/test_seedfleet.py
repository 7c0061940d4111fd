"""`manage.py seedfleet`: a fleet at scale for the benchmark, and the operator pages at 10,000 devices."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Max, Min
from django.test import Client

from audit.models import AuditEvent
from devices.models import Capability, Device, DeviceStatus, Group, TelemetrySample
from tests.factories import thermostat

pytestmark = pytest.mark.django_db

EXPECTED_CAPABILITIES = {
    "climate": {"temperature", "humidity"},
    "thermostat": {"temperature", "setpoint", "mode"},
    "relay": {"on", "power"},
    "dimmer": {"level"},
    "meter": {"power", "energy"},
}


def seedfleet(*args: str) -> str:
    out = io.StringIO()
    call_command("seedfleet", *args, stdout=out)
    return out.getvalue()


def test_it_seeds_devices_capabilities_groups_and_telemetry() -> None:
    said = seedfleet("--devices", "30", "--days", "2", "--interval", "3600", "--groups", "3")

    devices = list(Device.objects.filter(node_id__startswith="seed-").prefetch_related("capabilities"))
    assert len(devices) == 30
    assert {d.device_type for d in devices} == set(EXPECTED_CAPABILITIES)
    for device in devices:
        names = {c.name for c in device.capabilities.all()}
        assert names == EXPECTED_CAPABILITIES[device.device_type], device.node_id
        assert set(device.reported) == names, device.node_id
        assert device.metadata == {"seeded_by": "seedfleet", "enrolled": False}
        assert not device.certificates.exists()
    assert 0 < sum(d.online for d in devices) < 30  # some offline
    assert all(d.status in (DeviceStatus.PROVISIONED, DeviceStatus.REVOKED) for d in devices)
    assert Capability.objects.filter(device__in=devices, kind="sensor", writable=True).count() == 0

    # Two days at one sample an hour: 48 per capability, ending when the device was last seen.
    capabilities = Capability.objects.filter(device__in=devices).count()
    assert TelemetrySample.objects.count() == capabilities * 48
    per_capability = TelemetrySample.objects.values("device", "capability").annotate(n=Count("id"), first=Min("ts"), last=Max("ts"))
    seen = {d.pk: d.last_seen for d in devices}
    for row in per_capability:
        assert row["n"] == 48
        assert seen[row["device"]] - timedelta(hours=1) < row["last"] <= seen[row["device"]]
        assert row["last"] - row["first"] == timedelta(hours=47)
    # `reported` is the last sample's value.
    relay = next(d for d in devices if d.device_type == "relay")
    last_power = TelemetrySample.objects.filter(device=relay, capability="power").order_by("-ts").first()
    assert last_power is not None and last_power.value == relay.reported["power"]
    assert isinstance(relay.reported["on"], bool)

    assert sorted(Group.objects.values_list("name", flat=True)) == ["seed-group-000", "seed-group-001", "seed-group-002"]
    assert 0 < Device.objects.filter(node_id__startswith="seed-", groups__isnull=False).distinct().count() < 30

    event = AuditEvent.objects.get(action="fleet.seed")
    assert (event.actor_id, event.target_id, event.details["devices"], event.details["samples"]) == ("manage.py seedfleet", "seed-", 30, capabilities * 48)
    assert AuditEvent.objects.count() == 1  # one summary, not an event per row
    assert re.search(r"Seeded 30 devices with \d+ capabilities .* and [\d,]+ telemetry samples \(2 days, one every 3,600 s\) on \w+ in [\d.]+ s", said)


def test_it_refuses_to_seed_over_a_seeded_fleet_unless_told_to_replace() -> None:
    thermostat("sensor-1")
    seedfleet("--devices", "10", "--days", "1", "--interval", "7200", "--groups", "2")
    before = TelemetrySample.objects.count()

    with pytest.raises(CommandError, match=r"10 devices and 2 groups with prefix 'seed-' exist already; --replace"):
        seedfleet("--devices", "10", "--days", "1")
    assert Device.objects.filter(node_id__startswith="seed-").count() == 10
    assert TelemetrySample.objects.count() == before

    said = seedfleet("--devices", "12", "--days", "1", "--interval", "7200", "--groups", "1", "--seed", "2", "--replace")
    assert "replacing 10" in said
    assert Device.objects.filter(node_id__startswith="seed-").count() == 12
    assert list(Group.objects.values_list("name", flat=True)) == ["seed-group-000"]
    capabilities = Capability.objects.filter(device__node_id__startswith="seed-").count()
    assert TelemetrySample.objects.count() == capabilities * 12  # the old fleet's samples went with it
    assert Device.objects.filter(node_id="sensor-1").exists()  # not seeded: left alone

    # Another prefix is another fleet beside it.
    seedfleet("--devices", "5", "--days", "0", "--prefix", "lab-", "--groups", "0")
    assert Device.objects.filter(node_id__startswith="lab-").count() == 5
    assert TelemetrySample.objects.filter(device__node_id__startswith="lab-").count() == 0


def test_it_never_deletes_or_collides_with_what_it_did_not_make() -> None:
    """--prefix green beside a real greenhouse-sensor-3: refused, with or without --replace,
    and the real device and group stay (a --replace once deleted them with their history)."""
    real = thermostat("greenhouse-sensor-3")
    for args in (("--prefix", "green"), ("--prefix", "green", "--replace")):
        with pytest.raises(CommandError, match=r"devices that are not this prefix's seeded fleet have node ids starting with 'green' \(greenhouse-sensor-3…\)"):
            seedfleet("--devices", "3", "--days", "0", *args)
    assert Device.objects.filter(pk=real.pk).exists() and Device.objects.count() == 1

    Group.objects.create(name="lab-group-000", description="the real lab")
    with pytest.raises(CommandError, match="group 'lab-group-000' was not made by seedfleet"):
        seedfleet("--devices", "3", "--days", "0", "--prefix", "lab-", "--groups", "1")
    seedfleet("--devices", "3", "--days", "0", "--prefix", "lab-", "--groups", "0")
    seedfleet("--devices", "3", "--days", "0", "--prefix", "lab-", "--groups", "0", "--replace")
    assert Group.objects.filter(name="lab-group-000", description="the real lab").exists()
    assert Device.objects.filter(node_id__startswith="lab-").count() == 3
    # A shorter prefix is another fleet: it neither replaces the lab- one nor starts beside it.
    with pytest.raises(CommandError, match="not this prefix's seeded fleet have node ids starting with 'l'"):
        seedfleet("--devices", "3", "--days", "0", "--prefix", "l", "--groups", "0", "--replace")
    assert Device.objects.filter(node_id__startswith="lab-").count() == 3


def test_it_rejects_arguments_it_cannot_use() -> None:
    with pytest.raises(CommandError, match="--prefix must be"):
        seedfleet("--devices", "3", "--days", "0", "--prefix", "Seed_")
    with pytest.raises(CommandError, match="--devices must be at least 1"):
        seedfleet("--devices", "0", "--days", "1")
    with pytest.raises(CommandError, match="--interval must be at least 1 second"):
        seedfleet("--devices", "3", "--days", "1", "--interval", "0")
    assert not Device.objects.exists()


def test_the_default_interval_aims_at_a_million_samples() -> None:
    from devices.management.commands.seedfleet import default_interval

    assert default_interval(1, 20_000) == 1728  # 10,000 devices, 2 capabilities each: 50 samples per capability
    assert default_interval(2, 60) == 60  # never finer than a minute
    said = seedfleet("--devices", "20", "--days", "0.05")
    assert "one every 60 s" in said
    assert TelemetrySample.objects.count() == 40 * 72  # 0.05 days = 72 minutes


def test_the_operator_pages_answer_with_ten_thousand_devices(root_web: Client) -> None:
    """root_web: an admin (conftest), signed in through the session."""
    seedfleet("--devices", "10000", "--days", "0.25", "--interval", "21600")  # one sample per capability
    assert Device.objects.count() == 10_000 and TelemetrySample.objects.count() == 20_000

    first = root_web.get("/devices/")
    assert first.status_code == 200
    assert "page 1 of 200 (10000)" in first.content.decode()
    assert first.content.decode().count('<tr data-node="') == 50
    assert "page 2 of 200" in root_web.get("/devices/", {"page": "2"}).content.decode()
    last = root_web.get("/devices/", {"page": "200"}).content.decode()
    assert "page 200 of 200" in last
    assert re.findall(r'<tr data-node="([^"]+)"', last) == list(Device.objects.order_by("node_id").values_list("node_id", flat=True))[-50:]
    assert "page 200 of 200" in root_web.get("/devices/", {"page": "9999"}).content.decode()  # past the end: the last page

    filters: list[tuple[dict[str, str], Any]] = [
        ({"q": "relay"}, Device.objects.filter(node_id__icontains="relay")),
        ({"q": "warehouse"}, Device.objects.filter(name__icontains="warehouse")),
        ({"type": "dimmer"}, Device.objects.filter(device_type="dimmer")),
        ({"status": "revoked"}, Device.objects.filter(status="revoked")),
        ({"online": "no"}, Device.objects.filter(online=False)),
        ({"online": "yes", "type": "meter"}, Device.objects.filter(online=True, device_type="meter")),
        ({"group": "seed-group-007"}, Device.objects.filter(groups__name="seed-group-007")),
        ({"q": "thermostat", "online": "yes", "page": "3"}, Device.objects.filter(node_id__icontains="thermostat", online=True)),
    ]
    for params, expected in filters:
        answer = root_web.get("/devices/", params)
        assert answer.status_code == 200, params
        page = answer.content.decode()
        count = expected.count()
        assert count > 0, params
        shown = re.findall(r'<tr data-node="([^"]+)"', page)
        assert shown and set(shown) <= set(expected.values_list("node_id", flat=True)), params
        if count > 50:
            assert f"({count})" in page, params

    relay = Device.objects.filter(device_type="relay").order_by("node_id").first()
    assert relay is not None
    detail = root_web.get(f"/devices/{relay.node_id}/")
    assert detail.status_code == 200
    page = detail.content.decode()
    assert 'data-capability="on"' in page and 'data-capability="power"' in page
    assert "No active certificate" in page

    # Every other page, at this size, without a 5xx (and a full page of a big group).
    group = Group.objects.order_by("name").first()
    assert group is not None
    for path in ["/", "/enrollment/", "/certificates/", "/groups/", f"/groups/{group.pk}/", "/industrial/", "/system/", "/audit/", "/audit/snapshots/"]:
        assert root_web.get(path).status_code == 200, path
    assert root_web.get(f"/groups/{group.pk}/").content.decode().count('<tr data-node="') == 50


def test_the_device_page_shows_the_newest_audit_events_of_that_device(root_web: Client) -> None:
    from audit.services import Actor, record

    thermostat("sensor-1")
    thermostat("sensor-2")
    alice = Actor("user", "alice")
    for n in range(22):
        record(alice, f"device.step-{n:02d}", "allow", target_type="device", target_id="sensor-1")
    record(alice, "modbus.import", "allow", target_type="modbus", target_id="sensor-1")  # a PLC bridge's import names its node
    record(alice, "device.elsewhere", "allow", target_type="device", target_id="sensor-2")

    page = root_web.get("/devices/sensor-1/").content.decode()
    shown = re.findall(r"<td>(device\.step-\d+|modbus\.import|device\.elsewhere)</td>", page)
    assert shown == ["modbus.import", *[f"device.step-{n:02d}" for n in range(21, 2, -1)]]  # newest first, 20 of them
