"""Mesh gateway benchmark, side by side with Mosquitto measured in the same run.

    python bench/gateway.py                          # or: python bench/run.py --part gateway (about 5 minutes)
    python bench/gateway.py --configs sqlite         # embedded only
    python bench/gateway.py --configs sqlite+redis:commands --json out.json

Figures (acceptance items of the "Mesh gateway" issue):

- mTLS handshakes per gateway CPU-second (goal >= 1.0x Mosquitto's per broker CPU-second),
- gateway memory per idle session (goal <= 40 KB),
- state reports persisted per second (goal >= 0.5x Mosquitto's QoS1 messages/s),
- command round trip p50/p99 with 1,000 connected devices.

Method. First the peer's own script, `../shared/peers/mosquitto_baseline.sh`, with this
interpreter as PYTHON (its `name: value unit` lines are parsed). Then per configuration:
`sqlite` = embedded (SQLite in a fresh MESHHUB_DATA_DIR, in-memory channel layer),
`postgres+redis` = production (a recreated PostgreSQL database, channels-redis on a Redis
database of its own); `@asyncio` runs the gateway without uvloop (bench/stock_asyncio
hides it; runmesh then uses the stock loop, its documented fallback); `:a+b` picks phases.

1. `setup` (own process, Django): migrate, `identity.ensure_hub_identity()`, then N
   provisioned thermostats: a P-256 key and CSR each, the certificate from
   `pki.sign_device_csr` with the active CA (as `identity.authority.issue_certificate` does, minus
   the PBKDF2-guarded enrollment), Certificate rows active, the thermostat capabilities;
   keys and certificates written where the load client reads them.
2. Per phase a fresh `manage.py runmesh` as its own process: its CPU is utime+stime of
   that pid (all threads: the event loop, the database threads, SQLite) over exactly the
   window, split per thread; its memory is VmRSS, as the Mosquitto script reads the broker's.
3. The load client `bench/gateway_client.py` (asyncio + uvloop + stdlib ssl):
   - handshakes: 2 processes x 48 loops, 10 s; a TLS handshake not done within 1 s is
     given up and counted as stalled (see docs/performance.md: on uvloop most are);
   - idle: 20 warm-up sessions opened and closed, then 1,000 sessions (TLS + welcome +
     hello + session; a stalled handshake is retried after 0.3 s), RSS after - before;
   - floor: the same SSL context on a bare `asyncio.start_server(ssl=...)` (uvloop, then
     stock asyncio) holding 1,000 connections: what TLS + streams cost before the gateway;
   - state: 50 sessions x 16 frames in flight (Mosquitto's QoS1 shape), then 400 x 4, 10 s
     each, the thermostat agent's three values per report, the per-device frame limit
     raised (a policy, not a capacity); TelemetrySample rows are checked against the acks;
   - commands, on the gateway that holds the 1,000 idle sessions: 300 commands at 25/s,
     one per device, through `devices.services.send_command()` (own process, Django); the
     client answers `ack` then `result` at once; round trip = Command.completed_at -
     created_at, both stamped by the hub;
   - acks-slow-subscriber: the state load of `--acks-shape` (50 sessions x 1 frame in
     flight), 10 s, twice: on a plain runmesh, then on one run with
     DJANGO_SETTINGS_MODULE=bench.settings_slow_subscriber, whose bench-only app
     (bench/slow_subscriber/) registers through `devices.events.on_state` a subscriber
     that sleeps `--slow-subscriber-ms` (50) per committed batch; each report's ack latency
     (p50/p95/p99/max), the state-subscriber queue counts from the gateway's Heartbeat row
     (the first stamp after the load, read before runmesh stops) and TelemetrySample rows
     checked against the acks. Does a slow subscriber delay device acks?

With the in-memory channel layer the nudge that `send_command()` sends after commit
stays inside the process that sent it, so an embedded gateway (another process) only
learns of a command from its 1-second outbox sweep; with Redis the nudge should reach it.

Prints `name: value unit` lines, ratios to Mosquitto, the goals and a markdown table;
`--json FILE` keeps everything; `--profile handshakes|state` runs that gateway under
cProfile; `--memprofile` attributes the idle growth with tracemalloc (slow; not a figure
run). docs/performance.md ("Mesh gateway") records a run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, REPO_ROOT, log, percentile  # bench/ is the script directory, first on sys.path; it also sets up the import path

CLIENT = BENCH_DIR / "gateway_client.py"
MOSQUITTO_SCRIPT = REPO_ROOT.parent / "shared" / "peers" / "mosquitto_baseline.sh"
RESULT_MARKER = "BENCH-RESULT "
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meshhub_bench_gateway"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
CONFIGS = ("sqlite", "sqlite+redis", "postgres", "postgres+redis")  # each may end in @asyncio: the gateway without uvloop
PHASES = ("handshakes", "idle", "floor", "state", "commands", "acks-slow-subscriber")
DEFAULT_CONFIGS = "sqlite,postgres+redis:handshakes+state=50x16+idle+commands+acks-slow-subscriber"
HANDSHAKE_GOAL = 1.0  # x Mosquitto handshakes per broker CPU-second
IDLE_GOAL_KB = 40.0
STATE_GOAL = 0.5  # x Mosquitto QoS1 msgs/s
NODE_PREFIX = "bench-"
SLOW_SUBSCRIBER_SETTINGS = "bench.settings_slow_subscriber"  # hub.settings + bench/slow_subscriber/


def result_line(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    raise RuntimeError("no result line")


# ================================================================ Django-side workers
# Each runs in its own process with the configuration's environment (Django reads its
# settings once per process).


def worker_setup(argv: list[str]) -> None:
    """Migrate, create the hub identity and provision N thermostats with certificates."""
    parser = argparse.ArgumentParser(prog="gateway.py setup")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from devices import capabilities as declarations
    from devices import identity, pki
    from devices.models import Capability, Certificate, Device, DeviceStatus
    from firmware.agent.profiles import PROFILES

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_s = time.perf_counter() - t0
    identity.ensure_hub_identity()
    ca = identity.active_ca()
    ca_key, ca_cert = identity.ca_material(ca)
    thermostat: Any = PROFILES["thermostat"]
    declared = thermostat["capabilities"]
    caps, problems = declarations.check_declaration(declared)
    assert not problems, problems
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_text("".join(c.cert_pem for c in identity.trusted_cas()))
    validity = datetime.timedelta(days=settings.CERT_VALIDITY_DAYS)

    t1 = time.perf_counter()
    node_ids = [f"{NODE_PREFIX}{i:05d}" for i in range(args.devices)]
    with transaction.atomic():
        Device.objects.bulk_create(
            [Device(node_id=n, name=n, device_type="thermostat", status=DeviceStatus.PROVISIONED) for n in node_ids],
            batch_size=500,
        )
        pks = dict(Device.objects.filter(node_id__in=node_ids).values_list("node_id", "pk"))
        certificates: list[Certificate] = []
        capability_rows: list[Capability] = []
        for i, node_id in enumerate(node_ids):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])).sign(key, hashes.SHA256())
            parsed = pki.parse_csr(csr.public_bytes(serialization.Encoding.PEM).decode())
            cert = pki.sign_device_csr(ca_key, ca_cert, parsed, node_id, validity)
            cert_pem = pki.cert_pem(cert)
            certificates.append(
                Certificate(
                    ca=ca,
                    device_id=pks[node_id],
                    serial=format(cert.serial_number, "x"),
                    fingerprint=pki.fingerprint(cert),
                    pem=cert_pem.decode(),
                    not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc,
                )
            )
            capability_rows.extend(Capability(device_id=pks[node_id], **cap) for cap in caps)
            (out / f"dev{i:05d}.key").write_bytes(
                key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            )
            (out / f"dev{i:05d}.crt").write_bytes(cert_pem)
        Certificate.objects.bulk_create(certificates, batch_size=500)
        Capability.objects.bulk_create(capability_rows, batch_size=500)
    provision_s = time.perf_counter() - t1
    print(RESULT_MARKER + json.dumps({"migrate_s": migrate_s, "provision_s": provision_s, "devices": len(node_ids), "database": database_info(connection)}))


def database_info(connection: Any) -> dict[str, Any]:
    import sqlite3

    info: dict[str, Any] = {"vendor": connection.vendor}
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            info["version"] = sqlite3.sqlite_version
            cursor.execute("PRAGMA journal_mode")
            info["journal_mode"] = cursor.fetchone()[0]
        else:
            cursor.execute("SHOW server_version")
            info["version"] = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            info["synchronous_commit"] = cursor.fetchone()[0]
    return info


def worker_count(argv: list[str]) -> None:
    import django

    django.setup()
    from audit.models import AuditEvent
    from devices.models import Device, TelemetrySample

    print(
        RESULT_MARKER
        + json.dumps(
            {
                "telemetry": TelemetrySample.objects.count(),
                "audit": AuditEvent.objects.count(),
                "online": Device.objects.filter(online=True).count(),
            }
        )
    )


def worker_heartbeat(argv: list[str]) -> None:
    """The running gateway's Heartbeat row (`gateway:<id>`, stamped every GATEWAY_STAMP_S),
    waiting for the first stamp at or after `--after` (epoch seconds): what it says of the
    state-subscriber queue once the load is over. Must run before the gateway stops (it
    deletes its row on shutdown)."""
    parser = argparse.ArgumentParser(prog="gateway.py heartbeat")
    parser.add_argument("--pid", type=int, required=True, help="the gateway's pid (details.pid of its row)")
    parser.add_argument("--after", type=float, required=True)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.conf import settings

    from hub.models import Heartbeat

    deadline = time.monotonic() + 2 * float(settings.GATEWAY_STAMP_S) + 5
    row = None
    while True:
        row = next((r for r in Heartbeat.objects.filter(name__startswith="gateway:") if r.details.get("pid") == args.pid), None)
        fresh = row is not None and row.at.timestamp() >= args.after
        if fresh or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out: dict[str, Any] = {"found": row is not None, "fresh": fresh, "stamp_every_s": float(settings.GATEWAY_STAMP_S)}
    if row is not None:
        out.update(name=row.name, stamped_after_load_s=row.at.timestamp() - args.after, details=row.details)
    print(RESULT_MARKER + json.dumps(out))


def worker_commands(argv: list[str]) -> None:
    """Idle memory and command round trips on one gateway: the client process opens and
    holds N sessions (and measures the gateway's RSS around opening them); then commands
    go out at a fixed rate, one per device, and the round trips are read from the rows."""
    parser = argparse.ArgumentParser(prog="gateway.py commands")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate", type=float, default=25.0, help="commands created per second")
    parser.add_argument("--warmup", type=int, default=5, help="untimed commands first")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between the last session opened and the RSS reading")
    parser.add_argument("--snapshots", help="passed to the client: tracemalloc snapshots of the gateway before and after opening")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from audit.services import Actor
    from devices.models import Command, CommandStatus
    from devices.services import send_command

    client = subprocess.Popen(
        [
            sys.executable,
            str(CLIENT),
            "sessions",
            "--dir",
            args.dir,
            "--port",
            str(args.port),
            "--sessions",
            str(args.sessions),
            "--pid",
            str(args.pid),
            "--settle",
            f"{args.settle:g}",
            *(["--snapshots", args.snapshots] if args.snapshots else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None
    line = client.stdout.readline()
    if not line.startswith("READY "):
        client.kill()
        raise SystemExit(f"sessions client failed: {line!r}")
    idle = json.loads(line[len("READY ") :])
    held = idle["sessions"]
    log(f"  {held} sessions open in {idle['opened_s']:.1f} s ({idle['errors']} errors, {idle['stalled_handshakes']} stalled handshakes retried)")
    log(f"  gateway RSS {idle['rss_before_kb']} KB -> {idle['rss_after_kb']} KB: {idle['kb_per_session']:.1f} KB/session")
    if args.commands == 0:
        client.stdin.close()
        client.wait(60)
        idle["online_after_close"] = online_after_close()
        print(RESULT_MARKER + json.dumps({"idle": idle}))
        return
    actor = Actor("user", "bench")
    done_statuses = [CommandStatus.SUCCEEDED, CommandStatus.FAILED]

    def wait_done(ids: list[Any], timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        finished = 0
        while time.monotonic() < deadline:
            finished = Command.objects.filter(id__in=ids, status__in=done_statuses).count()
            if finished == len(ids):
                break
            time.sleep(0.2)
        return finished

    targets = random.sample(range(held), min(held, args.warmup + args.commands))  # one command per device
    warm = [send_command(actor, f"{NODE_PREFIX}{i:05d}", "set", "setpoint", 21.0).id for i in targets[: args.warmup]]
    wait_done(warm, 10)
    time.sleep(1.0)

    ids, send_s = [], []
    cpu0, start = proc_cpu_s(args.pid), time.perf_counter()
    for n, i in enumerate(targets[args.warmup :]):
        pause = start + n / args.rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t0 = time.perf_counter()
        ids.append(send_command(actor, f"{NODE_PREFIX}{i:05d}", "set", "setpoint", round(5 + (n % 300) / 10, 1)).id)
        send_s.append(time.perf_counter() - t0)
    sent_window = time.perf_counter() - start
    finished = wait_done(ids, 30)
    wall = time.perf_counter() - start
    cpu1 = proc_cpu_s(args.pid)
    rows = list(Command.objects.filter(id__in=ids).values("id", "status", "created_at", "delivered_at", "completed_at"))

    client.stdin.close()
    output = client.stdout.read()
    client.wait(30)
    sessions = result_line(output)
    idle["online_after_close"] = online_after_close()
    received = sessions.pop("received_ms", {})

    def ms(a: Any, b: Any) -> float:
        return (b - a).total_seconds() * 1000

    done = [r for r in rows if r["status"] == CommandStatus.SUCCEEDED and r["completed_at"] is not None]
    round_trip = [ms(r["created_at"], r["completed_at"]) for r in done]
    delivered = [ms(r["created_at"], r["delivered_at"]) for r in done if r["delivered_at"] is not None]
    at_device = [received[str(r["id"])] - r["created_at"].timestamp() * 1000 for r in done if str(r["id"]) in received]
    print(
        RESULT_MARKER
        + json.dumps(
            {
                "idle": idle,
                "commands": {
                    "sessions": held,
                    "commands": len(ids),
                    "rate_per_s": len(ids) / sent_window,
                    "succeeded": len(done),
                    "finished": finished,
                    "statuses": dict(Counter(r["status"] for r in rows)),
                    "round_trip_ms": summary(round_trip),
                    "created_to_delivered_ms": summary(delivered),
                    "created_to_device_ms": summary(at_device),
                    "send_command_ms": summary([s * 1000 for s in send_s]),
                    "gateway_cpu_s": cpu1 - cpu0,
                    "wall_s": wall,
                    "client": sessions,
                },
            }
        )
    )


def online_after_close(wait_s: float = 3.0) -> int:
    """Devices still marked online `wait_s` after the client closed every session (should be 0)."""
    from devices.models import Device

    time.sleep(wait_s)
    return Device.objects.filter(node_id__startswith=NODE_PREFIX, online=True).count()


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": statistics.median(values), "p99": percentile(values, 99), "max": max(values), "min": min(values)}


def worker_floor_server(argv: list[str]) -> None:
    """The floor under the gateway's memory per session: the same TLS context
    (`hub.mesh.gateway.mesh_context`) on `asyncio.start_server(ssl=...)`, one handler per
    connection that writes a welcome frame and waits in `reader.read()`; no Channels, no
    consumer, no database. Runs until SIGTERM."""
    parser = argparse.ArgumentParser(prog="gateway.py floor-server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], required=True)
    args = parser.parse_args(argv)

    import asyncio

    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    import django

    django.setup()
    from devices import identity
    from hub.mesh import framing
    from hub.mesh.gateway import mesh_context

    context = mesh_context(identity.write_pki_files())
    welcome = framing.encode(framing.envelope("welcome", {"hub_version": "floor"}))

    async def main() -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(welcome)
            try:
                await reader.read(1)
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", args.port, ssl=context, ssl_handshake_timeout=10, backlog=1024)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


WORKERS = {"setup": worker_setup, "count": worker_count, "heartbeat": worker_heartbeat, "commands": worker_commands, "floor-server": worker_floor_server}


# ================================================================ orchestration


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    needle = f":{port:04X} 00000000:0000 0A"
    with open("/proc/net/tcp") as f:
        return any(needle in line for line in f)


def find_processes(comm: str) -> list[int]:
    """Root processes named `comm` (their parent has another name): postmaster, redis-server."""
    names: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        names[int(entry.name)] = (name, int(raw.rsplit(")", 1)[1].split()[1]))
    return [pid for pid, (name, ppid) in names.items() if name == comm and names.get(ppid, ("", 0))[0] != comm]


@dataclass
class Gateway:
    pid: int
    port: int
    log_path: Path


@contextlib.contextmanager
def running_gateway(env: dict[str, str], log_path: Path, profile: Path | None = None, floor_loop: str | None = None) -> Iterator[Gateway]:
    """A fresh `manage.py runmesh` on free ports (or, with `floor_loop`, the bare TLS
    floor server); stopped with SIGTERM (its own pid only)."""
    mesh_port, enroll_port = free_port(), free_port()
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += [
        str(REPO_ROOT / "manage.py"),
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
    if floor_loop is not None:
        command = [sys.executable, str(BENCH_DIR / "gateway.py"), "floor-server", "--port", str(mesh_port), "--loop", floor_loop]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not listening(mesh_port):
            if proc.poll() is not None:
                raise SystemExit(f"runmesh exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"runmesh did not listen on {mesh_port} within 60 s")
            time.sleep(0.1)
        yield Gateway(proc.pid, mesh_port, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def run_py(args: list[str], env: dict[str, str] | None = None, label: str = "", timeout: float = 600) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    try:
        result = result_line(proc.stdout)
    except RuntimeError:
        sys.stderr.write(proc.stdout[-3000:])
        raise SystemExit(f"{label or args[0]}: exited with {proc.returncode} and printed no result")
    if proc.returncode != 0:
        raise SystemExit(f"{label or args[0]}: exited with {proc.returncode}")
    return result


def run_mosquitto(duration: float) -> dict[str, Any]:
    log("=== Mosquitto baseline (../shared/peers/mosquitto_baseline.sh) ===")
    env = {**os.environ, "PYTHON": sys.executable, "DUR": f"{duration:g}"}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(MOSQUITTO_SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"mosquitto_baseline.sh exited with {proc.returncode}")
    figures: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if not sep or not re.fullmatch(r"\w+", key):
            continue
        number = value.split(" ", 1)[0]
        try:
            figures[key] = float(number)
        except ValueError:
            figures[key] = value.strip()
    figures["raw"] = proc.stdout
    figures["stderr"] = proc.stderr
    figures["wall_s"] = time.perf_counter() - t0
    return figures


def clear_redis(url: str) -> None:
    """Drop channels-redis keys (prefix meshhub) left in the bench's own Redis database."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter("meshhub*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def gateway_log_summary(path: Path) -> dict[str, Any]:
    """Warnings and errors the gateway logged (JSON lines or plain text)."""
    counts: dict[str, int] = {}
    first: list[str] = []
    if not path.exists():
        return {}
    for line in path.read_text(errors="replace").splitlines():
        level = ""
        message = line
        try:
            record = json.loads(line)
            level = str(record.get("level") or record.get("levelname") or "").upper()
            message = str(record.get("message") or record.get("msg") or line)
        except (ValueError, AttributeError):
            for name in ("ERROR", "WARNING", "CRITICAL", "Traceback"):
                if name in line:
                    level = name.upper()
        if level in ("ERROR", "WARNING", "CRITICAL", "TRACEBACK"):
            counts[level] = counts.get(level, 0) + 1
            if len(first) < 5:
                first.append(message[:200])
    return {"counts": counts, "first": first}


def parse_config(spec: str) -> tuple[str, str, bool, bool, list[str] | None, list[str] | None]:
    """`sqlite`, `postgres+redis@asyncio:handshakes+state=50x16/400x4` ->
    (name, db, redis, stock loop, phases or None for all, state shapes or None for --state-shapes)."""
    name, _, phases = spec.partition(":")
    base, _, loop = name.partition("@")
    if base not in CONFIGS or loop not in ("", "asyncio", "uvloop"):
        raise ValueError(f"unknown config {spec!r}")
    chosen, shapes = None, None
    if phases:
        chosen = []
        for item in phases.split("+"):
            phase, _, shape_list = item.partition("=")
            if phase not in PHASES or (shape_list and phase != "state"):
                raise ValueError(f"unknown phase {item!r} in {spec!r}")
            if shape_list:
                shapes = shape_list.split("/")
            chosen.append(phase)
    if shapes and not all(re.fullmatch(r"\d+x\d+", x) for x in shapes):
        raise ValueError(f"state shapes are sessions x frames in flight, e.g. state=50x16/400x4, in {spec!r}")
    return name, base.split("+")[0], base.endswith("+redis"), loop == "asyncio", chosen, shapes


def run_config(spec: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from run import base_env, recreate_postgres_database

    name, db, redis_on, stock_loop, only, own_shapes = parse_config(spec)
    phases = [p for p in args.phases if only is None or p in only]
    state_shapes = own_shapes or args.state_shapes
    data_dir = Path(tempfile.mkdtemp(prefix=f"gw-{name.replace('+', '-').replace('@', '-')}-", dir=tmp))
    env = base_env(str(data_dir))
    aux: dict[str, int] = {}
    if db == "postgres":
        recreate_postgres_database(args.postgres_url)
        env["DATABASE_URL"] = args.postgres_url
        for pid in find_processes("postgres"):
            aux["postgres"] = pid
    if redis_on:
        clear_redis(args.redis_url)
        env["REDIS_URL"] = args.redis_url
        for pid in find_processes("redis-server"):
            aux["redis"] = pid
    devices_dir = data_dir / "bench-devices"
    result: dict[str, Any] = {"data_dir": str(data_dir), "config": name, "event_loop": "asyncio (uvloop hidden)" if stock_loop else "uvloop"}
    gateway_env = dict(env)
    if stock_loop:
        gateway_env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR / "stock_asyncio"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log(f"=== gateway, {name}: setup ({args.devices} devices) ===")
    t0 = time.perf_counter()
    result["setup"] = run_py([str(BENCH_DIR / "gateway.py"), "setup", "--devices", str(args.devices), "--out", str(devices_dir)], env, "setup")
    log(f"  migrate {result['setup']['migrate_s']:.1f} s, provision {result['setup']['provision_s']:.1f} s")
    aux_args = [f"--aux={k}={v}" for k, v in aux.items()]
    common = ["--dir", str(devices_dir), "--clients", str(args.devices), "--duration", f"{args.duration:g}"]
    logs = data_dir / "runmesh.log"

    def profile_for(phase: str) -> Path | None:
        return data_dir / f"runmesh-{phase}.pstats" if args.profile == phase else None

    def state_load(gw: Gateway, conns: int, window: int, *extra: str) -> dict[str, Any]:
        """The load client's `state` phase: one process, `conns` sessions x `window` frames in flight."""
        return run_py(
            [
                str(CLIENT),
                "state",
                "--port",
                str(gw.port),
                "--pid",
                str(gw.pid),
                "--procs",
                "1",
                "--conns",
                str(conns),
                "--window",
                str(window),
                "--values",
                str(args.values),
                *common,
                *aux_args,
                *extra,
            ]
        )

    if "handshakes" in phases:
        log(f"=== gateway, {name}: handshakes (2 procs x 48 loops, {args.duration:g} s) ===")
        with running_gateway(gateway_env, logs, profile_for("handshakes")) as gw:
            time.sleep(0.5)
            result["handshakes"] = run_py(
                [str(CLIENT), "handshakes", "--port", str(gw.port), "--pid", str(gw.pid), "--procs", "2", "--concurrency", "48", *common, *aux_args]
            )
            result["handshakes"]["gateway_rss_kb"] = rss_kb(gw.pid)
            result["handshakes"]["handshake_timeout_s"] = 1.0
    if "floor" in phases:
        result["floor"] = {}
        for loop_name in ("uvloop", "asyncio"):
            log(f"=== bare TLS floor server ({loop_name}), {args.sessions} connections ===")
            with running_gateway(env, logs, floor_loop=loop_name) as gw:
                time.sleep(0.5)
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(CLIENT),
                        "sessions",
                        "--no-hello",
                        "--port",
                        str(gw.port),
                        "--pid",
                        str(gw.pid),
                        "--sessions",
                        str(args.sessions),
                        *common,
                    ],
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    timeout=300,
                    check=False,
                )
                ready = next((json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("READY ")), None)
                if ready is None:
                    raise SystemExit(f"floor client failed: {proc.stdout[-2000:]}")
                result["floor"][loop_name] = ready
            if loop_name == "uvloop" and "handshakes" in phases:
                # The handshake ceiling of Python's ssl + the event loop with this context:
                # the same handshake load as the gateway's, against the bare server.
                log(f"=== bare TLS floor server ({loop_name}): handshakes (2 procs x 48 loops, {args.duration:g} s) ===")
                with running_gateway(env, logs, floor_loop=loop_name) as gw:
                    time.sleep(0.5)
                    result["floor_handshakes"] = run_py(
                        [str(CLIENT), "handshakes", "--port", str(gw.port), "--pid", str(gw.pid), "--procs", "2", "--concurrency", "48", *common]
                    )
    if "state" in phases:
        result["state"] = []
        for shape in state_shapes:
            conns, window = (int(x) for x in shape.split("x"))
            log(f"=== gateway, {name}: state (1 proc x {conns} sessions x {window} in flight, {args.duration:g} s) ===")
            state_env = dict(gateway_env)
            if args.rate_limit == "off":
                state_env["MESHHUB_MESH_FRAMES_PER_S"] = "1000000"
                state_env["MESHHUB_MESH_FRAME_BURST"] = "1000000"
            before = run_py([str(BENCH_DIR / "gateway.py"), "count"], env, "count")
            with running_gateway(state_env, logs, profile_for("state") if shape == state_shapes[0] else None) as gw:
                time.sleep(0.5)
                state = state_load(gw, conns, window)
            after = run_py([str(BENCH_DIR / "gateway.py"), "count"], env, "count")
            state.update(
                shape=shape,
                conns=conns,
                window=window,
                telemetry_rows_written=after["telemetry"] - before["telemetry"],
                telemetry_rows_expected=state["acked"] * args.values,
                values_per_report=args.values,
                rate_limit=args.rate_limit,
            )
            result["state"].append(state)
    if "idle" in phases or "commands" in phases:
        commands = args.commands if "commands" in phases else 0
        log(f"=== gateway, {name}: {args.sessions} sessions (idle memory), then {commands} commands at {args.command_rate:g}/s ===")
        sessions_env, snapshots = dict(gateway_env), []
        if args.memprofile:
            snapshot_dir = data_dir / "tracemalloc"
            snapshot_dir.mkdir()
            sessions_env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR / "tracemalloc_hook"), gateway_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            sessions_env["BENCH_TRACEMALLOC_DIR"] = str(snapshot_dir)
            snapshots = ["--snapshots", str(snapshot_dir)]
        with running_gateway(sessions_env, logs) as gw:
            time.sleep(0.5)
            both = run_py(
                [
                    str(BENCH_DIR / "gateway.py"),
                    "commands",
                    "--dir",
                    str(devices_dir),
                    "--port",
                    str(gw.port),
                    "--pid",
                    str(gw.pid),
                    "--sessions",
                    str(args.sessions),
                    "--commands",
                    str(commands),
                    "--rate",
                    f"{args.command_rate:g}",
                    *snapshots,
                ],
                env,
                "commands",
            )
        if "idle" in phases:
            result["idle"] = both["idle"]
        if args.memprofile:
            result["idle"]["tracemalloc"] = memory_attribution(data_dir / "tracemalloc", both["idle"])
        if "commands" in both:
            result["commands"] = both["commands"]
    if "acks-slow-subscriber" in phases:
        # Last, so the phases above see the same database as before this phase existed.
        conns, window = (int(x) for x in args.acks_shape.split("x"))
        result["acks"] = []
        before = run_py([str(BENCH_DIR / "gateway.py"), "count"], env, "count")
        for subscriber_ms in (0.0, args.slow_subscriber_ms):
            acks_env = dict(gateway_env)  # the production frame limit: 1 frame in flight stays far below it
            what = "no extra subscriber"
            if subscriber_ms:
                acks_env["DJANGO_SETTINGS_MODULE"] = SLOW_SUBSCRIBER_SETTINGS
                acks_env["BENCH_SLOW_SUBSCRIBER_MS"] = f"{subscriber_ms:g}"
                what = f"a {subscriber_ms:g} ms/batch state subscriber"
            log(f"=== gateway, {name}: state ack latency, {what} (1 proc x {conns} sessions x {window} in flight, {args.duration:g} s) ===")
            with running_gateway(acks_env, logs) as gw:
                time.sleep(0.5)
                acks = state_load(gw, conns, window, "--latency", "--latency-skip", f"{args.latency_skip:g}")
                acks["heartbeat"] = run_py(
                    [str(BENCH_DIR / "gateway.py"), "heartbeat", "--pid", str(gw.pid), "--after", f"{time.time():.3f}"], env, "heartbeat"
                )
            after = run_py([str(BENCH_DIR / "gateway.py"), "count"], env, "count")
            acks.update(
                shape=args.acks_shape,
                conns=conns,
                window=window,
                subscriber_ms=subscriber_ms,
                telemetry_rows_written=after["telemetry"] - before["telemetry"],
                telemetry_rows_expected=acks["acked"] * args.values,
                values_per_report=args.values,
            )
            result["acks"].append(acks)
            before = after
    result["gateway_log"] = gateway_log_summary(logs)
    if args.profile:
        pstats_path = data_dir / f"runmesh-{args.profile}.pstats"
        if pstats_path.exists():
            result["profile"] = profile_text(pstats_path)
    result["wall_s"] = time.perf_counter() - t0
    return result


