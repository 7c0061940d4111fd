"""Soak: a fleet on a bad day, end to end, and the books balanced at the end.

    python bench/soak.py                          # 200 devices, 30 minutes (make soak)
    python bench/soak.py --devices 50 --minutes 5 # a short run

What runs (production mode: PostgreSQL + Redis; each through a TCP proxy this script
controls, `tests/tcp_proxy.py`, so that only the hub's own connections suffer):

- `manage.py runhub` (Daphne, the mesh gateway and the enrollment listener in one process,
  a Celery worker with beat as its supervised child) on a fresh database `meshhub_soak`
  and Redis DB 12;
- N reference agents (`firmware.agent.core.agent.Agent`, one thread each, as
  `python -m firmware.simulate` runs them) that enroll through the real flow and then
  connect through a third proxy in front of the mesh port, which resets one random device
  connection every `--flap-s` seconds (a flapping link);
- a pymodbus TCP server (`tests/modbus_server.py`) behind a Modbus bridge imported through
  the API, polled by the worker;
- a command driver: device commands through `POST /api/v1/devices/{id}/commands/` at
  `--commands-per-s`, and a PLC write every 5 s.

Faults, at fixed fractions of the run: PostgreSQL cut for `--outage-s` (25 %), Redis cut
for `--outage-s` (50 %), the Celery worker's whole process group SIGKILLed (70 %; runhub
restarts it). Flapping throughout.

At the end the command driver stops, the proxies are restored, the agents stop measuring
and are given time to empty their buffers, and the books are read from the database
(directly, not through the proxy):

- reports: per device, reports measured by the agent = reports stored (distinct `ts`) +
  reports dropped by the agent's bounded buffer + reports the hub refused as invalid
  (+ still unacknowledged at the end, which should be 0);
- commands: every command answered 201 is executed exactly once by its device (or is in a
  terminal state the hub explains: expired, failed), none twice;
- PLC writes: completed once;
- hub RSS (runhub and, separately, its worker) sampled every 10 s: first, max, last.

Prints `name: value unit` lines and a JSON line (`BENCH-RESULT {...}`); docs/performance.md
records a run. Not part of the test suite (it takes half an hour).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from benchlib import manage, rss_kb  # noqa: E402

from firmware.agent import port as agent_port  # noqa: E402
from firmware.agent.core import enroll as core_enroll  # noqa: E402
from firmware.agent.core.agent import Agent  # noqa: E402
from firmware.agent.hardware import VirtualHardware  # noqa: E402
from firmware.agent.profiles import load_profile  # noqa: E402
from tests.modbus_server import ModbusTestServer  # noqa: E402
from tests.process_helpers import free_ports  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

PROFILES = ["thermostat", "relay", "dimmer", "door", "meter"]
SOAK_DB = "meshhub_soak"
SOAK_REDIS_DB = 12
RESULT_MARKER = "BENCH-RESULT "


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the fleet --------------------------------------------------------------------------------


class SoakAgent(Agent):
    """The reference agent, counting which command ids it executed (the books need ids;
    the agent itself only keeps the last 256 results)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed_ids: list[str] = []

    def execute(self, body: dict[str, Any]) -> tuple[Any, ...]:
        self.executed_ids.append(self._current_command)
        result: tuple[Any, ...] = super().execute(body)
        return result

    def on_command(self, conn: Any, message: dict[str, Any]) -> None:
        self._current_command = message.get("id")
        super().on_command(conn, message)


def agent_books(agent: Agent) -> dict[str, int]:
    """What the agent measured, dropped and still holds (its own counters)."""
    return {
        "measured": int(getattr(agent, "measured", 0)),
        "dropped": int(getattr(agent, "dropped_events", 0)),
        "refused": int(getattr(agent, "refused_reports", 0)),
        "unacked": len(getattr(agent, "outbox", [])),
    }


