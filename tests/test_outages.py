"""Outages of PostgreSQL and Redis while devices report, commands flow and the gateway holds
audit events: what /healthz, the API, the pages and the log say meanwhile, that nothing
acknowledged is lost, that the audit backlog is bounded and its gap recorded, and that the
hub recovers without a restart (tests/tcp_proxy.py cuts the hub's own connections)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.db import connection, connections
from django.utils import timezone

from audit.models import ActorType, AuditEvent, Decision
from audit.services import Actor, Entry, verify
from conftest import make_token_client
from devices import identity
from devices.models import Command, CommandStatus, Device, TelemetrySample
from hub import outages
from hub.mesh.gateway import AuditBatcher
from hub.models import Heartbeat
from tests.factories import thermostat
from tests.mesh_helpers import wait_for
from tests.process_helpers import free_ports, hub_env
from tests.tcp_proxy import TcpProxy
from tests.test_gateway_processes import enrolled_agent

pytestmark = pytest.mark.django_db(transaction=True)


def handshake_denial(n: int) -> Entry:
    return Entry(Actor(ActorType.DEVICE, f"unknown@mallory-{n}"), "mesh.handshake", Decision.DENY, target_type="device", reason="TLS handshake refused")


async def flush(batcher: AuditBatcher) -> None:
    """The batcher's append, then its database thread's connection closed (the test database
    must be droppable at the end of the run)."""
    await batcher.flush()
    await database_sync_to_async(connections.close_all)()


def test_it_bounds_the_audit_backlog_and_records_the_gap_in_the_chain() -> None:
    """Eight events while the database is away, room for five: the three oldest go, counted
    with their time range, and the first append after writes one `audit.gap` ahead of the five."""
    batcher = AuditBatcher(limit=5, source="gateway:test")
    for n in range(8):
        batcher.add(handshake_denial(n))
    backlog = batcher.backlog()
    assert (backlog["pending"], backlog["limit"], backlog["dropped"], backlog["dropped_total"]) == (5, 5, 3, 3)
    assert backlog["dropping_since"] is not None

    asyncio.run(flush(batcher))

    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.action for e in events] == ["audit.gap"] + ["mesh.handshake"] * 5
    assert [e.actor_id for e in events[1:]] == [f"unknown@mallory-{n}" for n in range(3, 8)], "the newest five survive, in order"
    gap = events[0]
    assert (gap.actor_type, gap.actor_id, gap.decision) == ("system", "gateway:test", "deny")
    assert gap.details["lost"] == 3 and gap.details["limit"] == 5
    assert gap.details["first_at"] <= gap.details["last_at"]
    assert "3 audit events lost" in gap.reason
    assert verify().ok, "the gap is a link of the chain, not a hole in it"
    after = batcher.backlog()
    assert (after["pending"], after["dropped"], after["dropped_total"], after["gaps_recorded"]) == (0, 0, 3, 1)

    asyncio.run(flush(batcher))  # nothing new: no second gap
    assert AuditEvent.objects.filter(action="audit.gap").count() == 1


# --- the whole hub against cut PostgreSQL and Redis -----------------------------------------


class Hub:
    """runhub (web + gateway + worker) whose database and Redis connections go through proxies;
    its log goes to a file (a pipe nobody drains would block the hub mid-outage)."""

    def __init__(self, tmp_path: Path, db: TcpProxy, redis: TcpProxy, redis_db: str, backlog_max: int) -> None:
        self.http, self.enroll_port, self.mesh_port = free_ports(3)
        self.log_path = tmp_path / "hub.log"
        env = hub_env()
        settings_dict = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{settings_dict['USER']}@127.0.0.1:{db.port}/{settings_dict['NAME']}"
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/{redis_db}"
        env["MESHHUB_AUDIT_BACKLOG_MAX"] = str(backlog_max)
        argv = [
            sys.executable, "manage.py", "runhub", "--port", str(self.http), "--concurrency", "1",
            "--device-host", "127.0.0.1", "--enroll-port", str(self.enroll_port), "--mesh-port", str(self.mesh_port),
            "--discovery-port", "0",
        ]  # fmt: skip
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, text=True)
        self.wait_log(rf"mesh gateway listening on 127\.0\.0\.1:{self.mesh_port}")
        self.wait_log(rf"meshhub web listening on http://127\.0\.0\.1:{self.http}/")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout_s: float = 60) -> None:
        try:
            wait_for(lambda: re.search(pattern, self.log()) is not None, timeout_s=timeout_s)
        except AssertionError:
            raise AssertionError(f"never saw {pattern!r}; log:\n{self.log()[-6000:]}") from None

    def get(self, path: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", data=data, headers={**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def health(self) -> tuple[int, dict[str, Any]]:
        status, _, text = self.get("/healthz")
        return status, json.loads(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def assert_every_acked_report_stored(agent: Any, log: str) -> None:
    """One report is one timestamp (a command's answer reports only the capability it set, so
    temperature samples alone undercount). The agent counts every `ack`, and the hub also acks
    the `dropped_events` event it sends after an outage: those are no reports."""
    stored = TelemetrySample.objects.filter(device__node_id="sensor-1").values("ts").distinct().count()
    acked_events = log.count('"msg": "event dropped_events from sensor-1"')
    assert stored >= agent.acked_reports - acked_events, f"{agent.acked_reports} acks ({acked_events} of events) but only {stored} reports stored"


def refused_handshakes(port: int, count: int) -> None:
    """mallory knocks without TLS: each attempt is a `mesh.handshake` deny for the batcher."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
            try:
                sock.recv(100)
            except OSError:
                pass


