"""Clocks and anti-replay in both directions (issue #14, items 1 and 3): devices whose clock
is minutes off, through the real gateway over real mTLS; and the real agent against a
scripted hub that replays, reorders and delays its own frames."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from devices import identity
from devices.models import Command, Device, TelemetrySample
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from firmware.agent.core.agent import Agent
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES
from hub.mesh.gateway import mesh_context
from tests.mesh_helpers import running_enrollment_listener, wait_for
from tests.test_gateway import RawDevice, enroll_device, listeners, raw

pytestmark = pytest.mark.django_db(transaction=True)

__all__ = ["listeners", "raw"]  # fixtures shared with test_gateway

MINUTES = 60_000


def hub_now_ms() -> int:
    return int(time.time() * 1000)


class SkewedAgent:
    """The real agent in a thread, on a device whose clock is `offset_ms` off."""

    def __init__(self, state_dir: Path, offset_ms: int, profile: str = "thermostat") -> None:
        self.stop = threading.Event()
        port = agent_port.SkewedPort(offset_ms)
        self.agent = Agent(port, str(state_dir), PROFILES[profile], VirtualHardware(PROFILES[profile], seed=1), report_s=0.2)
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop.is_set,), daemon=True)

    def __enter__(self) -> Agent:
        self.thread.start()
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


@pytest.mark.parametrize("offset_ms", [-4 * MINUTES, 4 * MINUTES, -6 * MINUTES, 6 * MINUTES])
def test_an_agent_whose_clock_is_minutes_off_follows_the_hubs_clock(listeners: tuple[Any, Any], tmp_path: Path, alice_api: APIClient, offset_ms: int) -> None:
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    with SkewedAgent(state_dir, offset_ms) as agent:
        wait_for(lambda: agent.sessions >= 1 and agent.acked_reports >= 3, timeout_s=20)
        # Reports carry the hub's time, not the device's wrong clock.
        received_by = timezone.now()
        samples = list(TelemetrySample.objects.filter(device__node_id="sensor-1", capability="temperature"))
        assert samples
        for sample in samples:
            assert abs(sample.ts - received_by) < timedelta(seconds=60), (sample.ts, received_by)
        assert abs(agent.clock_offset_ms + offset_ms) < 60_000, "the agent learnt the hub's clock from welcome"
        session = AuditEvent.objects.filter(action="mesh.session", decision="allow", target_id="sensor-1").latest("seq")
        assert abs(session.details["clock_offset_ms"]) < 60_000, "the hub measured no offset: the agent stamps in hub time"

        created = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 21.5}, format="json")
        assert created.status_code == 201, created.content
        wait_for(lambda: Command.objects.get(pk=created.json()["id"]).status == "succeeded", timeout_s=20)
        assert agent.hardware.values["setpoint"] == 21.5
        assert agent.refused == 0, "the agent refused none of the hub's frames"


class UncorrectedDevice(RawDevice):
    """Third-party firmware that cannot set its clock: every issued_at and ts is `offset_ms` off."""

    def __init__(self, state_dir: Path, port: int, offset_ms: int) -> None:
        super().__init__(state_dir, port)
        self.offset_ms = offset_ms

    def frame(self, kind: str, body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        return super().frame(kind, body, **{"issued_at": hub_now_ms() + self.offset_ms, **overrides})


@pytest.mark.parametrize("offset_ms", [-4 * MINUTES, 4 * MINUTES])
def test_a_device_that_cannot_set_its_clock_works_within_the_skew(listeners: tuple[Any, Any], tmp_path: Path, offset_ms: int) -> None:
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    device = UncorrectedDevice(state_dir, listeners[1].port, offset_ms)
    try:
        device.hello()  # ttl 30 s, like every frame of the agent
        for value in (20.5, 21.0, 21.5):
            device.send(device.frame("state", {"values": {"temperature": value}, "ts": hub_now_ms() + offset_ms}))
            assert device.read()["type"] == "ack"
    finally:
        device.sock.close()
    assert TelemetrySample.objects.filter(device__node_id="sensor-1", capability="temperature").count() == 3
    session = AuditEvent.objects.filter(action="mesh.session", decision="allow", target_id="sensor-1").latest("seq")
    assert abs(session.details["clock_offset_ms"] - offset_ms) < 30_000, "the hub measured and recorded the device's clock offset"


@pytest.mark.parametrize(("offset_ms", "words"), [(-6 * MINUTES, "behind"), (6 * MINUTES, "ahead of")])
def test_a_device_that_cannot_set_its_clock_is_refused_beyond_the_skew_with_the_offset(
    listeners: tuple[Any, Any], tmp_path: Path, offset_ms: int, words: str
) -> None:
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    device = UncorrectedDevice(state_dir, listeners[1].port, offset_ms)
    try:
        device.send(device.frame("hello", {"firmware_version": "raw-1", "capabilities": PROFILES["thermostat"]["capabilities"]}))
        error = device.error()
    finally:
        device.sock.close()
    assert error["code"] == "clock_skew"
    assert error["reason"].startswith("the device's clock is 3") and error["reason"].endswith(f"s {words} the hub's (measured at hello); allowed ±300 s"), error
    denied = wait_for(lambda: AuditEvent.objects.filter(action="mesh.frame", decision="deny", target_id="sensor-1", details__code="clock_skew").first())
    assert "allowed ±300 s" in denied.reason
    assert not Device.objects.get(node_id="sensor-1").online


def test_the_hub_audits_what_the_device_refused(raw: RawDevice) -> None:
    raw.send(raw.frame("error", {"code": "replayed_seq", "reason": "seq 3 is not above the last accepted seq 3", "ref": "cmd-1"}))
    event = wait_for(lambda: AuditEvent.objects.filter(action="mesh.device.refused").first())
    assert (event.decision, event.target_id, event.details) == ("deny", "sensor-1", {"code": "replayed_seq", "ref": "cmd-1"})
    assert event.reason == "the device refused hub frame cmd-1: replayed_seq: seq 3 is not above the last accepted seq 3"


# --- the agent against a scripted hub ------------------------------------------------------


class ScriptedHub:
    """A test-side mesh server presenting the hub's real server certificate (real CA, real
    client-certificate check) that speaks as the hub with exactly the frames a test writes."""

    def __init__(self) -> None:
        self.context = mesh_context(identity.ensure_hub_identity())
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(20)
        self.port = self.listener.getsockname()[1]
        self.sock: ssl.SSLSocket | None = None
        self.data = b""

    def accept(self) -> None:
        raw, _ = self.listener.accept()
        self.sock = self.context.wrap_socket(raw, server_side=True)
        self.sock.settimeout(20)

    def frame(self, kind: str, body: dict[str, Any], seq: int, **overrides: Any) -> dict[str, Any]:
        message = {
            "v": 1,
            "type": kind,
            "id": overrides.pop("id", f"{kind}-{seq}"),
            "seq": seq,
            "issued_at": hub_now_ms(),
            "ttl_ms": 30_000,
            "nonce": base64.b64encode(os.urandom(16)).decode(),
            "body": body,
        }
        message.update(overrides)
        return message

    def send(self, message: dict[str, Any]) -> None:
        assert self.sock is not None
        payload = json.dumps(message).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def read(self) -> dict[str, Any]:
        assert self.sock is not None
        while True:
            if len(self.data) >= 4:
                (length,) = struct.unpack(">I", self.data[:4])
                if len(self.data) >= 4 + length:
                    message: dict[str, Any] = json.loads(self.data[4 : 4 + length])
                    self.data = self.data[4 + length :]
                    return message
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the agent closed the connection")
            self.data += chunk

    def read_until(self, predicate: Any) -> list[dict[str, Any]]:
        """Every frame the agent sends, up to and including the first that `predicate` accepts."""
        seen = []
        while True:
            message = self.read()
            seen.append(message)
            if predicate(message):
                return seen

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[ScriptedHub, Agent]]:
    """The agent (its clock 6 minutes slow) enrolled for real, then pointed at a ScriptedHub."""
    state_dir = tmp_path / "sensor-1"
    with running_enrollment_listener() as enroll:
        ticket = identity.create_enrollment(Actor("user", "alice"), "sensor-1").as_dict()
        agent_enroll.enroll(agent_port, "127.0.0.1", enroll.port, "sensor-1", ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
    hub = ScriptedHub()
    settings_file = state_dir / "hub.json"
    settings_file.write_text(json.dumps({**json.loads(settings_file.read_text()), "mesh_host": "127.0.0.1", "mesh_port": hub.port}))
    stop = threading.Event()
    agent = Agent(agent_port.SkewedPort(-6 * MINUTES), str(state_dir), PROFILES["thermostat"], VirtualHardware(PROFILES["thermostat"], seed=1), report_s=3600)
    thread = threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        hub.accept()
        yield hub, agent
    finally:
        stop.set()
        hub.close()
        thread.join(15)


def command(hub: ScriptedHub, seq: int, command_id: str, value: float, token: str, **overrides: Any) -> dict[str, Any]:
    body = {"action": "set", "capability": "setpoint", "value": value, "scope": "command"}
    return hub.frame("command", body, seq, id=command_id, session=token, **overrides)


def test_the_agent_executes_a_command_once_and_refuses_replayed_reordered_and_expired_hub_frames(scripted: tuple[ScriptedHub, Agent]) -> None:
    hub, agent = scripted
    hub.send(hub.frame("welcome", {"hub_version": "scripted", "time_ms": hub_now_ms(), "node_id": "sensor-1", "heartbeat_s": 30}, 1))
    hello = hub.read_until(lambda m: m["type"] == "hello")[-1]
    hello_received = hub_now_ms()
    token = "scripted-token"
    hub.send(hub.frame("session", {"token": token, "scopes": ["session", "report", "answer"], "heartbeat_s": 30}, 2, ref=hello["id"]))

    first = command(hub, 3, "cmd-1", 21.5, token)
    hub.send(first)
    answers = hub.read_until(lambda m: m["type"] == "result" and m["body"]["id"] == "cmd-1")
    assert answers[-1]["body"]["status"] == "ok"
    assert all(m.get("session") == token for m in answers), "the agent's frames carry the session token"

    now = hub_now_ms()
    bad = [
        (first, "replayed_seq"),  # the very same frame again
        (command(hub, 2, "cmd-2", 30.0, token), "replayed_seq"),  # a lower seq
        (command(hub, 10, "cmd-3", 30.0, token, issued_at=now - 60_000), "expired"),  # ttl 30 s, sent a minute ago
        (command(hub, 11, "cmd-4", 30.0, token, nonce=first["nonce"]), "nonce_reused"),  # a higher seq, a used nonce
        (command(hub, 12, "cmd-5", 30.0, token, issued_at=now + 10 * MINUTES, ttl_ms=3_600_000), "clock_skew"),
        (command(hub, 13, "cmd-6", 30.0, "stolen"), "bad_session"),
        ({**command(hub, 14, "cmd-7", 30.0, token), "seq": "14"}, "bad_frame"),
    ]
    for frame, _ in bad:
        hub.send(frame)
    # Refused frames moved nothing: seq 10 (refused as expired above) is still free.
    hub.send(command(hub, 10, "cmd-8", 22.5, token))
    answers = hub.read_until(lambda m: m["type"] == "result" and m["body"]["id"] == "cmd-8")

    errors = [(m["body"]["code"], m["body"]["ref"]) for m in answers if m["type"] == "error"]
    assert errors == [(code, frame["id"]) for frame, code in bad]
    assert all(m["body"]["reason"] for m in answers if m["type"] == "error")
    assert [m["body"]["id"] for m in answers if m["type"] in ("ack", "result")] == ["cmd-8", "cmd-8"], "no bad frame was acted on"
    assert agent.executed == 2
    assert agent.hardware.values["setpoint"] == 22.5
    assert agent.refused == len(bad)
    assert abs(hello["issued_at"] - hello_received) < 60_000, "the agent, its clock 6 min slow, stamps its frames in the hub's time"


def test_the_agents_nonce_memory_is_bounded_and_forgets_expired_frames() -> None:
    from firmware.agent.core import replay

    now = 1_764_000_000_000
    window = replay.HubWindow(max_nonces=8)

    def frame(seq: int, nonce: str, issued_at: int = now) -> dict[str, Any]:
        return {"v": 1, "type": "command", "id": f"c-{seq}", "seq": seq, "issued_at": issued_at, "ttl_ms": 1_000, "nonce": nonce, "body": {}}

    for seq in range(1, 21):
        window.check(frame(seq, f"n-{seq}"), now)
    assert len(window) == 8
    with pytest.raises(replay.Refused) as refused:
        window.check(frame(21, "n-20"), now)
    assert refused.value.code == "nonce_reused"
    window.check(frame(21, "n-21", issued_at=now + 2_000), now + 2_000)
    assert len(window) == 1, "nonces of expired frames are forgotten (a replay of one is refused as expired)"
    with pytest.raises(replay.Refused) as refused:
        window.check(frame(22, "n-20"), now + 2_000)
    assert refused.value.code == "expired"