def setting_value(profile: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    """A valid `set`/`toggle` for one writable capability of the profile, or None."""
    writable = [c for c in profile["capabilities"] if c.get("writable", c.get("kind") != "sensor")]
    if not writable:
        return None
    cap = rng.choice(writable)
    if cap.get("value_type") == "bool":
        return cap["name"], {"capability": cap["name"], "action": "toggle"}
    if cap.get("value_type") in ("int", "float"):
        low, high = cap.get("min", 0), cap.get("max", 100)
        value: Any = rng.randint(int(low), int(high)) if cap["value_type"] == "int" else round(rng.uniform(low, high), 1)
        return cap["name"], {"capability": cap["name"], "action": "set", "value": value}
    if cap.get("value_type") == "enum" and cap.get("choices"):
        return cap["name"], {"capability": cap["name"], "action": "set", "value": rng.choice(cap["choices"])}
    return None


# --- processes --------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def worker_pid(hub_pid: int) -> int | None:
    """The Celery worker's main process: runhub's child running `celery ... worker`."""
    for child in children(hub_pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"celery" in b" ".join(cmd):
            return child
    return None


def recreate_database(name: str) -> None:
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


SETUP_SCRIPT = """
import json, sys
from django.contrib.auth import get_user_model
from audit.services import Actor
from devices import identity
from hub.models import ApiToken
count, profiles = int(sys.argv[1]), sys.argv[2].split(",")
user = get_user_model().objects.create_superuser("soak", password="soak-Pass-123")
_, token = ApiToken.issue(user, ["read-status", "command", "admin"])
tickets = []
for i in range(count):
    profile = profiles[i % len(profiles)]
    node_id = f"soak-{profile}-{i // len(profiles) + 1}"
    tickets.append(identity.create_enrollment(Actor.system("soak"), node_id, device_type=profile, ttl_s=3600).as_dict())
print(json.dumps({"token": token, "tickets": tickets}))
"""


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (OSError, ValueError) as exc:
            return 0, {"error": str(exc)}

    def get(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (OSError, ValueError) as exc:
            return 0, {"error": str(exc)}


# --- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--report-s", type=float, default=5.0, help="each device reports this often")
    parser.add_argument("--flap-s", type=float, default=1.0, help="one random device link is reset this often")
    parser.add_argument("--outage-s", type=float, default=30.0, help="how long PostgreSQL and Redis are cut")
    parser.add_argument("--commands-per-s", type=float, default=2.0)
    parser.add_argument("--drain-s", type=float, default=180.0, help="at most this long for buffers and commands to settle")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    rng = random.Random(14)
    duration = args.minutes * 60

    data_dir = tempfile.mkdtemp(prefix="meshhub-soak-")
    recreate_database(SOAK_DB)
    import redis

    redis.Redis(port=6379, db=SOAK_REDIS_DB).flushdb()
    pg_proxy = TcpProxy("127.0.0.1", 5432)
    redis_proxy = TcpProxy("127.0.0.1", 6379)
    http_port, enroll_port, mesh_port = free_ports(3)
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "MESHHUB_DATA_DIR": data_dir,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_proxy.port}/{SOAK_DB}",
            "REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/{SOAK_REDIS_DB}",
            "MESHHUB_PUBLIC_HOST": "127.0.0.1",
            "MESHHUB_LOG_LEVEL": "WARNING",
            # The whole fleet enrolls from one address in the first minute (a policy, not a capacity).
            "MESHHUB_ENROLL_ATTEMPTS_PER_MINUTE": str(max(10, args.devices * 2)),
        }
    )
    log(f"data dir {data_dir}; migrating {SOAK_DB}")
    manage(env, "migrate", "--no-input", "-v", "0")
    setup = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "manage.py"),
            "shell",
            "-c",
            SETUP_SCRIPT.replace("sys.argv[1]", repr(str(args.devices))).replace("sys.argv[2]", repr(",".join(PROFILES))),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    prepared = json.loads(setup.stdout.strip().splitlines()[-1])
    api = Api(f"http://127.0.0.1:{http_port}", prepared["token"])

    hub_log = open(os.path.join(data_dir, "runhub.log"), "w")
    hub = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "manage.py"), "runhub", "--host", "127.0.0.1", "--port", str(http_port), "--device-host", "127.0.0.1",
         "--enroll-port", str(enroll_port), "--mesh-port", str(mesh_port), "--discovery-port", "0", "--concurrency", "2"],
        env=env, stdout=hub_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    mesh_proxy = TcpProxy("127.0.0.1", mesh_port)
    modbus = ModbusTestServer().start()
    results: dict[str, Any] = {"devices": args.devices, "minutes": args.minutes}
    try:
        deadline = time.monotonic() + 60
        while api.get("/healthz")[0] != 200:
            if hub.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"runhub did not come up; log in {data_dir}/runhub.log")
            time.sleep(0.5)
        status, answer = api.post(
            "/api/v1/modbus/import/",
            {"bridges": [{"node_id": "soak-plc", "name": "Soak line", "host": "127.0.0.1", "port": modbus.port, "unit_id": 1, "timeout_s": 0.5, "retries": 0, "poll_interval_s": 1.0,
                          "points": [{"capability": "temp", "register": "holding", "address": 0, "data_type": "u16", "min": 0, "max": 1000},
                                     {"capability": "speed", "register": "holding", "address": 10, "data_type": "u16", "writable": True, "min": 0, "max": 3000}]}]},
        )  # fmt: skip
        if status != 200:
            raise SystemExit(f"Modbus import refused: {status} {answer}")

        # Enroll through the real flow, then point each device at the flapping proxy.
        root = Path(data_dir) / "fleet"
        root.mkdir()
        agents: list[SoakAgent] = []
        stop_fleet = threading.Event()
        log(f"enrolling {args.devices} devices")
        for ticket in prepared["tickets"]:
            state_dir = root / ticket["node_id"]
            state_dir.mkdir()
            core_enroll.enroll(
                agent_port, "127.0.0.1", enroll_port, ticket["node_id"], ticket["code"], ticket.get("pin"), ticket["ca_fingerprint"], str(state_dir)
            )
            hub_json = json.loads((state_dir / "hub.json").read_text())
            hub_json.update({"mesh_host": "127.0.0.1", "mesh_port": mesh_proxy.port})
            (state_dir / "hub.json").write_text(json.dumps(hub_json))
            profile = load_profile(ticket["device_type"])
            agents.append(SoakAgent(agent_port, str(state_dir), profile, VirtualHardware(profile, seed=len(agents)), report_s=args.report_s))
        threads = [threading.Thread(target=a.run, args=(stop_fleet.is_set,), name=a.node_id, daemon=True) for a in agents]
        for thread in threads:
            thread.start()
        log(f"{len(agents)} agents running; soak for {args.minutes:g} min")

        # The command driver.
        sent: list[dict[str, Any]] = []
        refused: Counter[str] = Counter()
        plc_sent: list[str] = []
        stop_driver = threading.Event()

        def drive() -> None:
            next_plc = time.monotonic()
            while not stop_driver.wait(1.0 / args.commands_per_s):
                agent = rng.choice(agents)
                choice = setting_value(agent.profile, rng)
                if choice is not None:
                    status, answer = api.post(f"/api/v1/devices/{agent.node_id}/commands/", {**choice[1], "ttl_s": 600})
                    if status == 201:
                        sent.append({"id": answer["id"], "node_id": agent.node_id})
                    else:
                        refused[f"{status} {answer.get('reason') or answer.get('detail') or answer.get('error', '')}"[:120]] += 1
                if time.monotonic() >= next_plc:
                    next_plc += 5
                    status, answer = api.post(
                        "/api/v1/devices/soak-plc/commands/", {"capability": "speed", "action": "set", "value": rng.randint(0, 3000), "ttl_s": 600}
                    )
                    if status == 201:
                        plc_sent.append(answer["id"])
                    else:
                        refused[f"plc {status}"] += 1

        # RSS of the hub process and of its worker's process group.
        rss: list[tuple[float, int, int]] = []

        def sample_rss() -> None:
            start = time.monotonic()
            while not stop_driver.wait(10):
                worker = worker_pid(hub.pid)
                worker_kb = sum(rss_kb(p) for p in ([worker, *descendants(worker)] if worker else []))
                rss.append((time.monotonic() - start, rss_kb(hub.pid), worker_kb))

        stop_flap = threading.Event()
        flaps = Counter[str]()

        def flap() -> None:
            while not stop_flap.wait(args.flap_s):
                flaps["reset" if mesh_proxy.reset_one(rng) else "idle"] += 1

        for target in (drive, sample_rss, flap):
            threading.Thread(target=target, daemon=True).start()

        faults: list[dict[str, Any]] = []
        start = time.monotonic()

        def wait_until(fraction: float) -> None:
            remaining = start + duration * fraction - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)

        wait_until(0.25)
        log(f"PostgreSQL cut for {args.outage_s:g} s")
        pg_proxy.cut()
        time.sleep(args.outage_s)
        pg_proxy.restore()
        faults.append({"fault": "postgresql cut", "at_s": round(duration * 0.25), "for_s": args.outage_s})
        wait_until(0.5)
        log(f"Redis cut for {args.outage_s:g} s")
        redis_proxy.cut()
        time.sleep(args.outage_s)
        redis_proxy.restore()
        faults.append({"fault": "redis cut", "at_s": round(duration * 0.5), "for_s": args.outage_s})
        wait_until(0.7)
        worker = worker_pid(hub.pid)
        log(f"SIGKILL the worker's process group ({worker})")
        if worker:
            os.killpg(worker, signal.SIGKILL)
        faults.append({"fault": "worker SIGKILL", "at_s": round(duration * 0.7), "pid": worker})
        wait_until(1.0)

        # Settle: no new commands, links steady, agents stop measuring and empty their buffers.
        stop_driver.set()
        stop_flap.set()
        log("settling: agents stop measuring and drain")
        for agent in agents:
            agent.report_s = 10**6  # the next report is due in eleven days
        settle_deadline = time.monotonic() + args.drain_s
        while time.monotonic() < settle_deadline:
            if all(agent_books(a)["unacked"] == 0 for a in agents) and not pending_commands(sent, plc_sent):
                break
            time.sleep(2)
        stop_fleet.set()
        for thread in threads:
            thread.join(15)

        results.update(books(agents, sent, plc_sent, refused))
        results["faults"] = faults
        results["flaps"] = flaps["reset"]
        results["rss"] = rss_summary(rss)
        results["audit_verify"] = manage(env, "audit", "verify").strip().splitlines()
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(hub.pid, signal.SIGKILL)
        modbus.stop()
        for proxy in (mesh_proxy, pg_proxy, redis_proxy):
            proxy.close()
        hub_log.close()

    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    balanced = results["reports_unbalanced_devices"] == 0 and results["commands_executed_twice"] == 0 and results["commands_lost"] == 0
    return 0 if balanced else 1


