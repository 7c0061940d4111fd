"""The industrial bridge against a real pymodbus TCP server started by the test."""

from __future__ import annotations

import itertools
import json
import struct
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from devices.models import Capability, Command, Device, TelemetrySample
from industrial import codec, config, polling, writes
from industrial.models import ModbusBridge, ModbusPoint
from tests.modbus_server import ModbusTestServer, modbus_server_fixture  # noqa: F401

ADMIN = Actor("user", "root")
TYPES = ["u16", "i16", "u32", "i32", "f32", "f64"]
ORDERS = list(itertools.product(["big", "little"], ["big", "little"]))
SAMPLE = {"u16": 51234, "i16": -1234, "u32": 3_000_000_000, "i32": -2_000_000_000, "f32": -12.5, "f64": 123456.789012}


def bridge_doc(port: int, points: list[dict[str, Any]], node_id: str = "plc-line-1", **extra: Any) -> dict[str, Any]:
    return {
        "bridges": [
            {"node_id": node_id, "name": "Line 1", "host": "127.0.0.1", "port": port, "unit_id": 1, "timeout_s": 0.5, "retries": 0, "points": points, **extra}
        ]
    }


def import_points(port: int, points: list[dict[str, Any]], **extra: Any) -> ModbusBridge:
    config.import_document(ADMIN, bridge_doc(port, points, **extra))
    return ModbusBridge.objects.get(device__node_id="plc-line-1")


def poll(bridge: ModbusBridge) -> polling.PollResult:
    ModbusBridge.objects.filter(pk=bridge.pk).update(next_attempt_at=None)  # the test decides when to retry
    return polling.poll_bridge(bridge.pk)


# ---------------------------------------------------------------- request planning (pure)


def point(register: str, address: int, data_type: str, pk: int) -> ModbusPoint:
    return ModbusPoint(pk=pk, capability=f"p{pk}", register=register, address=address, data_type=data_type)


def test_contiguous_addresses_share_one_request_and_gaps_split() -> None:
    blocks = polling.plan_reads(
        [
            point("holding", 0, "f32", 1),
            point("holding", 2, "u16", 2),
            point("holding", 3, "f64", 3),
            point("holding", 9, "u16", 4),
            point("coil", 0, "bool", 5),
        ]
    )
    assert [(b.register, b.start, b.count, len(b.points)) for b in blocks] == [("coil", 0, 1, 1), ("holding", 0, 7, 3), ("holding", 9, 1, 1)]


def test_requests_stay_within_the_protocol_limits() -> None:
    registers = polling.plan_reads([point("holding", a, "u16", a + 1) for a in range(300)])
    assert [(b.start, b.count) for b in registers] == [(0, 125), (125, 125), (250, 50)]
    bits = polling.plan_reads([point("coil", a, "bool", a + 1) for a in range(4500)])
    assert [b.count for b in bits] == [2000, 2000, 500]
    # A wide value never straddles two requests.
    wide = polling.plan_reads([point("holding", 4 * a, "f64", a + 1) for a in range(40)])
    assert all(b.count <= 125 and b.count % 4 == 0 for b in wide)


# ---------------------------------------------------------------- configuration