@pytest.mark.slow
def test_the_hub_rides_out_a_database_and_redis_outage(tmp_path: Path, settings: Any, alice: Any, root_web: Any) -> None:
    """PostgreSQL and Redis cut under a running hub (web, gateway, worker) with a device
    reporting: healthz names both with since and error, the API and pages answer 503, the log
    says it once; gateway audit events past the bound are dropped and counted. With the
    database back (Redis still away) a command is accepted; with both back it is delivered,
    everything acknowledged is stored, the audit gap is in the chain and healthz is green:
    same process, no restart."""
    if settings.EMBEDDED:
        pytest.skip("needs PostgreSQL and Redis to cut; the embedded mode has neither")
    db_settings = connection.settings_dict
    redis_url = urlparse(os.environ["REDIS_URL"])
    backlog_max = 10
    _, token = make_token_client(alice, ["read-status", "command"])
    api = {"Authorization": f"Token {token}", "Accept": "application/json"}
    page = {"Cookie": f"sessionid={root_web.cookies['sessionid'].value}"}
    stop = threading.Event()
    with (
        TcpProxy(str(db_settings["HOST"] or "127.0.0.1"), int(db_settings["PORT"] or 5432)) as db,
        TcpProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379) as redis,
    ):
        hub = Hub(tmp_path, db, redis, redis_url.path.strip("/") or "0", backlog_max)
        thread = None
        try:
            agent = enrolled_agent(hub.enroll_port, hub.mesh_port, "sensor-1", "thermostat", tmp_path)
            agent.report_s = 0.05
            thread = threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True)
            thread.start()
            wait_for(lambda: agent.acked_reports >= 10, timeout_s=60)
            status, health = hub.health()
            assert status == 200, health

            # --- both away ---------------------------------------------------------------
            cut_at = time.time()
            db.cut()
            redis.cut()
            status, health = hub.health()
            assert status == 503, health
            assert {"database", "channel_layer", "broker"} <= set(health["down"]), health
            database = health["components"]["database"]
            assert database["status"] == "error" and database["since"] and database["error"], database
            assert "channel_layer" in health["down"] and health["components"]["channel_layer"]["error"]

            refused_handshakes(hub.mesh_port, backlog_max + 15)  # more denials than the backlog holds
            wait_for(lambda: hub.health()[1]["audit_backlog"][0]["dropped"] >= 15, timeout_s=30, interval_s=0.5)
            backlog = hub.health()[1]["audit_backlog"][0]
            assert backlog["pending"] == backlog_max and backlog["limit"] == backlog_max, backlog

            status, headers, text = hub.get("/api/v1/devices/", api)
            assert status == 503, text
            assert "database is unavailable" in json.loads(text)["reason"] and headers.get("Retry-After")
            status, _, text = hub.get("/api/v1/devices/sensor-1/commands/", api, {"action": "set", "capability": "setpoint", "value": 22})
            assert status == 503, text
            status, _, text = hub.get("/system/", page)
            assert status == 503 and "database is unavailable" in text, text[:2000]
            acked_during_outage = agent.acked_reports

            # --- the database back, Redis still away: a command is accepted -----------------
            db.restore()
            wait_for(lambda: hub.health()[1]["components"]["database"]["status"] == "ok", timeout_s=30, interval_s=0.5)
            status, health = hub.health()
            assert status == 503 and "channel_layer" in health["down"] and "database" not in health["down"], health
            status, _, text = hub.get("/api/v1/devices/sensor-1/commands/", api, {"action": "set", "capability": "setpoint", "value": 23.5})
            assert status == 201, text
            command_id = json.loads(text)["id"]

            # --- both back: everything recovers in the same process ---------------------------
            redis.restore()
            wait_for(lambda: hub.health()[0] == 200, timeout_s=60, interval_s=0.5)
            wait_for(lambda: Command.objects.get(id=command_id).status == CommandStatus.SUCCEEDED, timeout_s=60)
            assert agent.hardware.values["setpoint"] == 23.5
            wait_for(lambda: agent.acked_reports >= acked_during_outage + 20, timeout_s=60)
            wait_for(lambda: Device.objects.get(node_id="sensor-1").online, timeout_s=30)
            gap = wait_for(lambda: AuditEvent.objects.filter(action="audit.gap").first(), timeout_s=30)
            # The system page (the gateway's heartbeat, stamped every GATEWAY_STAMP_S) shows the count.
            wait_for(lambda: re.search(r"\d+ dropped in all, 1 gap recorded", hub.get("/system/", page)[2]), timeout_s=40, interval_s=1)
            # The gateway still hears revocations over the channel layer: its trust store follows.
            # (Back on the layer, it first reloads once for what it may have missed.)
            reloads = wait_for(lambda: hub.log().count("reloaded its trust store"), timeout_s=30)
            identity.revoke_device(Actor("user", "alice"), "sensor-1", "lost in the outage drill")
            wait_for(lambda: hub.log().count("reloaded its trust store") > reloads, timeout_s=30)
            assert hub.proc.poll() is None, "the hub was not restarted"
        finally:
            stop.set()
            if thread is not None:
                thread.join(15)
            hub.stop()
    log = hub.log()

    assert_every_acked_report_stored(agent, log)
    assert gap.details["lost"] >= 15 and gap.details["limit"] == backlog_max, gap.details
    assert gap.details["first_at"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut_at - 1))
    survivors = list(AuditEvent.objects.filter(seq__gt=gap.seq).order_by("seq")[:backlog_max])
    assert [(e.action, e.decision) for e in survivors] == [("mesh.handshake", "deny")] * backlog_max, "the backlog's events follow the gap"
    assert verify().ok
    # One line per change, not a traceback per request or per retry.
    assert len(re.findall(r'"msg": "database unavailable', log)) == 1, log[-6000:]
    assert re.search(r'"msg": "database available again', log), log[-6000:]
    assert re.search(r'"msg": "audit backlog full \(10 events\)', log), log[-6000:]
    assert re.search(r'"msg": "recorded an audit gap', log), log[-6000:]
    assert "Internal Server Error" not in log and '"msg": "Service Unavailable' not in log, log[-6000:]
    hub_lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"') and '"logger": "meshhub' in line]
    assert [line for line in hub_lines if "exc" in line] == [], "no traceback from the hub's own code"


