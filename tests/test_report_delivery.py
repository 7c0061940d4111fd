"""Nothing acknowledged is lost, nothing is stored twice (issue #14, item 2): the real agent
keeps each report until the hub acks it, resends it after `unavailable` or a dropped
session, and drops only the oldest when its bounded buffer is full; the hub stores a resent
report once. The database goes away while reports flow: a TCP proxy between the hub
process and PostgreSQL is cut, or (SQLite) the test holds the database's write lock."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from audit.services import Actor
from devices import identity
from devices.models import Device, TelemetrySample
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from firmware.agent.core.agent import Agent
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES
from tests.mesh_helpers import wait_for
from tests.process_helpers import free_ports, hub_env, read_until
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BUFFER = 15  # reports the agent keeps waiting (not in flight) before it drops the oldest
IN_FLIGHT = 4


class WatchedAgent(Agent):
    """The real agent; the test also notes each report's ts as measured and as dropped,
    with the reports still waiting at the moment of each drop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Agent.__init__(self, *args, **kwargs)
        self.measured_ts: list[int] = []
        self.drops: list[tuple[int, list[int]]] = []

    def measure(self, values: dict[str, Any], ts: int) -> None:
        Agent.measure(self, values, ts)
        self.measured_ts.append(self.last_ts)

    def dropped(self, report: dict[str, Any]) -> None:
        Agent.dropped(self, report)
        self.drops.append((report["ts"], [r["ts"] for r in self.outbox if r["ref"] is None]))


@contextmanager
def hub_database_path() -> Iterator[tuple[dict[str, str], Any]]:
    """The hub's environment, and an outage switch: `outage(True)` takes the database away
    from the hub process (not from the test), `outage(False)` gives it back."""
    env = hub_env()
    if settings.EMBEDDED:
        env["MESHHUB_SQLITE_TIMEOUT_S"] = "1"  # a write waits 1 s for the lock, then fails
        holder = sqlite3.connect(str(connection.settings_dict["NAME"]), timeout=30, isolation_level=None)

        def outage(on: bool) -> None:
            holder.execute("BEGIN EXCLUSIVE" if on else "COMMIT")

        try:
            yield env, outage
        finally:
            if holder.in_transaction:
                holder.execute("COMMIT")
            holder.close()
        return
    db = connection.settings_dict
    with TcpProxy(str(db["HOST"] or "127.0.0.1"), int(db["PORT"] or 5432)) as proxy:
        url = urlsplit(env["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(url._replace(netloc=f"{url.username}@{proxy.host}:{proxy.port}"))

        def outage(on: bool) -> None:
            if on:
                proxy.cut()
            else:
                proxy.restore()

        yield env, outage


def start_runmesh(env: dict[str, str], enroll_port: int, mesh_port: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "manage.py", "runmesh", "--host", "127.0.0.1", "--enroll-port", str(enroll_port), "--mesh-port", str(mesh_port), "--discovery-port", "0"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    read_until(proc, rf"mesh gateway listening on 127\.0\.0\.1:{mesh_port}", 60)
    # Keep reading its log: the outage fills it with tracebacks, and a full pipe would
    # block the hub's event loop in a log write (a harness fault, not the hub's).
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(fd, 65536), b"")], daemon=True).start()
    return proc


def test_it_stores_every_measured_report_once_or_counts_it_dropped_across_a_database_outage(tmp_path: Path) -> None:
    enroll_port, mesh_port = free_ports(2)
    stop = threading.Event()
    thread = None
    with hub_database_path() as (env, outage):
        gateway = start_runmesh(env, enroll_port, mesh_port)
        try:
            ticket = identity.create_enrollment(Actor("user", "alice"), "sensor-1").as_dict()
            state_dir = tmp_path / "sensor-1"
            agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, "sensor-1", ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
            hub = json.loads((state_dir / "hub.json").read_text())
            (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": mesh_port}))
            agent = WatchedAgent(agent_port, str(state_dir), PROFILES["thermostat"], VirtualHardware(PROFILES["thermostat"], seed=1), report_s=0.05)
            agent.offline_max = BUFFER
            agent.in_flight_max = IN_FLIGHT
            agent.resend_backoff_s = 0.2
            agent.resend_backoff_max_s = 1.0
            thread = threading.Thread(target=agent.run, args=(stop.is_set, 2.0), daemon=True)
            thread.start()
            wait_for(lambda: agent.acked_reports >= 20, timeout_s=30)

            outage(True)
            # Reports keep coming: the hub cannot store them, the buffer fills and overflows.
            wait_for(lambda: agent.dropped_events >= 2 * BUFFER and (agent.unavailable >= 1 or agent.sessions >= 2), timeout_s=60)
            outage(False)
            restored_ms = int(time.time() * 1000)

            # Everything measured before the database came back is stored or was dropped.
            wait_for(lambda: agent.measured_ts[-1] > restored_ms and all(r["ts"] > restored_ms for r in agent.outbox), timeout_s=60)
            wait_for(lambda: Device.objects.get(node_id="sensor-1").metadata.get("dropped_events") == agent.dropped_events, timeout_s=30)
        finally:
            stop.set()
            if thread is not None:
                thread.join(15)
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)

    measured = [ts for ts in agent.measured_ts if ts <= restored_ms]
    dropped = [ts for ts, _ in agent.drops]
    assert agent.measured == len(agent.measured_ts) and agent.dropped_events == len(dropped)
    stored = [
        int(t.timestamp() * 1000) for t in TelemetrySample.objects.filter(device__node_id="sensor-1", capability="temperature").values_list("ts", flat=True)
    ]
    assert len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} reports stored twice"
    stored_before = {ts for ts in stored if ts <= restored_ms}
    assert not stored_before & set(dropped), "a report counted as dropped was also stored"
    lost = set(measured) - stored_before - set(dropped)
    assert not lost, f"{len(lost)} of {len(measured)} reports measured neither stored nor counted as dropped"
    assert stored_before <= set(measured)
    # The oldest go first: each dropped report was older than every report kept waiting.
    for ts, waiting in agent.drops:
        assert len(waiting) >= BUFFER and all(ts < kept for kept in waiting), (ts, waiting)
    assert agent.acked_reports >= len(stored_before) - 20  # acks came for what was stored (not a timing bound)