@pytest.mark.django_db
def test_import_creates_a_plc_device_whose_capabilities_are_its_points(modbus_server: ModbusTestServer, admin_api: APIClient) -> None:
    doc = bridge_doc(
        modbus_server.port,
        [
            {"capability": "oven_temp", "register": "holding", "address": 0, "data_type": "f32", "unit": "°C", "min": -50, "max": 400, "deadband": 0.1},
            {"capability": "speed", "register": "holding", "address": 10, "data_type": "u16", "writable": True, "min": 0, "max": 3000},
            {"capability": "running", "register": "coil", "address": 0, "data_type": "bool", "writable": True},
        ],
    )
    answer = admin_api.post("/api/v1/modbus/import/", doc, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"bridges_created": 1, "bridges_updated": 0, "points": 3, "points_removed": 0}
    device = admin_api.get("/api/v1/devices/plc-line-1/").json()
    assert device["device_type"] == "plc"
    caps = {c["name"]: c for c in device["capabilities"]}
    assert caps["oven_temp"]["kind"] == "sensor" and caps["oven_temp"]["value_type"] == "float" and caps["oven_temp"]["max"] == 400
    assert caps["speed"]["kind"] == "actuator" and caps["speed"]["writable"] and caps["speed"]["value_type"] == "int"
    assert caps["running"]["value_type"] == "bool"
    assert PeriodicTask.objects.get(task="industrial.tasks.poll_bridge").args == json.dumps([ModbusBridge.objects.get().pk])

    # Idempotent by node_id; a point left out goes, with its capability.
    doc["bridges"][0]["points"] = doc["bridges"][0]["points"][:2]
    answer = admin_api.post("/api/v1/modbus/import/", doc, format="json")
    assert answer.json() == {"bridges_created": 0, "bridges_updated": 1, "points": 2, "points_removed": 1}
    assert sorted(Capability.objects.filter(device__node_id="plc-line-1").values_list("name", flat=True)) == ["oven_temp", "speed"]
    assert Device.objects.filter(node_id="plc-line-1").count() == 1
    assert admin_api.get("/api/v1/modbus/export/").json()["bridges"][0]["points"][0]["capability"] == "oven_temp"
    assert admin_api.get("/api/v1/modbus/bridges/plc-line-1/").json()["points"][1]["capability"] == "speed"


@pytest.mark.django_db
def test_a_bad_document_writes_nothing_and_names_every_problem(admin_api: APIClient, alice_api: APIClient) -> None:
    Device.objects.create(node_id="thermo-1", device_type="thermostat")
    doc = {
        "bridges": [
            {"node_id": "plc-a", "host": "10.0.0.20", "points": [{"capability": "ok", "register": "holding", "address": 0, "data_type": "u16"}]},
            {
                "node_id": "thermo-1",
                "host": "10.0.0.21",
                "port": 70000,
                "points": [
                    {"capability": "a", "register": "coil", "address": 0, "data_type": "f32"},
                    {"capability": "b", "register": "input", "address": 0, "data_type": "u16", "writable": True},
                    {"capability": "c", "register": "holding", "address": 65535, "data_type": "u32"},
                    {"capability": "d", "register": "holding", "address": 0, "data_type": "u16", "scale": 0, "min": 5, "max": 1},
                    {"capability": "d", "register": "holdings", "address": 1, "data_type": "u16"},
                ],
            },
        ]
    }
    answer = admin_api.post("/api/v1/modbus/import/", doc, format="json")
    assert answer.status_code == 400
    errors = "\n".join(answer.json()["errors"])
    for expected in [
        "bridges[1].port: 70000 is outside 1..65535",
        "bridges[1].points[0].data_type: a coil holds one bit",
        "bridges[1].points[1].writable: a input cannot be written",
        "bridges[1].points[2].address: a u32 at 65535 would run past register 65535",
        "bridges[1].points[3].scale: must not be 0",
        "bridges[1].points[3].min: min 5 is above max 1",
        "bridges[1].points[4].register: 'holdings' is not one of",
        "bridges[1].node_id: 'thermo-1' is already a device of type 'thermostat'",
    ]:
        assert expected in errors, errors
    assert not ModbusBridge.objects.exists() and not Device.objects.filter(node_id="plc-a").exists()
    assert AuditEvent.objects.filter(action="modbus.import", decision="deny").exists()
    assert admin_api.options("/api/v1/modbus/import/").status_code == 200
    # Configuration is an admin matter.
    assert alice_api.post("/api/v1/modbus/import/", {"bridges": []}, format="json").status_code == 403