def unreachable_database_error(tmp_path: Path, proxy: TcpProxy) -> Exception:
    """What connecting to a database that is away really raises, in this run's mode."""
    broken = connections.create_connection("default")
    if broken.vendor == "sqlite":
        broken.settings_dict = {**broken.settings_dict, "NAME": str(tmp_path / "no-such-dir" / "db.sqlite3")}
    else:
        broken.settings_dict = {**broken.settings_dict, "HOST": "127.0.0.1", "PORT": str(proxy.port)}
    try:
        broken.ensure_connection()
    except Exception as exc:
        return exc
    finally:
        broken.close()
    raise AssertionError("connected to a database that is away")


def test_it_tells_an_unreachable_database_from_a_bug(tmp_path: Path, alice_api: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Only an outage is a 503: a query on a table that does not exist stays a 500 (on SQLite
    both are OperationalError), and alice's bad command and unknown device stay a 400 and a 404 that the outage log
    never hears of."""
    thermostat("sensor-1")
    with caplog.at_level(logging.DEBUG, logger="meshhub.outages"):
        response = alice_api.post("/api/v1/devices/sensor-1/commands/", {"action": "set", "capability": "setpoint", "value": 20, "mallory": 1}, format="json")
        missing = alice_api.get("/api/v1/devices/no-such-device/")
    assert response.status_code == 400 and response.json()["field"] == "mallory", response.content
    assert missing.status_code == 404, missing.content
    assert [r.getMessage() for r in caplog.records if r.name == "meshhub.outages"] == []
    with TcpProxy("127.0.0.1", int(connection.settings_dict.get("PORT") or 5432)) as proxy:
        proxy.cut()
        assert outages.unavailable(unreachable_database_error(tmp_path, proxy)) == "database"
    with pytest.raises(Exception) as bug:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")
    assert outages.unavailable(bug.value) is None, bug.value


@pytest.mark.slow
def test_a_gateway_alone_rides_out_a_database_outage(tmp_path: Path, settings: Any) -> None:
    """`runmesh` (the production gateway, no web) with its database link cut while sensor-1
    reports and a command is written by another hub node: nothing acked is lost, the refused
    handshakes of the outage reach the audit log in full (under the bound), the command is
    delivered once the link is back, and the log says down and back once each."""
    if settings.EMBEDDED:
        pytest.skip("needs PostgreSQL to cut; the embedded mode has none")
    from devices.services import send_command

    db_settings = connection.settings_dict
    enroll_port, mesh_port = free_ports(2)
    log_path = tmp_path / "runmesh.log"
    stop = threading.Event()
    thread = None
    with TcpProxy(str(db_settings["HOST"] or "127.0.0.1"), int(db_settings["PORT"] or 5432)) as db, log_path.open("w") as log_file:
        env = {**hub_env(), "DATABASE_URL": f"postgres://{db_settings['USER']}@127.0.0.1:{db.port}/{db_settings['NAME']}"}
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
        gateway = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: f"mesh gateway listening on 127.0.0.1:{mesh_port}" in log_path.read_text(), timeout_s=60)
            agent = enrolled_agent(enroll_port, mesh_port, "sensor-1", "thermostat", tmp_path)
            agent.report_s = 0.05
            thread = threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True)
            thread.start()
            wait_for(lambda: agent.acked_reports >= 10, timeout_s=60)

            db.cut()
            wait_for(lambda: '"msg": "database unavailable' in log_path.read_text(), timeout_s=30)
            refused_handshakes(mesh_port, 5)
            # Another hub node (this test, straight to PostgreSQL) accepts a command meanwhile.
            command = send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 19.5)
            # Long enough for one heartbeat stamp (every GATEWAY_STAMP_S) to fail inside the
            # outage: no event tells the test that, so it waits the interval out.
            time.sleep(django_settings.GATEWAY_STAMP_S + 2)
            acked_during_outage = agent.acked_reports

            db.restore()
            restored_at = timezone.now()
            wait_for(lambda: Command.objects.get(pk=command.pk).status == CommandStatus.SUCCEEDED, timeout_s=60)
            assert agent.hardware.values["setpoint"] == 19.5
            # The gateway stamps its heartbeat again (the system page counts it alive).
            wait_for(
                lambda: Heartbeat.objects.filter(name__startswith="gateway:", at__gt=restored_at).exists(),
                timeout_s=3 * django_settings.GATEWAY_STAMP_S,
                interval_s=0.5,
            )
            wait_for(lambda: agent.acked_reports >= acked_during_outage + 20, timeout_s=60)
            wait_for(
                lambda: AuditEvent.objects.filter(action="mesh.handshake", decision="deny", reason__startswith="TLS handshake refused").count() >= 5,
                timeout_s=30,
            )
            assert gateway.poll() is None, "the gateway was not restarted"
        finally:
            stop.set()
            if thread is not None:
                thread.join(15)
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
    log = log_path.read_text(errors="replace")
    assert_every_acked_report_stored(agent, log)
    assert not AuditEvent.objects.filter(action="audit.gap").exists(), "under the bound nothing is dropped"
    assert verify().ok
    assert len(re.findall(r'"msg": "database unavailable', log)) == 1, log[-6000:]
    assert re.search(r'"msg": "database available again', log), log[-6000:]
    hub_lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"') and '"logger": "meshhub' in line]
    assert [line for line in hub_lines if "exc" in line] == [], "no traceback from the hub's own code"


@pytest.mark.slow
def test_devices_keep_reporting_and_reconnect_while_redis_is_away(tmp_path: Path, settings: Any, alice: Any) -> None:
    """Redis only carries nudges, revocations and takeovers, each with a fallback in the
    gateway's sweep; reports and commands need the database alone. So with Redis cut (the
    database up) a device's session goes on, a device whose link drops gets a new session,
    its reports are acked and stored, and a command reaches it through the sweep. (Before,
    Channels ended every device session on the first failed channel receive, and no session
    could start until Redis was back.)"""
    if settings.EMBEDDED:
        pytest.skip("needs Redis to cut; the embedded mode has none")
    db_settings = connection.settings_dict
    redis_url = urlparse(os.environ["REDIS_URL"])
    _, token = make_token_client(alice, ["read-status", "command"])
    api = {"Authorization": f"Token {token}", "Accept": "application/json"}
    stop = threading.Event()
    with (
        TcpProxy(str(db_settings["HOST"] or "127.0.0.1"), int(db_settings["PORT"] or 5432)) as db,
        TcpProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379) as redis,
    ):
        hub = Hub(tmp_path, db, redis, redis_url.path.strip("/") or "0", backlog_max=1000)
        thread = None
        try:
            with TcpProxy("127.0.0.1", hub.mesh_port) as link:
                agent = enrolled_agent(hub.enroll_port, link.port, "sensor-1", "thermostat", tmp_path)
                agent.report_s = 0.05
                thread = threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True)
                thread.start()
                wait_for(lambda: agent.acked_reports >= 10, timeout_s=60)

                redis.cut()
                wait_for(lambda: "channel_layer" in hub.health()[1].get("down", []), timeout_s=30, interval_s=0.5)
                sessions, acked = agent.sessions, agent.acked_reports
                wait_for(lambda: agent.acked_reports >= acked + 20, timeout_s=60)
                assert agent.sessions == sessions, f"the session ended with Redis away: {agent.last_error}"

                assert link.reset_one(random.Random(14)), "the device's link was open"
                wait_for(lambda: agent.sessions > sessions and agent.token is not None, timeout_s=60)
                acked = agent.acked_reports
                wait_for(lambda: agent.acked_reports >= acked + 20, timeout_s=60)

                status, _, text = hub.get("/api/v1/devices/sensor-1/commands/", api, {"action": "set", "capability": "setpoint", "value": 21.5})
                assert status == 201, text
                command_id = json.loads(text)["id"]
                wait_for(lambda: Command.objects.get(id=command_id).status == CommandStatus.SUCCEEDED, timeout_s=60)
                assert agent.hardware.values["setpoint"] == 21.5
                assert "channel_layer" in hub.health()[1].get("down", []), "Redis was away all along"

                redis.restore()
                wait_for(lambda: hub.health()[0] == 200, timeout_s=60, interval_s=0.5)
                status, _, text = hub.get("/api/v1/devices/sensor-1/commands/", api, {"action": "set", "capability": "setpoint", "value": 22.5})
                assert status == 201, text
                command_id = json.loads(text)["id"]
                wait_for(lambda: Command.objects.get(id=command_id).status == CommandStatus.SUCCEEDED, timeout_s=60)
                assert hub.proc.poll() is None, "the hub was not restarted"
        finally:
            stop.set()
            if thread is not None:
                thread.join(15)
            hub.stop()
    assert_every_acked_report_stored(agent, hub.log())


EXITING_PUSH = """
import threading, time
import django
django.setup()
from hub import live

