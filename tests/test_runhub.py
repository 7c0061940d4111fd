"""`manage.py runhub` as a real process: serves HTTP, runs beat + worker, stops with no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from audit.services import Actor
from devices import identity, services
from devices.models import Command, CommandStatus, Device, Enrollment, EnrollmentStatus
from firmware.agent import port as agent_port
from firmware.agent.core import discovery as agent_discovery
from firmware.agent.core import enroll as agent_enroll
from tests.factories import thermostat
from tests.mesh_helpers import wait_for
from tests.process_helpers import free_ports, hub_env, read_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_runhub_serves_enrolls_runs_the_worker_and_stops_cleanly(tmp_path: Path) -> None:
    thermostat("sensor-1")
    stale = services.send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 20)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Command.objects.filter(pk=stale.pk).update(created_at=an_hour_ago, expires_at=an_hour_ago + timedelta(seconds=5))

    port, enroll_port, mesh_port, discovery_port = free_ports(4)
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runhub",
            "--port",
            str(port),
            "--concurrency",
            "1",
            "--device-host",
            "127.0.0.1",
            "--enroll-port",
            str(enroll_port),
            "--mesh-port",
            str(mesh_port),
            "--discovery-port",
            str(discovery_port),
        ],
        env=hub_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        worker_pid = int(read_until(proc, r'"msg": "celery worker\+beat started", "pid": (\d+)', 60).group(1))
        read_until(proc, rf"meshhub web listening on http://127\.0\.0\.1:{port}/", 60)
        read_until(proc, rf"enrollment listening on 127\.0\.0\.1:{enroll_port}", 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            health = json.load(response)
        assert health["status"] == "ok", health

        # LAN discovery answers with where to enroll and which CA to expect.
        found = wait_for(lambda: agent_discovery.discover(agent_port, "127.0.0.1", discovery_port, 1.0))
        assert (found["enroll_port"], found["mesh_port"], found["ca_fingerprint"]) == (enroll_port, mesh_port, identity.active_ca().fingerprint)
        assert agent_port.udp_exchange("127.0.0.1", discovery_port, b'{"v": 1, "type": "discover"}', 0.5) is None, "an unpadded probe gets no answer"

        # The enrollment port runs on Daphne's loop: a real agent joins through it.
        ticket = identity.create_enrollment(Actor("user", "alice"), "relay-1").as_dict()
        agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, "relay-1", ticket["code"], None, ticket["ca_fingerprint"], str(tmp_path / "relay-1"))
        assert Device.objects.get(node_id="relay-1").status == "provisioned"

        # Beat schedules expire_commands and the worker runs it: the stale command expires.
        wait_for(lambda: Command.objects.get(pk=stale.pk).status == CommandStatus.EXPIRED, timeout_s=90)
        assert process_group_members(worker_pid), "the worker runs in its own process group"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert process_group_members(worker_pid) == [], "no worker or pool process outlives the hub"
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)


def start_demo_hub(ports: list[int], data_dir: Path) -> subprocess.Popen[str]:
    """runhub --demo as `make run` starts it: the device ports come from the settings (the
    ones enrollment hands the devices), here free ones."""
    port, enroll_port, mesh_port, discovery_port = ports
    env = {**hub_env(), "MESHHUB_DATA_DIR": str(data_dir), "MESHHUB_ENROLL_PORT": str(enroll_port), "MESHHUB_MESH_PORT": str(mesh_port)}
    argv = [
        sys.executable,
        "manage.py",
        "runhub",
        "--no-worker",
        "--demo",
        "5",
        "--port",
        str(port),
        "--device-host",
        "127.0.0.1",
        "--discovery-port",
        str(discovery_port),
    ]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until_end(proc: subprocess.Popen[str]) -> str:
    """What the hub has logged so far (for a failure message)."""
    try:
        read_until(proc, r"(?!x)x", 0.5)
    except AssertionError as failure:
        return str(failure)[-6000:]
    return ""


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_demo_fleet_enrolls_through_the_real_flow_and_keeps_its_kinds_across_restarts(tmp_path: Path) -> None:
    """`make run`'s fleet: enrolled with codes on the enrollment port, and after a restart
    each device is still what it was (a restarted simulator once ran demo-dimmer-1 as a
    thermostat and the hub replaced its capabilities)."""
    expected = {
        "demo-thermostat-1": {"temperature", "setpoint", "mode"},
        "demo-relay-1": {"on", "power"},
        "demo-dimmer-1": {"level"},
        "demo-door-1": {"open"},
        "demo-meter-1": {"energy", "power"},
    }

    def fleet() -> dict[str, set[str]]:
        return {d.node_id: set(d.capabilities.values_list("name", flat=True)) for d in Device.objects.filter(online=True)}

    ports = free_ports(4)
    for run in range(2):
        proc = start_demo_hub(ports, tmp_path / "data")
        try:
            try:
                wait_for(lambda: fleet() == expected, timeout_s=60)
            except AssertionError:
                raise AssertionError(f"run {run + 1}: online {fleet()}; log: {read_until_end(proc)}") from None
            if run == 0:  # named as people call them: the assistant drives the demo fleet
                from assistant import service
                from audit.services import Actor

                assert Device.objects.get(node_id="demo-relay-1").name == "Kitchen light"
                code, body = service.ask(Actor.system("test"), "turn on the kitchen light")
                assert code == 200 and [c["device"] for c in body["commands"]] == ["demo-relay-1"], body
                wait_for(lambda: Device.objects.get(node_id="demo-relay-1").reported.get("on") is True, timeout_s=30)
        finally:
            stop(proc)
        wait_for(lambda: not Device.objects.filter(online=True).exists(), timeout_s=30)
    # One code each, redeemed on the enrollment port; the restart reused the identities.
    used = Enrollment.objects.filter(status=EnrollmentStatus.USED).values_list("node_id", flat=True)
    assert sorted(used) == sorted(expected)
    assert Enrollment.objects.count() == len(expected)