@pytest.mark.django_db
def test_the_management_command_imports_and_exports(modbus_server: ModbusTestServer, tmp_path: Any, capsys: Any) -> None:
    source = tmp_path / "plc.json"
    source.write_text(
        json.dumps(bridge_doc(modbus_server.port, [{"capability": "level", "register": "input", "address": 3, "data_type": "i16", "scale": 0.5}]))
    )
    call_command("modbus", "import", str(source))
    call_command("modbus", "export", "--output", str(tmp_path / "out.json"))
    exported = json.loads((tmp_path / "out.json").read_text())
    assert exported["bridges"][0]["points"][0] == {
        "capability": "level",
        "register": "input",
        "address": 3,
        "data_type": "i16",
        "scale": 0.5,
        "offset": 0.0,
        "unit": "",
        "min": None,
        "max": None,
        "writable": False,
        "deadband": 0.0,
    }
    call_command("modbus", "import", str(tmp_path / "out.json"))  # an export imports back unchanged
    assert ModbusPoint.objects.count() == 1
    (tmp_path / "bad.json").write_text('{"bridges": [')
    with pytest.raises(CommandError, match="is not JSON"):
        call_command("modbus", "import", str(tmp_path / "bad.json"))


# ---------------------------------------------------------------- polling


@pytest.mark.django_db
def test_every_type_in_every_byte_and_word_order_with_scale_and_offset(modbus_server: ModbusTestServer) -> None:
    points = []
    expected = {}
    address = 0
    for data_type, (byte_order, word_order) in itertools.product(TYPES, ORDERS):
        name = f"{data_type}_{byte_order[0]}{word_order[0]}"
        raw = SAMPLE[data_type]
        modbus_server.set_holding(address, codec.encode(raw, data_type, byte_order=byte_order, word_order=word_order))
        scaled = {"scale": 0.1, "offset": -5.0} if data_type in ("u16", "i32") else {}
        points.append(
            {
                "capability": name,
                "register": "holding",
                "address": address,
                "data_type": data_type,
                "byte_order": byte_order,
                "word_order": word_order,
                **scaled,
            }
        )
        expected[name] = raw * 0.1 - 5.0 if scaled else raw
        address += codec.register_count(data_type) + 1  # a gap: several requests
    bridge = import_points(modbus_server.port, points)
    result = poll(bridge)
    assert not result.bad and not result.stale, (result.bad, result.stale)
    reported = Device.objects.get(node_id="plc-line-1").reported
    for name, value in expected.items():
        if name.startswith("f32"):
            assert reported[name] == struct.unpack(">f", struct.pack(">f", value))[0], name
        else:
            assert reported[name] == pytest.approx(value, rel=1e-9), name
    assert TelemetrySample.objects.filter(device__node_id="plc-line-1").count() == len(expected)
    assert Device.objects.get(node_id="plc-line-1").online


@pytest.mark.django_db
def test_coils_and_discrete_inputs(modbus_server: ModbusTestServer) -> None:
    modbus_server.set_coils(5, [True, False, True])
    modbus_server.set_discrete(100, [False, True])
    bridge = import_points(
        modbus_server.port,
        [
            {"capability": "pump", "register": "coil", "address": 5, "data_type": "bool"},
            {"capability": "valve", "register": "coil", "address": 6, "data_type": "bool"},
            {"capability": "door", "register": "discrete_input", "address": 101, "data_type": "bool"},
        ],
    )
    assert poll(bridge).requests == 2  # coils 5 and 6 in one request
    reported = Device.objects.get(node_id="plc-line-1").reported
    assert reported == {"pump": True, "valve": False, "door": True}


@pytest.mark.django_db
def test_an_exception_response_marks_those_points_bad_and_the_rest_stay_good(modbus_server: ModbusTestServer) -> None:
    modbus_server.set_holding(0, [100])
    modbus_server.set_input(50, [7])
    modbus_server.fail_reads("holding", 0, 1, exception_code=2)
    bridge = import_points(
        modbus_server.port,
        [
            {"capability": "setpoint", "register": "holding", "address": 0, "data_type": "u16"},
            {"capability": "level", "register": "input", "address": 50, "data_type": "u16"},
        ],
    )
    result = poll(bridge)
    assert result.bad == {"setpoint": "Modbus exception 2 (illegal data address) for reading 1 holding from 0"}
    setpoint = ModbusPoint.objects.get(capability="setpoint")
    assert (setpoint.quality, setpoint.quality_reason) == ("bad", result.bad["setpoint"])
    assert ModbusPoint.objects.get(capability="level").quality == "good"
    device = Device.objects.get(node_id="plc-line-1")
    assert device.reported == {"level": 7}
    assert device.metadata["points"]["setpoint"] == {"quality": "bad", "reason": result.bad["setpoint"]}