def db() -> psycopg.Connection[Any]:
    return psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={SOAK_DB}", autocommit=True)


def pending_commands(sent: list[dict[str, Any]], plc_sent: list[str]) -> int:
    ids = [c["id"] for c in sent] + plc_sent
    if not ids:
        return 0
    with db() as conn:
        row = conn.execute("SELECT count(*) FROM devices_command WHERE id::text = ANY(%s) AND status IN ('pending', 'delivered')", (ids,)).fetchone()
    return int(row[0]) if row else 0


def books(agents: list[SoakAgent], sent: list[dict[str, Any]], plc_sent: list[str], refused: Counter[str]) -> dict[str, Any]:
    with db() as conn:
        stored = dict(
            conn.execute(
                "SELECT d.node_id, count(DISTINCT s.ts) FROM devices_telemetrysample s JOIN devices_device d ON d.id = s.device_id WHERE d.node_id LIKE 'soak-%%' GROUP BY d.node_id"
            ).fetchall()
        )
        statuses = dict(conn.execute("SELECT id::text, status FROM devices_command").fetchall())
        gaps = conn.execute("SELECT count(*) FROM audit_auditevent WHERE action LIKE 'audit.%%'").fetchone()
    measured = dropped = refused_total = unacked = stored_total = 0
    unbalanced = []
    for agent in agents:
        own = agent_books(agent)
        got = int(stored.get(agent.node_id, 0))
        measured += own["measured"]
        dropped += own["dropped"]
        unacked += own["unacked"]
        stored_total += got
        refused_total += own["refused"]
        if own["measured"] != got + own["dropped"] + own["refused"] + own["unacked"]:
            unbalanced.append({"node_id": agent.node_id, **own, "stored": got})
    executions = Counter(cid for agent in agents for cid in agent.executed_ids)
    sent_ids = [c["id"] for c in sent]
    twice = [cid for cid in sent_ids if executions[cid] > 1]
    never = [cid for cid in sent_ids if executions[cid] == 0]
    never_by_status = Counter(statuses.get(cid, "missing") for cid in never)
    lost = [cid for cid in never if statuses.get(cid) not in ("expired", "failed")]
    return {
        "reports_measured": measured,
        "reports_stored": stored_total,
        "reports_dropped_by_agents": dropped,
        "reports_refused_by_hub": refused_total,
        "reports_unacked_at_end": unacked,
        "reports_unbalanced_devices": len(unbalanced),
        "reports_unbalanced_examples": unbalanced[:5],
        "commands_sent": len(sent_ids),
        "commands_refused_by_api": dict(refused),
        "commands_executed_once": sum(1 for cid in sent_ids if executions[cid] == 1),
        "commands_executed_twice": len(twice),
        "commands_not_executed_by_status": dict(never_by_status),
        "commands_lost": len(lost),
        "plc_commands_sent": len(plc_sent),
        "plc_commands_by_status": dict(Counter(statuses.get(cid, "missing") for cid in plc_sent)),
        "audit_events_about_audit": int(gaps[0]) if gaps else 0,
    }


def rss_summary(samples: list[tuple[float, int, int]]) -> dict[str, Any]:
    if not samples:
        return {}
    hub_kb = [s[1] for s in samples]
    worker_kb = [s[2] for s in samples]
    half = len(samples) // 2 or 1
    return {
        "samples": len(samples),
        "hub_first_mb": round(hub_kb[0] / 1024, 1),
        "hub_max_first_half_mb": round(max(hub_kb[:half]) / 1024, 1),
        "hub_max_second_half_mb": round(max(hub_kb[half:] or hub_kb) / 1024, 1),
        "hub_last_mb": round(hub_kb[-1] / 1024, 1),
        "worker_max_mb": round(max(worker_kb) / 1024, 1),
        "worker_last_mb": round(worker_kb[-1] / 1024, 1),
    }


def report(results: dict[str, Any]) -> None:
    for key, value in results.items():
        if isinstance(value, int | float | str):
            print(f"{key}: {value}")
        else:
            print(f"{key}: {json.dumps(value)}")
    print(RESULT_MARKER + json.dumps(results), flush=True)


if __name__ == "__main__":
    sys.exit(main())