def proc_cpu_s(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def args_handshake_timeout(result: dict[str, Any]) -> float:
    return float(result.get("handshakes", {}).get("handshake_timeout_s", 1.0))


def memory_attribution(directory: Path, idle: dict[str, Any], limit: int = 25) -> str:
    """Python allocations that grew while the idle sessions opened, per session, by source line."""
    import tracemalloc

    before = tracemalloc.Snapshot.load(str(directory / "snap-0.pickle"))
    after = tracemalloc.Snapshot.load(str(directory / "snap-1.pickle"))
    n = max(idle["sessions"], 1)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    traced = (sum(s.size for s in after.statistics("filename")) - sum(s.size for s in before.statistics("filename"))) / 1024 / n
    rss = (idle["rss_after_kb"] - idle["rss_before_kb"]) / n
    lines = [
        f"traced by tracemalloc: {traced:.1f} KB/session of {rss:.1f} KB/session RSS growth "
        "(RSS here includes tracemalloc's own bookkeeping; the rest is native: OpenSSL, the loop's C buffers, allocator slack)",
        "top source lines by growth (KB per session, objects per session):",
    ]
    for stat in after.compare_to(before, "lineno")[:limit]:
        frame = stat.traceback[0]
        where = f"{frame.filename.replace(str(REPO_ROOT) + '/', '')}:{frame.lineno}"
        lines.append(f"  {stat.size_diff / 1024 / n:8.2f} KB  {stat.count_diff / n:6.1f}  {where}")
    by_file = after.compare_to(before, "filename")[:12]
    lines.append("by file:")
    for stat in by_file:
        lines.append(f"  {stat.size_diff / 1024 / n:8.2f} KB  {stat.traceback[0].filename.replace(str(REPO_ROOT) + '/', '')}")
    return "\n".join(lines)


def profile_text(path: Path, limit: int = 30) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


# ================================================================ report


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def per_s(r: dict[str, Any]) -> float:
    return float(r["n"]) / r["window_s"]


def per_cpu_s(r: dict[str, Any]) -> float:
    return float(r["n"]) / max(r["gateway_cpu_s"], 1e-9)


def figures(mosq: dict[str, Any], results: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, str]]]:
    """(figure, unit, {column: text}) rows for the markdown table; columns: Mosquitto + each config."""
    rows: list[tuple[str, str, dict[str, str]]] = []
    mq = mosq.get

    def col(getter: Any) -> dict[str, str]:
        out = {}
        for name, r in results.items():
            try:
                out[name] = getter(r)
            except (KeyError, TypeError, IndexError, ZeroDivisionError):
                out[name] = "—"
        return out

    def add(figure: str, unit: str, mosquitto: str, getter: Any) -> None:
        rows.append((figure, unit, {"Mosquitto": mosquitto, **col(getter)}))

    def mosq_util(prefix: str) -> str:
        return fmt(mq(f"{prefix}_broker_cpu_s", 0) / mq(f"{prefix}_window_s", 1) * 100) if mosq else "—"

    add("mTLS handshakes", "conn/s", fmt(mq("mtls_handshakes_per_s", 0)), lambda r: fmt(per_s(r["handshakes"])))
    add("handshakes per server CPU-s", "conn/cpu-s", fmt(mq("handshakes_per_broker_cpu_s", 0)), lambda r: fmt(per_cpu_s(r["handshakes"])))
    add(
        "server CPU during handshakes",
        "% of one core",
        mosq_util("handshakes"),
        lambda r: fmt(r["handshakes"]["gateway_cpu_s"] / r["handshakes"]["window_s"] * 100),
    )
    add("handshakes stalled (given up after 1 s)", "count", "—", lambda r: fmt(r["handshakes"]["stalled"]))
    add("idle memory per connection", "KB", f"{mq('idle_conn_kb', 0):.1f}", lambda r: f"{r['idle']['kb_per_session']:.1f}")
    add(
        "idle connections (server RSS before → after)",
        "MB",
        f"2,000 ({mq('idle_broker_rss_before_kb', 0) / 1024:.1f} → {mq('idle_broker_rss_after_kb', 0) / 1024:.1f})",
        lambda r: f"{r['idle']['sessions']:,} ({r['idle']['rss_before_kb'] / 1024:.1f} → {r['idle']['rss_after_kb'] / 1024:.1f})",
    )
    for loop_name in ("uvloop", "asyncio"):
        add(
            f"floor: bare TLS server on {loop_name}, per connection", "KB", "—", lambda r, loop_name=loop_name: f"{r['floor'][loop_name]['kb_per_session']:.1f}"
        )
    add("floor: bare TLS server on uvloop, handshakes per server CPU-s", "conn/cpu-s", "—", lambda r: fmt(per_cpu_s(r["floor_handshakes"])))
    shapes = max((len(r.get("state", [])) for r in results.values()), default=0)
    for k in range(shapes):
        label = next((r["state"][k]["shape"] for r in results.values() if len(r.get("state", [])) > k), "?")
        mosquitto = fmt(mq("qos1_msgs_per_s", 0)) if k == 0 else "—"
        add(f"QoS1 msgs (50x16) / state reports persisted ({label})", "per s", mosquitto, lambda r, k=k: fmt(per_s(r["state"][k])))
        mosquitto = fmt(mq("qos1_msgs_per_broker_cpu_s", 0)) if k == 0 else "—"
        add(f"… per server CPU-s ({label})", "per cpu-s", mosquitto, lambda r, k=k: fmt(per_cpu_s(r["state"][k])))
        add(
            f"server CPU during QoS1 / state ({label})",
            "% of one core",
            mosq_util("qos1_msgs") if k == 0 else "—",
            lambda r, k=k: fmt(r["state"][k]["gateway_cpu_s"] / r["state"][k]["window_s"] * 100),
        )
    add("command round trip p50", "ms", "—", lambda r: fmt(r["commands"]["round_trip_ms"]["p50"], 1))
    add("command round trip p99", "ms", "—", lambda r: fmt(r["commands"]["round_trip_ms"]["p99"], 1))

    def acks_run(r: dict[str, Any], slow: bool) -> dict[str, Any]:
        return next((s for s in r["acks"] if bool(s["subscriber_ms"]) == slow), {})  # {}: KeyError, a dash in the table

    def latency(r: dict[str, Any], slow: bool) -> str:
        lat = acks_run(r, slow)["ack_latency_ms"]
        return f"{lat['p50']:,.1f} / {lat['p99']:,.1f}"

    slow_ms = next((s["subscriber_ms"] for r in results.values() for s in r.get("acks", []) if s["subscriber_ms"]), 50.0)
    add("state ack latency p50/p99, no extra subscriber", "ms", "—", lambda r: latency(r, False))
    add(f"… with a {slow_ms:g} ms/batch subscriber", "ms", "—", lambda r: latency(r, True))

    def queue(r: dict[str, Any]) -> str:
        q = acks_run(r, True)["heartbeat"]["details"]["state_subscribers"]
        return f"{q['queued']:,} / {q['dropped_batches']:,} / {q['dropped_reports']:,}"

    add("… subscriber queue after that run: queued / dropped batches / dropped reports", "count", "—", queue)
    return rows