@pytest.mark.django_db
def test_nan_and_out_of_range_values_are_bad_with_the_reason(modbus_server: ModbusTestServer) -> None:
    modbus_server.set_holding(0, [0x7FC0, 0x0000])  # f32 NaN
    modbus_server.set_holding(2, [500])
    bridge = import_points(
        modbus_server.port,
        [
            {"capability": "flow", "register": "holding", "address": 0, "data_type": "f32"},
            {"capability": "pressure", "register": "holding", "address": 2, "data_type": "u16", "max": 400},
        ],
    )
    result = poll(bridge)
    assert "NaN" in result.bad["flow"]
    assert result.bad["pressure"] == "value 500 is above the maximum 400"
    assert Device.objects.get(node_id="plc-line-1").reported == {}


@pytest.mark.django_db
def test_the_server_going_away_marks_points_stale_and_they_recover(modbus_server: ModbusTestServer) -> None:
    modbus_server.set_holding(0, [11, 22])
    bridge = import_points(
        modbus_server.port,
        [
            {"capability": "a", "register": "holding", "address": 0, "data_type": "u16"},
            {"capability": "b", "register": "holding", "address": 1, "data_type": "u16"},
        ],
    )
    assert poll(bridge).read_ok == 2
    modbus_server.stop()
    result = poll(bridge)
    assert set(result.stale) == {"a", "b"} and "127.0.0.1" in result.stale["a"], result.stale
    assert {p.quality for p in ModbusPoint.objects.all()} == {"stale"}
    after = ModbusBridge.objects.get(pk=bridge.pk)
    assert after.consecutive_failures == 1 and after.next_attempt_at is not None and after.last_error
    assert not Device.objects.get(node_id="plc-line-1").online
    # Backing off: the next tick is skipped until next_attempt_at.
    assert polling.poll_bridge(bridge.pk).skipped
    modbus_server.set_holding(0, [12, 22])
    modbus_server.restart()
    result = poll(bridge)
    assert result.read_ok == 2 and not result.stale
    assert {p.quality for p in ModbusPoint.objects.all()} == {"good"}
    device = Device.objects.get(node_id="plc-line-1")
    assert device.online and device.reported == {"a": 12, "b": 22}
    assert ModbusBridge.objects.get(pk=bridge.pk).consecutive_failures == 0


@pytest.mark.django_db
def test_values_within_the_deadband_are_not_reported_again(modbus_server: ModbusTestServer) -> None:
    modbus_server.set_holding(0, [200])
    bridge = import_points(modbus_server.port, [{"capability": "temp", "register": "holding", "address": 0, "data_type": "i16", "scale": 0.1, "deadband": 0.5}])
    poll(bridge)
    modbus_server.set_holding(0, [204])  # 20.4: within 0.5 of 20.0
    poll(bridge)
    assert TelemetrySample.objects.filter(capability="temp").count() == 1
    assert ModbusBridge.objects.get().live["temp"] == pytest.approx(20.4)  # the live value moves; the reported one does not
    assert Device.objects.get(node_id="plc-line-1").reported["temp"] == pytest.approx(20.0)
    modbus_server.set_holding(0, [206])  # 20.6: out of the band
    poll(bridge)
    assert list(TelemetrySample.objects.filter(capability="temp").order_by("id").values_list("value", flat=True)) == [pytest.approx(20.0), pytest.approx(20.6)]


@pytest.mark.django_db
def test_two_polls_of_one_bridge_never_overlap(modbus_server: ModbusTestServer) -> None:
    bridge = import_points(modbus_server.port, [{"capability": "a", "register": "holding", "address": 0, "data_type": "u16"}])
    ModbusBridge.objects.filter(pk=bridge.pk).update(lease_until=timezone.now() + timedelta(seconds=30))  # a poll in flight elsewhere
    assert polling.poll_bridge(bridge.pk).skipped
    assert ModbusPoint.objects.get().quality == "unknown"


# ---------------------------------------------------------------- writes


