"""The device registry through the REST API: listing, detail, desired state, telemetry."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from devices.models import Command, Device, DeviceStatus, TelemetrySample
from devices.retention import floor_to
from tests.factories import DeviceFactory, GroupFactory, dimmer, relay, thermostat

pytestmark = pytest.mark.django_db


def test_it_lists_devices_with_filters_search_and_pagination(bob_api: APIClient) -> None:
    thermostat("sensor-1", online=True)
    thermostat("sensor-2")
    relay("relay-1", name="Porch light")
    DeviceFactory(node_id="door-1", device_type="door", status=DeviceStatus.UNPROVISIONED)
    GroupFactory(name="porch").members.add(Device.objects.get(node_id="relay-1"))

    everything = bob_api.get("/api/v1/devices/").json()
    assert everything["count"] == 4
    assert [d["node_id"] for d in everything["results"]] == ["door-1", "relay-1", "sensor-1", "sensor-2"]

    def node_ids(query: str) -> list[str]:
        response = bob_api.get(f"/api/v1/devices/?{query}")
        assert response.status_code == 200, response.content
        return [d["node_id"] for d in response.json()["results"]]

    assert node_ids("device_type=thermostat") == ["sensor-1", "sensor-2"]
    assert node_ids("online=true") == ["sensor-1"]
    assert node_ids("status=unprovisioned") == ["door-1"]
    assert node_ids("group=porch") == ["relay-1"]
    assert node_ids("search=porch") == ["relay-1"]
    assert node_ids("limit=2&offset=2") == ["sensor-1", "sensor-2"]
    assert node_ids("ordering=-node_id&limit=1") == ["sensor-2"]


def test_it_rejects_an_unknown_filter_value(bob_api: APIClient) -> None:
    response = bob_api.get("/api/v1/devices/?status=melted")
    assert response.status_code == 400
    assert "status" in response.json()


def test_it_shows_a_device_with_capabilities_and_state(bob_api: APIClient) -> None:
    device = thermostat("sensor-1", online=True, reported={"temperature": 20.5}, desired={"setpoint": 21})
    GroupFactory(name="upstairs").members.add(device)
    body = bob_api.get("/api/v1/devices/sensor-1/").json()
    assert body["online"] is True
    assert body["reported"] == {"temperature": 20.5} and body["desired"] == {"setpoint": 21}
    assert body["groups"] == ["upstairs"]
    setpoint = next(c for c in body["capabilities"] if c["name"] == "setpoint")
    assert setpoint == {
        "name": "setpoint",
        "kind": "actuator",
        "value_type": "float",
        "unit": "°C",
        "min": 5.0,
        "max": 35.0,
        "enum_values": [],
        "writable": True,
        "aliases": [],
    }
    caps = bob_api.get("/api/v1/devices/sensor-1/capabilities/").json()
    assert [c["name"] for c in caps] == ["mode", "setpoint", "temperature"]
    assert bob_api.get("/api/v1/devices/nobody/").status_code == 404


def test_it_commands_the_delta_when_desired_state_changes(alice_api: APIClient) -> None:
    thermostat("sensor-1", reported={"setpoint": 20.0, "mode": "heat"})
    response = alice_api.patch("/api/v1/devices/sensor-1/desired/", {"setpoint": 22.5, "mode": "heat"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["desired"] == {"setpoint": 22.5, "mode": "heat"}
    # mode already is what is desired: only the setpoint needs a command.
    assert [(c["capability"], c["value"]) for c in body["commands"]] == [("setpoint", 22.5)]
    assert Device.objects.get(node_id="sensor-1").desired == {"setpoint": 22.5, "mode": "heat"}

    cleared = alice_api.patch("/api/v1/devices/sensor-1/desired/", {"mode": None}, format="json").json()
    assert cleared["desired"] == {"setpoint": 22.5} and cleared["commands"] == []
    state = alice_api.get("/api/v1/devices/sensor-1/desired/").json()
    assert state == {"reported": {"setpoint": 20.0, "mode": "heat"}, "desired": {"setpoint": 22.5}}


def test_it_rejects_desired_state_as_a_whole_when_one_key_is_bad(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    response = alice_api.patch("/api/v1/devices/sensor-1/desired/", {"setpoint": 22, "mode": "cool", "temperature": 3}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "mode": "value 'cool' is not one of off, heat, auto for capability 'mode'",
        "temperature": "cannot set sensor capability 'temperature': sensors are read-only",
    }
    assert Device.objects.get(node_id="sensor-1").desired == {}
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="device.desired", decision="deny").exists()


def test_it_refuses_desired_state_to_bob(bob_api: APIClient) -> None:
    thermostat("sensor-1")
    assert bob_api.patch("/api/v1/devices/sensor-1/desired/", {"setpoint": 22}, format="json").status_code == 403


def _samples(device: Device, start: datetime, values: list[float], step_s: int = 30, capability: str = "temperature") -> None:
    TelemetrySample.objects.bulk_create(
        TelemetrySample(device=device, capability=capability, ts=start + timedelta(seconds=i * step_s), value=v) for i, v in enumerate(values)
    )


def test_it_returns_raw_telemetry_for_a_range(bob_api: APIClient) -> None:
    device = thermostat("sensor-1")
    start = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    _samples(device, start, [20.0, 20.5, 21.0, 21.5])
    response = bob_api.get(
        "/api/v1/devices/sensor-1/telemetry/", {"capability": "temperature", "start": start.isoformat(), "end": (start + timedelta(seconds=90)).isoformat()}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert [s["value"] for s in body["samples"]] == [20.0, 20.5, 21.0]
    assert body["truncated"] is False


def test_it_downsamples_telemetry_into_buckets(bob_api: APIClient) -> None:
    device = thermostat("sensor-1")
    start = floor_to(timezone.now() - timedelta(hours=2), 3600)  # within the raw window: any bucket width
    _samples(device, start, [20.0, 22.0, 24.0, 26.0, 10.0, 30.0])  # 30 s apart: three 60 s buckets
    params = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "bucket": 60}
    body = bob_api.get("/api/v1/devices/sensor-1/telemetry/", params).json()
    buckets = [(b["ts"], b["avg"], b["min"], b["max"], b["count"], b["resolution"]) for b in body["buckets"]]
    minute = [(start + timedelta(minutes=k)).isoformat().replace("+00:00", "Z") for k in range(3)]
    assert buckets == [
        (minute[0], 21.0, 20.0, 22.0, 2, "raw"),
        (minute[1], 25.0, 24.0, 26.0, 2, "raw"),
        (minute[2], 20.0, 10.0, 30.0, 2, "raw"),
    ]
    assert (body["bucket_s"], body["requested_bucket_s"]) == (60, 60)


def test_it_exports_telemetry_as_csv(bob_api: APIClient) -> None:
    device = thermostat("sensor-1")
    start = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    _samples(device, start, [20.0, 20.5])
    response = bob_api.get(
        "/api/v1/devices/sensor-1/telemetry/", {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), "format": "csv"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="sensor-1-telemetry.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows == [["ts", "capability", "value"], ["2026-11-24T12:00:00+00:00", "temperature", "20.0"], ["2026-11-24T12:00:30+00:00", "temperature", "20.5"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-11-25T00:00:00Z", "end": "2026-11-24T00:00:00Z"}, "start"),
        ({"bucket": "5"}, "bucket"),
        ({"bucket": "often"}, "bucket"),
        ({"capability": "humidity"}, "capability"),
    ],
)
def test_it_rejects_bad_telemetry_queries(bob_api: APIClient, params: dict[str, str], field: str) -> None:
    thermostat("sensor-1")
    response = bob_api.get("/api/v1/devices/sensor-1/telemetry/", params)
    assert response.status_code == 400
    assert field in response.json()


def test_it_manages_groups_with_admin_scope(admin_api: APIClient, alice_api: APIClient) -> None:
    relay("relay-1")
    dimmer("dimmer-1")
    created = admin_api.post("/api/v1/groups/", {"name": "porch", "members": ["relay-1"]}, format="json")
    assert created.status_code == 201, created.content
    group_id = created.json()["id"]
    updated = admin_api.patch(f"/api/v1/groups/{group_id}/", {"members": ["relay-1", "dimmer-1"]}, format="json")
    assert sorted(updated.json()["members"]) == ["dimmer-1", "relay-1"]
    bad = admin_api.post("/api/v1/groups/", {"name": "ghosts", "members": ["ghost-9"]}, format="json")
    assert bad.status_code == 400 and "members" in bad.json()
    assert alice_api.post("/api/v1/groups/", {"name": "mine"}, format="json").status_code == 403
    assert alice_api.get(f"/api/v1/groups/{group_id}/").json()["name"] == "porch"
    assert admin_api.delete(f"/api/v1/groups/{group_id}/").status_code == 204
    assert AuditEvent.objects.filter(action="api.group.destroy", decision="allow").exists()
    assert AuditEvent.objects.filter(action="api.group.create", decision="deny", reason="missing scope 'admin'").exists()


def test_it_pages_whatever_numbers_the_query_string_holds(admin_api: APIClient) -> None:
    """Numbers past what a database LIMIT/OFFSET holds were a 500 (found by schemathesis)."""
    thermostat("sensor-1")
    huge = "9699000479345157378726309134336"
    for url in ("/api/v1/devices/", "/api/v1/enrollments/", "/api/v1/certificates/", "/api/v1/commands/", "/api/v1/audit/"):
        answer = admin_api.get(url, {"limit": huge, "offset": "0"})
        assert answer.status_code == 200, (url, answer.content[:200])
        assert admin_api.get(url, {"limit": "1", "offset": huge}).json()["results"] == [], url
    assert [d["node_id"] for d in admin_api.get("/api/v1/devices/", {"limit": huge}).json()["results"]] == ["sensor-1"]