def print_config(name: str, r: dict[str, Any]) -> None:
    db = r["setup"]["database"]
    print(
        f"meshhub gateway, {name} (runmesh on {r['event_loop']}; {db['vendor']} {db['version']}; {r['setup']['devices']:,} devices; "
        f"config run took {r['wall_s']:.0f} s):"
    )

    def threads(prefix: str, x: dict[str, Any]) -> None:
        print(
            f"  {prefix}_gateway_threads_cpu_s: event loop thread {x['gateway_main_thread_cpu_s']:.2f} s, other threads {x['gateway_other_threads_cpu_s']:.2f} s "
            f"(busiest {x['gateway_busiest_other_thread_cpu_s']:.2f} s; {x['gateway_threads']} threads)"
        )
        for aux_name, cpu in x.get("aux_cpu_s", {}).items():
            print(f"  {prefix}_{aux_name}_cpu_s: {cpu:.2f} s (the whole server, also its other clients)")

    if "handshakes" in r:
        h = r["handshakes"]
        print(f"  tls: {' '.join(h.get('version') or ['?'])} (session_reused={h['reused']}, no-cert client refused: {h.get('no_cert_refused')})")
        print(f"  mtls_handshakes_per_s: {per_s(h):.0f} conn/s")
        print(f"  handshakes_gateway_cpu_s: {h['gateway_cpu_s']:.2f} s")
        print(f"  handshakes_client_cpu_s: {h['cpu']:.2f} s")
        print(f"  handshakes_window_s: {h['window_s']:.2f} s")
        print(f"  handshakes_per_gateway_cpu_s: {per_cpu_s(h):.0f} conn/cpu-s")
        print(f"  handshakes_gateway_cpu_util: {100 * h['gateway_cpu_s'] / h['window_s']:.0f} % of one core")
        threads("handshakes", h)
        print(f"  handshakes_errors: {h['err']} count {h['errors'] or ''}")
        print(f"  handshakes_stalled: {h['stalled']} count (TLS handshake not done within {h.get('handshake_timeout_s', 1.0):g} s: given up, not counted)")
    if "idle" in r:
        i = r["idle"]
        print(f"  idle_sessions_open: {i['sessions']} sessions (errors {i['errors']}, opened in {i['opened_s']:.1f} s after {i['warmup']} warm-up sessions)")
        print(f"  idle_stalled_handshakes: {i['stalled_handshakes']} count (retried after 0.3 s)")
        print(f"  idle_gateway_rss_before_kb: {i['rss_before_kb']} KB")
        print(f"  idle_gateway_rss_after_kb: {i['rss_after_kb']} KB")
        print(f"  idle_session_kb: {i['kb_per_session']:.1f} KB/session")
        if "online_after_close" in i:
            print(f"  devices_online_3s_after_all_sessions_closed: {i['online_after_close']} count (should be 0)")
    for loop_name, f in r.get("floor", {}).items():
        print(
            f"  floor_{loop_name}_kb_per_connection: {f['kb_per_session']:.1f} KB/connection (bare TLS server, same SSL context, "
            f"{f['sessions']} connections, RSS {f['rss_before_kb']} -> {f['rss_after_kb']} KB, stalled {f['stalled_handshakes']})"
        )
    for s in r.get("state", []):
        p = f"state_{s['shape']}"
        print(
            f"  {p}_reports_per_s: {per_s(s):.0f} reports/s ({s['conns']} sessions x {s['window']} in flight, "
            f"{s['values_per_report']} values each; per-device rate limit {s['rate_limit']})"
        )
        print(f"  {p}_gateway_cpu_s: {s['gateway_cpu_s']:.2f} s")
        print(f"  {p}_client_cpu_s: {s['cpu']:.2f} s")
        print(f"  {p}_per_gateway_cpu_s: {per_cpu_s(s):.0f} reports/cpu-s")
        print(f"  {p}_gateway_cpu_util: {100 * s['gateway_cpu_s'] / s['window_s']:.0f} % of one core")
        threads(p, s)
        print(f"  {p}_errors: {s['err']} count {s['errors'] or ''} (sessions lost {s['lost']}, unanswered at the end {s['unanswered']})")
        ok = s["telemetry_rows_written"] == s["telemetry_rows_expected"]
        print(
            f"  {p}_verified: {'ok' if ok else 'MISMATCH'} ({s['acked']:,} acks in all x {s['values_per_report']} = "
            f"{s['telemetry_rows_expected']:,} samples expected, {s['telemetry_rows_written']:,} TelemetrySample rows written)"
        )
    for s in r.get("acks", []):
        p = f"acks_slow_subscriber_{s['subscriber_ms']:g}ms" if s["subscriber_ms"] else "acks_no_extra_subscriber"
        lat, hb = s["ack_latency_ms"], s["heartbeat"]
        what = f"a {s['subscriber_ms']:g} ms/batch state subscriber" if s["subscriber_ms"] else "no extra state subscriber"
        print(f"  {p}_reports_per_s: {per_s(s):.0f} reports/s ({s['conns']} sessions x {s['window']} in flight, {what})")
        if lat.get("n"):
            for q in ("p50", "p95", "p99", "max"):
                print(f"  {p}_ack_latency_{q}: {lat[q]:.1f} ms")
            print(f"  {p}_ack_latency_reports: {lat['n']:,} count (sent after the first {s['ack_latency_skip_s']:g} s of the window)")
        queue = (hb.get("details") or {}).get("state_subscribers")
        if queue is not None:
            stamp = f"stamped {hb['stamped_after_load_s']:.1f} s after the load" if hb["fresh"] else "NO stamp after the load: last one before it"
            print(
                f"  {p}_subscriber_queue: queued {queue['queued']}, dropped_batches {queue['dropped_batches']}, "
                f"dropped_reports {queue['dropped_reports']} (gateway Heartbeat row, {stamp})"
            )
        else:
            print(f"  {p}_subscriber_queue: unknown (no Heartbeat row of the gateway: {hb})")
        print(f"  {p}_gateway_cpu_util: {100 * s['gateway_cpu_s'] / s['window_s']:.0f} % of one core")
        print(f"  {p}_errors: {s['err']} count {s['errors'] or ''} (sessions lost {s['lost']}, unanswered at the end {s['unanswered']})")
        ok = s["telemetry_rows_written"] == s["telemetry_rows_expected"]
        print(
            f"  {p}_verified: {'ok' if ok else 'MISMATCH'} ({s['acked']:,} acks in all x {s['values_per_report']} = "
            f"{s['telemetry_rows_expected']:,} samples expected, {s['telemetry_rows_written']:,} TelemetrySample rows written)"
        )
    if "commands" in r:
        c = r["commands"]
        rt, dv, dev, sc, cl = c["round_trip_ms"], c["created_to_delivered_ms"], c["created_to_device_ms"], c["send_command_ms"], c["client"]
        print(f"  commands_sent: {c['commands']} commands at {c['rate_per_s']:.1f}/s to {c['sessions']} connected devices; statuses {c['statuses']}")
        if rt.get("n"):
            print(f"  command_round_trip_p50: {rt['p50']:.1f} ms")
            print(f"  command_round_trip_p99: {rt['p99']:.1f} ms")
            print(f"  command_round_trip_max: {rt['max']:.1f} ms")
        if dev.get("n"):
            print(f"  command_created_to_device_p50: {dev['p50']:.1f} ms (p99 {dev['p99']:.1f})")
        if dv.get("n"):
            print(f"  command_created_to_delivered_p50: {dv['p50']:.1f} ms (p99 {dv['p99']:.1f})")
        print(f"  send_command_p50: {sc['p50']:.2f} ms (p99 {sc['p99']:.2f})")
        print(
            f"  commands_client: {cl['commands']} command frames answered, {cl['duplicates']} duplicates, {cl['pings']} pings, "
            f"errors {cl['errors'] or 0}, sessions lost {cl['lost']}"
        )
        print(f"  commands_gateway_cpu_util: {100 * c['gateway_cpu_s'] / c['wall_s']:.0f} % of one core over {c['wall_s']:.1f} s")
    logged = r.get("gateway_log") or {}
    if logged.get("counts"):
        print(f"  gateway_log: {logged['counts']} first: {logged['first']}")