@pytest.fixture
def plc(modbus_server: ModbusTestServer) -> ModbusBridge:
    return import_points(
        modbus_server.port,
        [
            {"capability": "speed", "register": "holding", "address": 10, "data_type": "f32", "word_order": "little", "writable": True, "min": 0, "max": 3000},
            {
                "capability": "level",
                "register": "holding",
                "address": 20,
                "data_type": "u16",
                "scale": 0.1,
                "offset": -10,
                "writable": True,
                "min": -10,
                "max": 100,
            },
            {"capability": "pump", "register": "coil", "address": 3, "data_type": "bool", "writable": True},
            {"capability": "pressure", "register": "holding", "address": 30, "data_type": "u16"},
        ],
    )


@pytest.fixture
def eager_celery() -> Any:
    from hub.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False


@pytest.mark.django_db
def test_a_write_through_the_api_is_confirmed_by_read_back(
    plc: ModbusBridge, modbus_server: ModbusTestServer, alice_api: APIClient, eager_celery: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        answer = alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "level", "value": 11.5}, format="json")
    assert answer.status_code == 201, answer.content
    command = alice_api.get(f"/api/v1/commands/{answer.json()['id']}/").json()
    assert command["status"] == "succeeded", command
    assert command["result"]["value"] == pytest.approx(11.5)
    assert modbus_server.get_holding(20) == [215]  # (11.5 + 10) / 0.1
    assert Device.objects.get(node_id="plc-line-1").reported["level"] == pytest.approx(11.5)
    write = AuditEvent.objects.get(action="modbus.write", decision="allow")
    assert write.details["raw"] == [215]

    with django_capture_on_commit_callbacks(execute=True):
        alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "speed", "value": 1234.5}, format="json")
        alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "toggle", "capability": "pump"}, format="json")
    assert codec.decode(modbus_server.get_holding(10, 2), "f32", word_order="little") == 1234.5
    assert modbus_server.get_coils(3) == [True]
    assert set(Command.objects.values_list("status", flat=True)) == {"succeeded"}


@pytest.mark.django_db
def test_writes_outside_the_allow_list_are_refused_and_audited(plc: ModbusBridge, modbus_server: ModbusTestServer, alice_api: APIClient) -> None:
    # Not writable and out of range: send_command() refuses before anything is queued.
    answer = alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "pressure", "value": 5}, format="json")
    assert answer.status_code == 400
    assert answer.json()["reason"] == "cannot set sensor capability 'pressure': sensors are read-only"
    answer = alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "level", "value": 500}, format="json")
    assert answer.status_code == 400 and answer.json()["field"] == "value"
    assert AuditEvent.objects.filter(action="command.create", decision="deny").count() == 2
    # The point itself is the allow-list: a capability someone marked writable by hand
    # does not make the register writable.
    Capability.objects.filter(device__node_id="plc-line-1", name="pressure").update(kind="actuator", writable=True)
    command = Command.objects.create(
        device=Device.objects.get(node_id="plc-line-1"), action="set", capability="pressure", value=5, expires_at=timezone.now() + timedelta(minutes=5)
    )
    assert writes.execute_command(str(command.pk)).startswith("failed")
    command.refresh_from_db()
    assert command.status == "failed" and "not writable" in command.result["reason"]
    assert modbus_server.get_holding(30) == [0]
    denied = AuditEvent.objects.get(action="modbus.write", decision="deny")
    assert denied.details["outcome"] == "refused"
    # At most once: a command that is no longer pending is never written again.
    assert writes.execute_command(str(command.pk)) == "not pending"


@pytest.mark.django_db
def test_a_write_the_plc_refuses_fails_with_the_exception(plc: ModbusBridge, modbus_server: ModbusTestServer) -> None:
    modbus_server.fail_writes("holding", 20, 1, exception_code=4)
    command = Command.objects.create(
        device=Device.objects.get(node_id="plc-line-1"), action="set", capability="level", value=20, expires_at=timezone.now() + timedelta(minutes=5)
    )
    writes.execute_command(str(command.pk))
    command.refresh_from_db()
    assert command.status == "failed"
    assert command.result["reason"] == "Modbus exception 4 (server device failure) for writing 1 holding at 20"
    assert AuditEvent.objects.get(action="modbus.write").details["outcome"] == "failed"