def late():
    threading.main_thread().join()
    time.sleep(0.2)  # after concurrent.futures' exit hook has shut its executors
    live._publish({"type": "live.event", "event": {"type": "presence"}})

threading.Thread(target=late).start()
"""

# The window CI met: the main thread is still alive, inside its exit hooks, while
# concurrent.futures' hook waits for a worker (here: one held until the push is done).
PUSH_DURING_EXIT_HOOKS = """
import concurrent.futures, threading, time
import django
django.setup()
from hub import live

pushed = threading.Event()
busy = concurrent.futures.ThreadPoolExecutor(1)
busy.submit(pushed.wait)
probe = concurrent.futures.ThreadPoolExecutor(1)

def late():
    while True:  # until the executors refuse new work: the exit hooks have begun
        try:
            probe.submit(int).result()
        except RuntimeError:
            break
        time.sleep(0.01)
    assert threading.main_thread().is_alive()
    live._publish({"type": "live.event", "event": {"type": "presence"}})
    pushed.set()

threading.Thread(target=late).start()
"""


@pytest.mark.parametrize("script", [EXITING_PUSH, PUSH_DURING_EXIT_HOOKS], ids=["after-main-thread", "during-exit-hooks"])
def test_work_failing_as_the_process_exits_is_neither_an_outage_nor_a_bug(tmp_path: Path, script: str) -> None:
    """A state batch delivered after a gateway stopped pushes to the pages while the
    interpreter shuts its executors down: one info line, no traceback (seen in a gateway's
    shutdown during test_a_gateway_alone_rides_out_a_database_outage, both after the main
    thread ended and while it still ran the exit hooks)."""
    env = {**os.environ, "MESHHUB_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hub.settings", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith('{"ts"')]
    ours = [line for line in lines if line["logger"] == "meshhub.outages"]
    assert [(line["level"], "exc" in line) for line in ours] == [("info", False)], done.stdout + done.stderr
    assert ours[0]["msg"].startswith("live push not done: the process is exiting"), ours
