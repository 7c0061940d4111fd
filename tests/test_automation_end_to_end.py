"""Automation end to end (issue "Automation…", first acceptance item): real agents over
mTLS on `runmesh` processes, a rule saved through the API, the gateway's committed state
batches evaluated by the rule engine in the gateway process, `for` re-checks driven as beat
does (every 0.2 s here).

A thermostat reads above 30 °C for 10 s → the relay is switched on, exactly once; the gateway
is SIGKILLed in the middle of the duration and started again, and the rule still fires once,
not twice, when the duration runs out; the temperature staying high fires nothing more.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from automation import evaluator
from automation.models import RuleRun, RuleState
from devices import identity
from devices.models import Command, Device
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from firmware.agent.core.agent import Agent
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES
from tests.mesh_helpers import wait_for
from tests.process_helpers import free_ports
from tests.test_gateway_processes import start_runmesh

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class HeldHardware(VirtualHardware):
    """A sensor the test sets: its values stay where the test puts them."""

    def tick(self, dt: float) -> dict[str, Any]:
        return dict(self.values)


def start_agent(enroll_port: int, mesh_port: int, node_id: str, profile: str, tmp_path: Path, stop: threading.Event) -> Agent:
    ticket = identity.create_enrollment(Actor("user", "alice"), node_id, device_type=profile).as_dict()
    state_dir = tmp_path / node_id
    agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, node_id, ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
    hub = json.loads((state_dir / "hub.json").read_text())
    (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": mesh_port}))
    agent = Agent(agent_port, str(state_dir), PROFILES[profile], HeldHardware(PROFILES[profile]), report_s=0.5, retry_delay_s=0.2)
    threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True, name=node_id).start()
    return agent


class Beat:
    """What celery beat does for rules: re-check due `for` timers, here every 0.2 s."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                evaluator.recheck_due()
            finally:
                close_old_connections()
            self.stop.wait(0.2)


def test_a_rule_fires_once_after_its_duration_across_a_gateway_restart(tmp_path: Path, alice_api: APIClient) -> None:
    enroll_port, mesh_port = free_ports(2)
    gateway = start_runmesh(enroll_port, mesh_port)
    stop = threading.Event()
    beat = Beat()
    try:
        thermo = start_agent(enroll_port, mesh_port, "thermo-1", "thermostat", tmp_path, stop)
        relay = start_agent(enroll_port, mesh_port, "relay-1", "relay", tmp_path, stop)
        wait_for(lambda: Device.objects.filter(online=True).count() == 2 and "temperature" in Device.objects.get(node_id="thermo-1").reported, timeout_s=30)
        rule = {
            "name": "cool the room",
            "cooldown_s": 300,
            "when": {"all": [{"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10}]},
            "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}],
        }
        created = alice_api.post("/api/v1/rules/", rule, format="json")
        assert created.status_code == 201, created.content
        rule_id = created.json()["id"]

        thermo.hardware.values["temperature"] = 31.5
        hot_since = time.monotonic()
        wait_for(lambda: RuleState.objects.get(rule_id=rule_id).recheck_at is not None, timeout_s=10)  # the duration runs
        time.sleep(3)
        assert not RuleRun.objects.exists() and relay.hardware.values["on"] is False
        gateway.send_signal(signal.SIGKILL)  # in the middle of the 10 s
        gateway.wait(10)
        gateway = start_runmesh(enroll_port, mesh_port)
        wait_for(lambda: relay.hardware.values["on"] is True, timeout_s=30)
        assert time.monotonic() - hot_since >= 10, "not before the duration ran out"
        time.sleep(3)  # still hot: nothing more
        runs = list(RuleRun.objects.filter(rule_id=rule_id))
        assert [r.outcome for r in runs] == ["fired"], [(r.outcome, r.reason) for r in runs]
        assert runs[0].trigger == {"device": "thermo-1", "capability": "temperature", "value": 31.5}
        commands = list(Command.objects.filter(device__node_id="relay-1"))
        assert len(commands) == 1 and commands[0].requested_by == f"rule:{rule_id}" and commands[0].status == "succeeded"
        assert AuditEvent.objects.filter(action="command.create", decision="allow", actor_type="rule", actor_id=str(rule_id)).count() == 1
    finally:
        beat.stop.set()
        stop.set()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)


def test_a_scene_snapshot_then_activate_restores_the_values_and_an_offline_member_fails_alone(tmp_path: Path, alice_api: APIClient) -> None:
    enroll_port, mesh_port = free_ports(2)
    gateway = start_runmesh(enroll_port, mesh_port)
    stop, stop_relay_2 = threading.Event(), threading.Event()
    try:
        thermo = start_agent(enroll_port, mesh_port, "thermo-1", "thermostat", tmp_path, stop)
        relay_1 = start_agent(enroll_port, mesh_port, "relay-1", "relay", tmp_path, stop)
        start_agent(enroll_port, mesh_port, "relay-2", "relay", tmp_path, stop_relay_2)
        thermo.hardware.values.update(setpoint=21.5, mode="heat")
        relay_1.hardware.values["on"] = True
        wait_for(
            lambda: (
                Device.objects.filter(online=True).count() == 3
                and Device.objects.get(node_id="thermo-1").reported.get("setpoint") == 21.5
                and Device.objects.get(node_id="relay-1").reported.get("on") is True
            ),
            timeout_s=30,
        )
        made = alice_api.post("/api/v1/scenes/snapshot/", {"name": "evening", "devices": ["thermo-1", "relay-1", "relay-2"]}, format="json")
        assert made.status_code == 201, made.content
        members = {(m["device"], m["capability"]): m["value"] for m in made.json()["members"]}
        assert members == {("thermo-1", "setpoint"): 21.5, ("thermo-1", "mode"): "heat", ("relay-1", "on"): True, ("relay-2", "on"): False}

        for node, cap, value in (("thermo-1", "setpoint", 25), ("thermo-1", "mode", "off"), ("relay-1", "on", False)):
            assert alice_api.post(f"/api/v1/devices/{node}/commands/", {"action": "set", "capability": cap, "value": value}, format="json").status_code == 201
        wait_for(lambda: thermo.hardware.values["setpoint"] == 25 and thermo.hardware.values["mode"] == "off" and relay_1.hardware.values["on"] is False)
        stop_relay_2.set()
        wait_for(lambda: not Device.objects.get(node_id="relay-2").online, timeout_s=30)

        answer = alice_api.post(f"/api/v1/scenes/{made.json()['id']}/activate/")
        assert answer.status_code == 200, answer.content
        results = {(r["device"], r["capability"]): r for r in answer.json()["results"]}
        assert results[("relay-2", "on")]["status"] == "failed" and "offline" in results[("relay-2", "on")]["reason"]
        assert all(r["command_id"] for key, r in results.items() if key[0] != "relay-2")
        wait_for(lambda: thermo.hardware.values["setpoint"] == 21.5 and thermo.hardware.values["mode"] == "heat" and relay_1.hardware.values["on"] is True)
        assert AuditEvent.objects.filter(action="scene.activate", decision="allow", reason="3 of 4 members sent").exists()
    finally:
        stop.set()
        stop_relay_2.set()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