def print_ratios(mosq: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    print("ratios to Mosquitto (same run) and goals:")
    for name, r in results.items():
        if "handshakes" in r:
            h = r["handshakes"]
            ratio = per_cpu_s(h) / mosq["handshakes_per_broker_cpu_s"]
            verdict = "met" if ratio >= HANDSHAKE_GOAL else "NOT met"
            print(
                f"  [{name}] handshakes per CPU-s: {per_cpu_s(h):.0f} vs {mosq['handshakes_per_broker_cpu_s']:.0f} = {ratio:.2f}x Mosquitto "
                f"(handshakes/s {per_s(h) / mosq['mtls_handshakes_per_s']:.2f}x); goal >= {HANDSHAKE_GOAL:.1f}x: {verdict}"
            )
        if "idle" in r:
            kb = r["idle"]["kb_per_session"]
            verdict = "met" if kb <= IDLE_GOAL_KB else "NOT met"
            print(
                f"  [{name}] idle memory: {kb:.1f} KB/session vs {mosq['idle_conn_kb']:.1f} = {kb / mosq['idle_conn_kb']:.2f}x Mosquitto; goal <= {IDLE_GOAL_KB:.0f} KB: {verdict}"
            )
        for s in r.get("state", []):
            ratio = per_s(s) / mosq["qos1_msgs_per_s"]
            cpu_ratio = per_cpu_s(s) / mosq["qos1_msgs_per_broker_cpu_s"]
            verdict = "met" if ratio >= STATE_GOAL else "NOT met"
            print(
                f"  [{name}] state reports/s ({s['shape']}): {per_s(s):.0f} vs {mosq['qos1_msgs_per_s']:.0f} = {ratio:.4f}x Mosquitto QoS1 msgs/s "
                f"(per CPU-s {cpu_ratio:.4f}x); goal >= {STATE_GOAL:.1f}x: {verdict}"
            )
        if "commands" in r and r["commands"]["round_trip_ms"].get("n"):
            rt = r["commands"]["round_trip_ms"]
            print(
                f"  [{name}] command round trip with {r['commands']['sessions']} connected: p50 {rt['p50']:.1f} ms, p99 {rt['p99']:.1f} ms (no Mosquitto counterpart)"
            )


def print_report(machine: dict[str, Any], mosq: dict[str, Any] | None, results: dict[str, dict[str, Any]]) -> None:
    print("machine:")
    for key in ("date_utc", "nproc", "cpu_model", "memory", "kernel", "python"):
        print(f"  {key}: {machine.get(key)}")
    print(f"  loadavg at start: {' '.join(machine.get('loadavg', []))}")
    print(f"  git: {machine.get('git')}")
    mosq = mosq or {}
    if mosq:
        print()
        print(f"Mosquitto (same run, {mosq.get('wall_s', 0):.0f} s; {mosq.get('broker', '?')}):")
        for key in (
            "mtls_handshakes_per_s",
            "handshakes_per_broker_cpu_s",
            "handshakes_broker_cpu_s",
            "handshakes_window_s",
            "idle_conn_kb",
            "qos1_msgs_per_s",
            "qos1_msgs_per_broker_cpu_s",
            "qos1_msgs_broker_cpu_s",
        ):
            if key in mosq:
                print(f"  mosquitto_{key}: {mosq[key]:g}")
    for name, r in results.items():
        print()
        print_config(name, r)
    if mosq:
        print()
        print_ratios(mosq, results)
    print()
    rows = figures(mosq, results)
    columns = ["Mosquitto", *results]
    print("| figure | unit | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for figure, unit, cells in rows:
        print(f"| {figure} | {unit} | " + " | ".join(cells.get(c, "—") for c in columns) + " |")
    for name, r in results.items():
        if r.get("idle", {}).get("tracemalloc"):
            print()
            print(f"tracemalloc, idle sessions, {name}:")
            print(r["idle"]["tracemalloc"])
        if r.get("profile"):
            print()
            print(f"cProfile of the gateway's event loop thread, {name} (that phase's figures carry the profiler's overhead):")
            print(r["profile"])


def git_state() -> str:
    """HEAD and which files outside bench/ and docs/ differ from it: what was measured."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout.splitlines()
    except OSError:
        return "unknown"
    dirty = sorted({line[3:] for line in changed if not line[3:].startswith(("bench/", "docs/"))})
    return f"{head}" + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help=f"comma-separated; each one of {', '.join(CONFIGS)}, optionally @asyncio (runmesh without uvloop) and :phase+phase (default {DEFAULT_CONFIGS})",
    )
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    parser.add_argument("--devices", type=int, default=1000, help="provisioned devices with certificates (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement window, also Mosquitto's DUR (default 10)")
    parser.add_argument(
        "--state-shapes",
        default="50x16,400x4",
        help="state phase: sessions x frames in flight, comma-separated (default 50x16 = Mosquitto's QoS1 shape, then 400x4)",
    )
    parser.add_argument("--values", type=int, default=3, choices=[1, 2, 3], help="values per state report (default 3: the thermostat agent's report)")
    parser.add_argument(
        "--rate-limit",
        choices=["on", "off"],
        default="off",
        help="state phase: keep the per-device limit (50 frames/s, burst 200) or raise it for the capacity figure (default off)",
    )
    parser.add_argument(
        "--acks-shape", default="50x1", help="acks-slow-subscriber phase: sessions x frames in flight (default 50x1: a moderate load the gateway sustains)"
    )
    parser.add_argument("--slow-subscriber-ms", type=float, default=50.0, help="acks-slow-subscriber phase: the slow subscriber's sleep per batch (default 50)")
    parser.add_argument(
        "--latency-skip",
        type=float,
        default=1.0,
        help="acks-slow-subscriber phase: reports sent in the first seconds are not in the latency figures (default 1)",
    )
    parser.add_argument("--sessions", type=int, default=1000, help="idle sessions, then connected devices during the command phase (default 1000)")
    parser.add_argument("--commands", type=int, default=300, help="timed commands, one per device (default 300)")
    parser.add_argument("--command-rate", type=float, default=25.0, help="commands created per second (default 25)")
    parser.add_argument("--skip-mosquitto", action="store_true", help="do not run the Mosquitto baseline (no ratios)")
    parser.add_argument("--profile", choices=["handshakes", "state"], help="run that phase's gateway under cProfile and print the top functions")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_GATEWAY_DATABASE_URL", DEFAULT_POSTGRES_URL), help="dropped and recreated per config")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL), help="a Redis database of its own (meshhub* keys are deleted)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--memprofile", action="store_true", help="idle sessions: tracemalloc attribution of the gateway's growth (inflates RSS: not a figure run)"
    )
    parser.add_argument("--keep", type=Path, help="keep data directories, certificates and gateway logs under this directory")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.state_shapes = [x.strip() for x in args.state_shapes.split(",") if x.strip()]
    if not all(re.fullmatch(r"\d+x\d+", x) for x in args.state_shapes):
        parser.error("--state-shapes: e.g. 50x16,400x4")
    for config in configs:
        try:
            shapes = parse_config(config)[5] or args.state_shapes
        except ValueError as exc:
            parser.error(str(exc))
        if any(int(x.split("x")[0]) > args.devices for x in shapes):
            parser.error(f"{config}: a state shape has more sessions than --devices ({args.devices})")
    if not re.fullmatch(r"\d+x\d+", args.acks_shape) or int(args.acks_shape.split("x")[0]) > args.devices:
        parser.error("--acks-shape: sessions x frames in flight, e.g. 50x1, with no more sessions than --devices")
    if args.slow_subscriber_ms <= 0:
        parser.error("--slow-subscriber-ms must be > 0")
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for phase in args.phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r}")
    if args.commands > args.sessions or args.sessions > args.devices:
        parser.error("every session needs its own device: --devices must cover --sessions, and --commands <= --sessions")

    from run import machine_info

    machine = machine_info()
    machine["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    machine["git"] = git_state()
    t0 = time.perf_counter()
    mosq = None if args.skip_mosquitto else run_mosquitto(args.duration)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="meshhub-gateway-bench-") as tmp_dir:
        tmp = args.keep or tmp_dir
        for config in configs:
            results[parse_config(config)[0]] = run_config(config, args, Path(tmp))
            if args.keep:
                log(f"  kept in {results[parse_config(config)[0]]['data_dir']}")
    machine["total_wall_s"] = time.perf_counter() - t0
    machine["date_end_utc"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print_report(machine, mosq, results)
    print()
    print(f"total_runtime_s: {machine['total_wall_s']:.0f} s (started {machine['date_utc']}, ended {machine['date_end_utc']})")
    if mosq:
        print()
        print("Mosquitto script output:")
        print(mosq["raw"].rstrip())
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "mosquitto": mosq, "results": results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
