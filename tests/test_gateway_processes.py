"""Gateways as real processes (`runmesh`): a crash loses no acknowledged report, and two
gateways serve one fleet (scale-out)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from audit.services import Actor
from devices import identity
from devices.models import TelemetrySample
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from firmware.agent.core.agent import Agent
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES
from tests.mesh_helpers import wait_for
from tests.process_helpers import free_ports, hub_env, read_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_runmesh(enroll_port: int, mesh_port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        "manage.py",
        "runmesh",
        "--host",
        "127.0.0.1",
        "--enroll-port",
        str(enroll_port),
        "--mesh-port",
        str(mesh_port),
        "--discovery-port",
        "0",
    ]
    proc = subprocess.Popen(argv, env={**hub_env(), **(extra_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    read_until(proc, rf"mesh gateway listening on 127\.0\.0\.1:{mesh_port}", 60)
    return proc


def test_a_killed_gateway_loses_no_acknowledged_report(tmp_path: Path) -> None:
    enroll_port, mesh_port = free_ports(2)
    gateway = start_runmesh(enroll_port, mesh_port)
    stop = threading.Event()
    thread = None
    try:
        ticket = identity.create_enrollment(Actor("user", "alice"), "sensor-1").as_dict()
        state_dir = tmp_path / "sensor-1"
        agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, "sensor-1", ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
        hub = json.loads((state_dir / "hub.json").read_text())
        (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": mesh_port}))
        agent = Agent(agent_port, str(state_dir), PROFILES["thermostat"], VirtualHardware(PROFILES["thermostat"]), report_s=0.02)
        thread = threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True)
        thread.start()
        wait_for(lambda: agent.acked_reports >= 30, timeout_s=30)

        gateway.send_signal(signal.SIGKILL)  # mid-stream: reports are in flight
        gateway.wait(10)
        acked_before_crash = agent.acked_reports
        stored = TelemetrySample.objects.filter(device__node_id="sensor-1", capability="temperature").count()
        assert stored >= acked_before_crash, f"{acked_before_crash} reports acknowledged but only {stored} stored"

        gateway = start_runmesh(enroll_port, mesh_port)
        wait_for(lambda: agent.sessions >= 2 and agent.acked_reports >= acked_before_crash + 20, timeout_s=60)
    finally:
        stop.set()
        if thread is not None:
            thread.join(15)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    stored = TelemetrySample.objects.filter(device__node_id="sensor-1", capability="temperature").count()
    assert stored >= agent.acked_reports


def enrolled_agent(enroll_port: int, mesh_port: int, node_id: str, profile: str, tmp_path: Path) -> Agent:
    ticket = identity.create_enrollment(Actor("user", "alice"), node_id, device_type=profile).as_dict()
    state_dir = tmp_path / node_id
    agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, node_id, ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
    hub = json.loads((state_dir / "hub.json").read_text())
    (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": mesh_port}))
    return Agent(agent_port, str(state_dir), PROFILES[profile], VirtualHardware(PROFILES[profile]), report_s=0.5)


def test_two_gateways_serve_one_fleet_and_commands_reach_either(tmp_path: Path) -> None:
    from devices import services
    from devices.models import Command, Device

    a, b, c, d = free_ports(4)
    ports = [(a, b), (c, d)]
    gateways = [start_runmesh(*pair) for pair in ports]
    stop = threading.Event()
    threads = []
    try:
        agents = [enrolled_agent(ports[i][0], ports[i][1], f"relay-{i}", "relay", tmp_path) for i in range(2)]
        threads = [threading.Thread(target=a.run, args=(stop.is_set,), daemon=True) for a in agents]
        for thread in threads:
            thread.start()
        wait_for(lambda: Device.objects.filter(node_id__in=["relay-0", "relay-1"], online=True).count() == 2, timeout_s=30)
        commands = [services.send_command(Actor("user", "alice"), f"relay-{i}", "set", "on", True) for i in range(2)]
        wait_for(lambda: all(Command.objects.get(pk=c.pk).status == "succeeded" for c in commands), timeout_s=30)
        assert all(a.hardware.values["on"] is True for a in agents)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        for gateway in gateways:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)


def test_a_newer_session_on_another_gateway_replaces_the_older_one(tmp_path: Path, settings: Any) -> None:
    """One session per node across gateways: the takeover travels over the Redis layer."""
    if settings.EMBEDDED:
        pytest.skip("gateways in separate processes share no in-memory channel layer; production mode covers this")
    from audit.models import AuditEvent
    from tests.test_gateway import RawDevice

    a, b, c, d = free_ports(4)
    ports = [(a, b), (c, d)]
    gateways = [start_runmesh(*pair) for pair in ports]
    try:
        enrolled_agent(ports[0][0], ports[0][1], "sensor-1", "thermostat", tmp_path)  # enrolls; its loop never runs
        older = RawDevice(tmp_path / "sensor-1", ports[0][1])
        older.hello()
        newer = RawDevice(tmp_path / "sensor-1", ports[1][1])
        newer.hello()
        assert older.error()["code"] == "replaced"
        with pytest.raises((EOFError, ConnectionError)):
            older.read()
        wait_for(lambda: AuditEvent.objects.filter(action="mesh.session.replaced", decision="deny", target_id="sensor-1").exists())
        # The newer session is the one that stays.
        newer.send(newer.frame("state", {"values": {"temperature": 21.0}}))
        assert newer.read()["type"] == "ack"
        newer.sock.close()
    finally:
        for gateway in gateways:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