@pytest.mark.django_db
def test_a_plc_polled_rarely_is_not_taken_offline_by_the_presence_watchdog(modbus_server: ModbusTestServer) -> None:
    from devices import state

    bridge = import_points(modbus_server.port, [{"capability": "a", "register": "holding", "address": 0, "data_type": "u16"}], poll_interval_s=600)
    poll(bridge)
    Device.objects.filter(node_id="plc-line-1").update(last_seen=timezone.now() - timedelta(minutes=5))
    assert "plc-line-1" not in state.mark_silent_offline(95)
    assert Device.objects.get(node_id="plc-line-1").online


# ---------------------------------------------------------------- admin


@pytest.mark.django_db
def test_the_admin_tests_a_connection_and_audits_it(modbus_server: ModbusTestServer, django_user_model: Any) -> None:
    from django.test import Client
    from django.urls import reverse

    bridge = import_points(modbus_server.port, [{"capability": "a", "register": "holding", "address": 0, "data_type": "u16"}])
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password="root-Pass-123"))
    url = reverse("admin:industrial_modbusbridge_changelist")
    answer = client.post(url, {"action": "test_connection", "_selected_action": [bridge.pk]}, follow=True)
    assert [str(m) for m in answer.context["messages"]] == ["plc-line-1: connected; read 1 holding from 0"]
    modbus_server.stop()
    answer = client.post(url, {"action": "test_connection", "_selected_action": [bridge.pk]}, follow=True)
    assert str(next(iter(answer.context["messages"]))).startswith("plc-line-1: cannot connect to 127.0.0.1")
    assert list(AuditEvent.objects.filter(action="modbus.test").order_by("seq").values_list("decision", flat=True)) == ["allow", "deny"]
    # The change page shows the points with their quality, and saving reschedules.
    page = client.get(reverse("admin:industrial_modbusbridge_change", args=[bridge.pk]))
    assert page.status_code == 200 and b"quality" in page.content.lower()


@pytest.mark.django_db
def test_a_peer_answering_garbage_marks_points_stale_not_a_crash() -> None:
    """Something that is not a PLC on the configured port: it answers every request with junk."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                while not stop.is_set():
                    try:
                        if not conn.recv(260):
                            break
                    except TimeoutError:
                        continue
                    conn.sendall(b"\x00\x01garbage-not-modbus\xff" * 3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        bridge = import_points(listener.getsockname()[1], [{"capability": "a", "register": "holding", "address": 0, "data_type": "u16"}])
        result = poll(bridge)
        assert set(result.stale) == {"a"}, result
        assert ModbusPoint.objects.get().quality == "stale"
        assert ModbusBridge.objects.get().last_error
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.django_db
def test_the_allow_list_guard_refuses_before_a_command_is_queued_when_capability_and_point_drift(
    plc: ModbusBridge, modbus_server: ModbusTestServer, alice_api: APIClient
) -> None:
    """A capability marked writable by hand (or left behind by an old import) does not
    open the register: the `plc.allow_list` guard refuses at level interlock, nothing queued."""
    Capability.objects.filter(device__node_id="plc-line-1", name="pressure").update(kind="actuator", writable=True)
    answer = alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "pressure", "value": 5}, format="json")
    assert answer.status_code == 400
    assert answer.json() == {
        "field": "capability",
        "level": "interlock",
        "guard": "plc.allow_list",
        "reason": "point 'pressure' is not writable (not on the PLC allow-list)",
    }
    # The point's range is the authority too, whatever the capability says.
    Capability.objects.filter(device__node_id="plc-line-1", name="level").update(max_value=1000)
    answer = alice_api.post("/api/v1/devices/plc-line-1/commands/", {"action": "set", "capability": "level", "value": 500}, format="json")
    assert (answer.status_code, answer.json()["level"], answer.json()["reason"]) == (400, "interlock", "value 500 is above the maximum 100")
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="command.create", decision="deny", details__guard="plc.allow_list").count() == 2
    assert modbus_server.get_holding(30) == [0]
