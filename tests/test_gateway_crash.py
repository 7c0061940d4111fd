"""Killing the gateway process mid-stream loses no acknowledged state report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

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
from tests.process_helpers import free_port, hub_env, read_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_runmesh(enroll_port: int, mesh_port: int) -> subprocess.Popen[str]:
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
    proc = subprocess.Popen(argv, env=hub_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    read_until(proc, rf"mesh gateway listening on 127\.0\.0\.1:{mesh_port}", 60)
    return proc


def test_a_killed_gateway_loses_no_acknowledged_report(tmp_path: Path) -> None:
    enroll_port, mesh_port = free_port(), free_port()
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
