"""Operator pages benchmark: the devices list and a device page at 10,000 devices and
1,000,000 telemetry rows, then one browser on a device page while state reports stream in.

    python bench/pages.py                           # or: python bench/run.py --part pages (about 9 minutes)
    python bench/pages.py --configs sqlite --devices 2000 --audit-events 2000 --requests 20 --live-devices 100 --rates 300 --live-duration 10   # a smoke run
    python bench/pages.py --configs sqlite --skip-live --profile   # plus, per page, where the time goes: SQL, EXPLAIN, templates, cProfile

Figures (acceptance items of the "Operator dashboard" issue): p50/p95/p99 of the devices
list (page 1, a search, page 100, online only, one group), of a device page and of the
request its telemetry chart makes, goal p95 < 150 ms each; then one browser on a device
page while about 1,000 state reports per second flow through the real gateway: the update
lag (report sent -> value in the page's DOM) and whether the page stays responsive.

Method, per configuration (`sqlite` = embedded: SQLite in a fresh MESHHUB_DATA_DIR,
`manage.py runhub --no-worker`, i.e. Daphne and the mesh gateway in one process with the
in-memory channel layer; `postgres+redis` = production: a recreated PostgreSQL database
`meshhub_bench_pages` and Redis database 11, Daphne (`python -m daphne hub.asgi:application`)
and `manage.py runmesh` as two processes):

1. `manage.py migrate`, `manage.py seedfleet --devices 10000 --days 1` (1,000,000 samples,
   one every 1,728 s per capability), timed. Then a worker (`pages.py prepare`) creates a
   superuser and an audit history: --audit-events `mesh.session` events (default 200,000,
   20 per device, round-robin, through `audit.services.record_many`, as the gateway writes
   them), with 20 commands to the device page's thermostat (`send_command()`, 18 marked
   succeeded) spread through it; and gives that thermostat 24 h of reports every 5 s (the
   agent's default; 51,840 more samples) for its chart to draw.
2. The hub starts; the bench logs in through the login form over HTTP and requests each
   page in turn on one keep-alive connection (http.client), --warmup rounds untimed, then
   --requests rounds timed (time to the last byte; status 200 and the page's rows checked).
   The chart's request is the one chart.js makes first (24 h in 120 s buckets), found in
   the device page's HTML. The server process's CPU over the run is divided by the requests.
3. Live: the hub stops; `bench/gateway.py setup` provisions --live-devices thermostats with
   certificates (`bench-00000` …); the hub starts again. Per rate in --rates (default
   1000,500): a load client (`pages.py load`, asyncio + uvloop, the device protocol of
   `bench/gateway_client.py`) opens one mTLS session per device, then sends state reports
   at that rate in all, spread evenly over the devices (open loop: a report is due every
   1/rate s; a session keeps at most 8 unacknowledged, a report due on a full session is
   skipped and counted). Every report carries its send time (wall clock, ms) in its
   `temperature` value (seconds modulo 10,000, three decimals), with `setpoint` and `mode`:
   three values, three TelemetrySample rows, as the thermostat agent sends.
   Headless Chromium (playwright, /usr/bin/chromium) logs in and opens /devices/bench-00000/;
   a MutationObserver on its temperature cell takes, whenever the value changes, Date.now()
   minus the send time the value carries: the update lag, /ws/live/'s 250 ms coalescing
   included (same host, same clock). Each WebSocket message's temperatures give the age of
   what arrives too. After --live-warmup s, for --live-duration s: the lag samples,
   `page.evaluate()` round trips every 200 ms (is the renderer's main thread free?), long
   tasks (PerformanceObserver) and the time in the page's message handler (app.js and the
   chart). Then, the stream still on, --navigations clicks between pages 1 and 2 of the
   devices list (click -> `load`), and --live-requests HTTP requests each of the list and
   the device page. The load client reports the reports acknowledged per second (an ack =
   committed) and the send -> ack latency over the whole window.

Prints `name: value unit` lines, the goals and a markdown table; `--json FILE` keeps
everything. docs/performance.md ("Operator pages") records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from benchlib import BENCH_DIR, REPO_ROOT, log, percentile  # bench/ is the script directory, first on sys.path; it also sets up the import path

RESULT_MARKER = "BENCH-RESULT "
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meshhub_bench_pages"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
CONFIGS = ("sqlite", "postgres+redis")
DEFAULT_CONFIGS = "sqlite,postgres+redis"
PAGE_GOAL_MS = 150.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
USERNAME = "bench-admin"
PASSWORD_ENV = "BENCH_PAGES_PASSWORD"
LIVE_NODE = "bench-00000"
IN_FLIGHT_PER_SESSION = 8
STAMP_MODULO_MS = 10_000_000  # the send time rides in `temperature` as (ms % this) / 1000
START_TIMEOUT_S = 60.0
DETAIL_HISTORY_S = 24 * 3600  # the device page's thermostat: this much history at one report per 5 s


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# ================================================================ the pages


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    marker: str  # must be in the body
    accept: str = "text/html"


def endpoints(detail: str, group: str, devices: int) -> list[Endpoint]:
    deep = min(100, -(-devices // 50))  # page 100, or the last page of a smaller fleet
    return [
        Endpoint("list", "devices list, page 1", "/devices/", '<tr data-node="'),
        Endpoint("search", "devices list, search q=relay", "/devices/?q=relay", '<tr data-node="seed-relay-'),
        Endpoint("deep", f"devices list, page {deep}", f"/devices/?page={deep}", f"page {deep} of "),
        Endpoint("online", "devices list, online only", "/devices/?online=yes", '<tr data-node="'),
        Endpoint("group", f"devices list, group {group}", f"/devices/?group={urllib.parse.quote(group)}", '<tr data-node="'),
        Endpoint("detail", f"device page ({detail})", f"/devices/{detail}/", 'data-capability="temperature"'),
    ]


# ================================================================ Django-side workers


def worker_prepare(argv: list[str]) -> None:
    """A superuser for the bench; an audit history for the fleet (a `mesh.session` event per
    device and reconnect, round-robin, as the gateway writes them) with the device page's
    thermostat's 20 commands spread through it; and 24 h of its telemetry at one report per 5 s."""
    parser = argparse.ArgumentParser(prog="pages.py prepare")
    parser.add_argument("--audit-events", type=int, required=True)
    args = parser.parse_args(argv)
    import math
    from datetime import timedelta

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from gateway import database_info

    from audit.models import ActorType, Decision
    from audit.services import Actor, Entry, record_many
    from devices.models import Command, CommandStatus, Device, Group
    from devices.services import send_command
    from devices.state import SampleRow, insert_samples

    get_user_model().objects.create_superuser(USERNAME, password=os.environ[PASSWORD_ENV])
    # A thermostat in the middle of the list, online: what an operator opens.
    thermostats = Device.objects.filter(node_id__startswith="seed-thermostat-", online=True).order_by("node_id")
    detail = thermostats[thermostats.count() // 2]
    node_ids = list(Device.objects.filter(node_id__startswith="seed-").order_by("pk").values_list("node_id", flat=True))
    actor = Actor("user", USERNAME)
    commands = 20
    ids = []
    t0 = time.perf_counter()
    for n in range(commands):
        share = range(args.audit_events * n // commands, args.audit_events * (n + 1) // commands)
        for start in range(share.start, share.stop, 1000):
            batch = [node_ids[i % len(node_ids)] for i in range(start, min(start + 1000, share.stop))]
            record_many(
                Entry(
                    Actor(ActorType.DEVICE, node), "mesh.session", Decision.ALLOW, target_type="device", target_id=node, details={"firmware_version": "1.5.0"}
                )
                for node in batch
            )
        ids.append(send_command(actor, detail.node_id, "set", "setpoint", 18.0 + (n % 8)).id)
    audit_s = time.perf_counter() - t0
    now = timezone.now()
    Command.objects.filter(id__in=ids[:18]).update(status=CommandStatus.SUCCEEDED, delivered_at=now, completed_at=now, result={"value": 21.0})
    # It reports every 5 s, the agent's default: 24 h of that for the chart to draw.
    times = [now - timedelta(seconds=5 * k) for k in range(DETAIL_HISTORY_S // 5, 0, -1)]
    rows: list[SampleRow] = []
    for k, ts in enumerate(times):
        rows.append((detail.pk, "temperature", ts, round(21 + 2 * math.sin(k / 2000) + (k % 7) / 20, 2), ""))
        rows.append((detail.pk, "setpoint", ts, 21.0, ""))
        rows.append((detail.pk, "mode", ts, None, "auto"))
    insert_samples(rows)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would after this many new rows
    groups = list(Group.objects.filter(name__startswith="seed-group-").order_by("name").values_list("name", flat=True))
    group = groups[len(groups) // 2]
    print(
        RESULT_MARKER
        + json.dumps(
            {
                "detail": detail.node_id,
                "group": group,
                "detail_samples": len(rows),
                "audit_events": args.audit_events + commands,
                "audit_s": audit_s,
                "database": database_info(connection),
            }
        )
    )


def worker_profile(argv: list[str]) -> None:
    """Each page in-process through Django's test client: where its time goes (SQL, template
    rendering, the rest), its queries with their time and the slowest one's plan, and the
    functions with the most own time. Not a latency figure: no HTTP, and cProfile's overhead."""
    parser = argparse.ArgumentParser(prog="pages.py profile")
    parser.add_argument("--detail", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)

    import cProfile
    import io
    import math
    import pstats

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    settings.ALLOWED_HOSTS = ["*"]
    client = Client()
    client.force_login(get_user_model().objects.get(username=USERNAME))
    per_sql: dict[str, list[float]] = {}

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if not many:
                per_sql.setdefault(connection.ops.last_executed_query(context["cursor"], sql, params), []).append(time.perf_counter() - t0)

    out: dict[str, Any] = {}
    targets = endpoints(args.detail, args.group, args.devices)
    chart = chart_endpoint(client.get(targets[-1].path).content.decode())
    for endpoint in [*targets, *([chart] if chart else [])]:
        for _ in range(3):
            client.get(endpoint.path, headers={"accept": endpoint.accept})
        per_sql.clear()
        with connection.execute_wrapper(timed):
            t0 = time.perf_counter()
            for _ in range(args.rounds):
                assert client.get(endpoint.path, headers={"accept": endpoint.accept}).status_code == 200
            wall = (time.perf_counter() - t0) / args.rounds
        # SQLite produces rows while they are fetched, after execute() returned (and Django
        # fetches a queryset while the template iterates it): time every statement again,
        # executed and fetched to the end, on its own.
        queries = []
        for sql, runs in per_sql.items():
            if sql.lstrip().upper().startswith("SELECT"):
                with connection.cursor() as cursor:
                    best = math.inf
                    for _ in range(3):
                        t1 = time.perf_counter()
                        cursor.execute(sql)
                        cursor.fetchall()
                        best = min(best, time.perf_counter() - t1)
                queries.append((best, len(runs) / args.rounds, sql))
        queries.sort(reverse=True)
        sql_ms = sum(seconds * count for seconds, count, _ in queries) * 1000
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.rounds):
            client.get(endpoint.path, headers={"accept": endpoint.accept})
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = cumulative_ms(stats, "django/test/client.py", "request") / args.rounds or 1.0
        rendering = cumulative_ms(stats, "django/template/backends/django.py", "render") / args.rounds
        lines = [
            f"{endpoint.label}: {wall * 1000:.1f} ms per request in-process; its SELECTs {sql_ms:.1f} ms (each executed and fetched alone, best of 3) "
            f"of {sum(len(t) for t in per_sql.values()) / args.rounds:g} queries; under cProfile {total:.1f} ms, in template rendering "
            f"{rendering:.1f} ms ({rendering / total:.0%}, querysets fetched by the template included)",
        ]
        for seconds, count, sql in queries[:8]:
            lines.append(f"  {seconds * 1000:7.2f} ms  x{count:g}  {sql[:200]}")
        slowest = queries[0][2] if queries else ""
        if slowest:
            with connection.cursor() as cursor:
                cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ANALYZE ") + slowest)
                lines.append("  plan of the slowest:")
                lines += [f"    {' '.join(str(c) for c in row)}" for row in cursor.fetchall()]
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(12)
        lines.append(f"  most own time ({args.rounds} requests):")
        lines += ["    " + line.replace(SITE_PACKAGES, "") for line in stream.getvalue().splitlines() if re.match(r"\s*\d", line)][:12]
        out[endpoint.key] = "\n".join(lines)
    print(RESULT_MARKER + json.dumps(out))


def cumulative_ms(stats: Any, suffix: str, function: str) -> float:
    """The cumulative time of a function (its outermost call) in a pstats.Stats, ms."""
    found = [entry[3] for (file, _, name), entry in stats.stats.items() if name == function and file.endswith(suffix)]
    return max(found, default=0.0) * 1000


SITE_PACKAGES = str(Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages") + "/"


# ================================================================ the load client (no Django)


def worker_load(argv: list[str]) -> None:
    """Open one session per device, print READY; on `GO` stream state reports at --rate/s
    (open loop), `MARK` starts the measured window, `STOP` ends it and prints the result."""
    parser = argparse.ArgumentParser(prog="pages.py load")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="reports per second in all")
    parser.add_argument("--hot-rate", type=float, required=True, help="of which this many from bench-00000")
    args = parser.parse_args(argv)
    import gateway_client as gc

    if gc.uvloop:
        gc.uvloop.install()
    print(RESULT_MARKER + json.dumps(asyncio.run(_stream(args, gc))), flush=True)


async def _stream(a: argparse.Namespace, gc: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stalls: Counter[str] = Counter()
    t0 = time.monotonic()
    held, errors = await gc.open_many(gc.contexts(a.dir, list(range(a.sessions))), a.port, 32, stalls, timeout=60)
    if errors or not held:
        raise SystemExit(f"{errors} of {a.sessions} sessions failed to open")
    opened_s = time.monotonic() - t0
    devices = sorted((device for _, device in held), key=lambda d: d.node_id)
    hot, cold = devices[0], devices[1:] or devices
    assert hot.node_id == LIVE_NODE
    in_flight: dict[int, dict[str, float]] = {id(d): {} for d in devices}
    st: dict[str, Any] = {}

    def reset() -> None:
        st.update(sent=0, acked=0, errors=Counter(), ack_ms=[], hot_ack_ms=[], skipped=0, t0=time.monotonic())

    for device in devices:

        def on_frame(frame: dict[str, Any], device: Any = device) -> None:
            kind = frame.get("type")
            if kind not in ("ack", "error"):
                return
            body = frame.get("body") or {}
            sent_at = in_flight[id(device)].pop(str(body.get("ref")), None)
            if sent_at is None:
                return
            if kind == "ack":
                st["acked"] += 1
                st["hot_ack_ms" if device is hot else "ack_ms"].append((time.monotonic() - sent_at) * 1000)
            else:
                st["errors"][str(body.get("code"))] += 1

        device.on_frame = on_frame

    def send(device: Any) -> bool:
        pending = in_flight[id(device)]
        if len(pending) >= IN_FLIGHT_PER_SESSION or device.closed.done():
            return False
        stamp = gc.now_ms()
        device.send("state", {"values": {"temperature": (stamp % STAMP_MODULO_MS) / 1000, "setpoint": 21.0, "mode": "auto"}, "ts": stamp})
        pending[f"b{device.seq}"] = time.monotonic()
        st["sent"] += 1
        return True

    async def pump(stop: asyncio.Event) -> None:
        """Credits accrue at the rate; a report goes out per credit to the next session with room."""
        credit = {"hot": 0.0, "cold": 0.0}
        rates = {"hot": a.hot_rate, "cold": max(0.0, a.rate - a.hot_rate)}
        cursor = 0
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            for kind in ("hot", "cold"):
                credit[kind] = min(credit[kind] + rates[kind] * (now - last), max(1.0, rates[kind] * 0.5))
            last = now
            while credit["hot"] >= 1:
                credit["hot"] -= 1
                if not send(hot):
                    st["skipped"] += 1
            tries = 0
            while credit["cold"] >= 1 and tries < len(cold):
                device = cold[cursor % len(cold)]
                cursor += 1
                if send(device):
                    credit["cold"] -= 1
                    tries = 0
                else:
                    tries += 1
            if credit["cold"] >= 1:
                st["skipped"] += int(credit["cold"])
                credit["cold"] -= int(credit["cold"])

    print("READY " + json.dumps({"sessions": len(held), "opened_s": opened_s, "stalled_handshakes": stalls["stalled_handshakes"]}), flush=True)
    stop = asyncio.Event()
    pumping: asyncio.Task[None] | None = None
    reset()
    result: dict[str, Any] = {"sessions": len(held), "opened_s": opened_s}
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "GO":
            pumping = loop.create_task(pump(stop))
        elif line == "MARK":
            reset()
        elif line in ("STOP", ""):
            window_s = time.monotonic() - st["t0"]
            stop.set()
            if pumping is not None:
                await pumping
            result.update(
                window_s=window_s,
                sent=st["sent"],
                acked=st["acked"],
                acked_per_s=st["acked"] / window_s,
                sent_per_s=st["sent"] / window_s,
                skipped_no_room=st["skipped"],
                errors=dict(st["errors"]),
                ack_ms=summary(st["ack_ms"]),
                hot_ack_ms=summary(st["hot_ack_ms"]),
                hot_acked_per_s=len(st["hot_ack_ms"]) / window_s,
                lost=sum(d.closed.done() for d in devices),
            )
            deadline = time.monotonic() + 15
            while any(in_flight.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            result["unanswered"] = sum(len(p) for p in in_flight.values())
            await gc.close_all(held)
            return result


# ================================================================ orchestration


@dataclass
class Hub:
    url: str
    port: int
    mesh_port: int
    pids: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_py(argv: list[str], env: dict[str, str], label: str, timeout: float = 900) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            if proc.returncode == 0:
                return result
    sys.stderr.write(proc.stdout[-3000:])
    raise SystemExit(f"{label}: exited with {proc.returncode} and printed no result")


def manage(argv: list[str], env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "manage.py"), *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc.stdout


@contextlib.contextmanager
def running_hub(config: str, env: dict[str, str], log_path: Path) -> Iterator[Hub]:
    """Embedded: one `runhub --no-worker` (Daphne + gateway). Production: Daphne and `runmesh`."""
    from gateway import listening

    port, mesh_port, enroll_port = free_port(), free_port(), free_port()
    device = ["--enroll-port", str(enroll_port), "--mesh-port", str(mesh_port), "--discovery-port", "0"]
    if config == "sqlite":
        commands = {
            "runhub": [str(REPO_ROOT / "manage.py"), "runhub", "--no-worker", "--host", "127.0.0.1", "--port", str(port), "--device-host", "127.0.0.1", *device]
        }
    else:
        commands = {
            "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", "hub.asgi:application"],
            "runmesh": [str(REPO_ROOT / "manage.py"), "runmesh", "--host", "127.0.0.1", *device],
        }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    hub = Hub(f"http://127.0.0.1:{port}", port, mesh_port)
    try:
        with open(log_path, "ab") as log_file:
            for name, argv in commands.items():
                procs[name] = subprocess.Popen([sys.executable, *argv], cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
                hub.pids[name] = procs[name].pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (listening(port) and listening(mesh_port)):
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the hub did not listen within {START_TIMEOUT_S:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield hub
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class Http:
    """One keep-alive HTTP/1.1 connection with a cookie jar: what one browser tab does."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None, accept: str = "text/html") -> tuple[int, str, dict[str, str]]:
        headers = {"Accept": accept}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read().decode()
        for value in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            for key, morsel in jar.items():
                self.cookies[key] = morsel.value
        return response.status, data, dict(response.headers)

    def login(self, username: str, password: str) -> None:
        status, page, _ = self.request("GET", "/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if status != 200 or token is None:
            raise SystemExit(f"GET /login/ answered {status} without a CSRF token")
        status, _, headers = self.request("POST", "/login/", {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)})
        if status != 302 or "sessionid" not in self.cookies:
            raise SystemExit(f"logging in answered {status} ({headers.get('Location')}), no session")

    def close(self) -> None:
        self.connection.close()


def time_requests(http: Http, targets: list[Endpoint], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Round-robin over the pages (drift spreads over all of them); ms to the last body byte."""
    times: dict[str, list[float]] = {e.key: [] for e in targets}
    for n in range(warmup + rounds):
        for endpoint in targets:
            t0 = time.perf_counter()
            status, body, _ = http.request("GET", endpoint.path, accept=endpoint.accept)
            elapsed = (time.perf_counter() - t0) * 1000
            if status != 200 or endpoint.marker not in body:
                raise SystemExit(f"{endpoint.path}: status {status}, {len(body)} bytes, marker {endpoint.marker!r} missing")
            if n >= warmup:
                times[endpoint.key].append(elapsed)
    return times


def chart_endpoint(detail_html: str) -> Endpoint | None:
    """The request the device page's telemetry chart makes first (24 h in 120 s buckets), if the page has a chart."""
    import datetime

    found = re.search(r'data-url="([^"]+)"', detail_html)
    capability = re.search(r'data-series="([^"]+)"|<option value="([^"]+)" data-unit', detail_html)
    if found is None or capability is None:
        return None
    end = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    query = {
        "capability": capability.group(1) or capability.group(2),
        "start": (end - datetime.timedelta(days=1)).isoformat(),
        "end": end.isoformat(),
        "bucket": "120",
    }
    return Endpoint("chart", "device page's chart data, 24 h (API)", f"{found.group(1)}?{urllib.parse.urlencode(query)}", '"buckets"', "application/json")


def measure_pages(hub: Hub, targets: list[Endpoint], args: argparse.Namespace) -> dict[str, Any]:
    http = Http(hub.port)
    http.login(USERNAME, os.environ[PASSWORD_ENV])
    chart = chart_endpoint(http.request("GET", targets[-1].path)[1])
    if chart is not None:
        targets = [*targets, chart]
    sizes = {e.key: len(http.request("GET", e.path, accept=e.accept)[1]) for e in targets}
    web_pid = hub.pids.get("runhub") or hub.pids["daphne"]
    cpu0, t0 = proc_cpu_s(web_pid), time.perf_counter()
    times = time_requests(http, targets, args.requests, args.warmup)
    wall, cpu = time.perf_counter() - t0, proc_cpu_s(web_pid) - cpu0
    http.close()
    total = len(targets) * (args.requests + args.warmup)
    return {
        "pages": {e.key: {"label": e.label, "path": e.path, "bytes": sizes[e.key], **summary(times[e.key])} for e in targets},
        "server_cpu_ms_per_request": cpu / total * 1000,
        "wall_s": wall,
    }


BROWSER_INIT = """
(() => {
  const MODULO = __MODULO__;
  const B = window.__bench = {lags: [], arrivals: [], longtasks: [], handler: [], messages: 0, bytes: 0, from: 0};
  try {
    new PerformanceObserver((list) => list.getEntries().forEach((e) => B.longtasks.push([performance.timeOrigin + e.startTime, e.duration])))
      .observe({type: "longtask", buffered: true});
  } catch (e) {}
  const Native = window.WebSocket;
  function Counted(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    let started = 0;
    ws.addEventListener("message", (m) => {
      B.messages++;
      B.bytes += m.data.length;
      if (B.from) {  // every streamed temperature carries its send time: how old is what arrives?
        const now = Date.now(), ages = [];
        try {
          for (const e of JSON.parse(m.data).events || []) {
            if (e.type === "state" && e.capability === "temperature" && typeof e.value === "number") ages.push((now % MODULO - Math.round(e.value * 1000) + MODULO) % MODULO);
          }
        } catch (err) {}
        if (ages.length) { ages.sort((a, b) => a - b); B.arrivals.push([ages[0], ages[ages.length >> 1], ages[ages.length - 1], ages.length]); }
      }
      started = performance.now();
    });
    // Registered after the page's own onmessage (set right after construction): runs after it.
    setTimeout(() => ws.addEventListener("message", () => { if (Date.now() >= B.from) B.handler.push(performance.now() - started); }), 0);
    return ws;
  }
  Counted.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Counted[k] = Native[k];
  window.WebSocket = Counted;
})();
"""

OBSERVE_LAG = """
(modulo) => {
  const B = window.__bench;
  const cell = document.querySelector('[data-capability="temperature"] [data-value]');
  new MutationObserver(() => {
    const now = Date.now();
    const sent = Math.round(parseFloat(cell.textContent) * 1000);
    if (!isNaN(sent) && now >= B.from) B.lags.push((now % modulo - sent + modulo) % modulo);
  }).observe(cell, {childList: true, characterData: true, subtree: true});
  return cell.textContent;
}
"""


def browser_login(page: Any, url: str, username: str, password: str) -> None:
    page.goto(url + "/login/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    with page.expect_navigation():
        page.click('form [type="submit"]')


def measure_live(hub: Hub, devices_dir: Path, args: argparse.Namespace, targets: list[Endpoint], rate: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    hot_rate = args.hot_rate if args.hot_rate is not None else rate / args.live_devices
    load = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "load",
            "--dir",
            str(devices_dir),
            "--port",
            str(hub.mesh_port),
            "--sessions",
            str(args.live_devices),
            "--rate",
            f"{rate:g}",
            "--hot-rate",
            f"{hot_rate:g}",
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert load.stdin is not None and load.stdout is not None

    def tell(word: str) -> None:
        assert load.stdin is not None
        load.stdin.write(word + "\n")
        load.stdin.flush()

    result: dict[str, Any] = {"rate_offered": rate, "hot_rate": hot_rate, "devices": args.live_devices}
    try:
        line = load.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"load client failed: {line!r}")
        result["sessions"] = json.loads(line[len("READY ") :])
        log(f"  {result['sessions']['sessions']} device sessions open in {result['sessions']['opened_s']:.1f} s")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(30_000)
            context.add_init_script(BROWSER_INIT.replace("__MODULO__", str(STAMP_MODULO_MS)))
            page = context.new_page()
            browser_login(page, hub.url, USERNAME, os.environ[PASSWORD_ENV])
            page.goto(f"{hub.url}/devices/{LIVE_NODE}/")
            page.wait_for_selector('body[data-live-state="open"]', state="attached")
            page.evaluate(OBSERVE_LAG, STAMP_MODULO_MS)
            tell("GO")
            page.wait_for_timeout(args.live_warmup * 1000)
            page.evaluate(
                "() => { const B = window.__bench; B.lags = []; B.arrivals = []; B.handler = []; B.longtasks = []; B.messages = 0; B.bytes = 0; B.from = Date.now(); }"
            )
            tell("MARK")
            cpu0 = {name: proc_cpu_s(pid) for name, pid in hub.pids.items()}
            busy0, t0 = machine_busy(), time.perf_counter()
            rtt: list[float] = []
            end = time.monotonic() + args.live_duration
            while time.monotonic() < end:
                t1 = time.perf_counter()
                page.evaluate("() => performance.now()")
                rtt.append((time.perf_counter() - t1) * 1000)
                page.wait_for_timeout(200)
            wall = time.perf_counter() - t0
            busy1 = machine_busy()
            cpu = {name: proc_cpu_s(pid) - cpu0[name] for name, pid in hub.pids.items()}
            seen = page.evaluate(
                "() => { const B = window.__bench; return {lags: B.lags, arrivals: B.arrivals, handler: B.handler, longtasks: B.longtasks, messages: B.messages, bytes: B.bytes}; }"
            )
            long_ms = [d for _, d in seen["longtasks"]]
            result["window_s"] = wall
            result["lag_ms"] = summary(seen["lags"])
            result["arrival_age_ms"] = {
                "freshest": summary([a[0] for a in seen["arrivals"]]),
                "median": summary([a[1] for a in seen["arrivals"]]),
                "oldest": summary([a[2] for a in seen["arrivals"]]),
                "values_per_message": summary([a[3] for a in seen["arrivals"]]),
            }
            result["evaluate_rtt_ms"] = summary(rtt)
            result["handler_ms"] = summary(seen["handler"])
            result["ws_messages_per_s"] = seen["messages"] / wall
            result["ws_kb_per_s"] = seen["bytes"] / wall / 1024
            result["long_tasks"] = {"count": len(long_ms), "total_ms": sum(long_ms), "max_ms": max(long_ms, default=0.0)}
            result["server_cpu_util"] = {name: value / wall for name, value in cpu.items()}
            result["machine_cpu_util"] = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
            # With the stream still on: clicks between two list pages, then the pages over HTTP.
            result["navigation_ms"] = summary(navigate(hub, page, args.navigations))
            result["http_under_load"] = under_load(hub, args, targets)
            tell("STOP")
            stream_line = next((x for x in iter(load.stdout.readline, "") if x.startswith(RESULT_MARKER)), None)
            if stream_line is None:
                raise SystemExit("load client printed no result")
            result["stream"] = json.loads(stream_line[len(RESULT_MARKER) :])
            context.close()
            browser.close()
    finally:
        if load.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                tell("STOP")
            try:
                load.wait(30)
            except subprocess.TimeoutExpired:
                load.kill()
    return result


def navigate(hub: Hub, page: Any, count: int) -> list[float]:
    """Click -> `load` of the next devices list page and back, each page opening its own /ws/live/."""
    page.goto(f"{hub.url}/devices/")
    times = []
    for n in range(count):
        link = page.locator("nav.pages a", has_text="next" if n % 2 == 0 else "previous")
        t0 = time.perf_counter()
        with page.expect_navigation(wait_until="load"):
            link.click()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def under_load(hub: Hub, args: argparse.Namespace, targets: list[Endpoint]) -> dict[str, Any]:
    http = Http(hub.port)
    http.login(USERNAME, os.environ[PASSWORD_ENV])
    chosen = [e for e in targets if e.key in ("list", "detail")]
    times = time_requests(http, chosen, args.live_requests, 3)
    http.close()
    return {e.key: {"label": e.label, **summary(times[e.key])} for e in chosen}


# ================================================================ one configuration


def config_env(config: str, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    from run import base_env, recreate_postgres_database

    data_dir = Path(tempfile.mkdtemp(prefix=f"pages-{config.replace('+', '-')}-", dir=tmp))
    env = base_env(str(data_dir))
    env[PASSWORD_ENV] = os.environ[PASSWORD_ENV]
    if config.startswith("postgres"):
        recreate_postgres_database(args.postgres_url)
        env["DATABASE_URL"] = args.postgres_url
    if config.endswith("+redis"):
        from gateway import clear_redis

        clear_redis(args.redis_url)
        env["REDIS_URL"] = args.redis_url
    return env


def run_config(config: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = config_env(config, args, tmp)
    data_dir = Path(env["MESHHUB_DATA_DIR"])
    result: dict[str, Any] = {"config": config}
    t0 = time.perf_counter()
    log(f"=== {config}: migrate, seedfleet --devices {args.devices} --days {args.days:g} ===")
    t1 = time.perf_counter()
    manage(["migrate", "--no-input", "-v", "0"], env)
    result["migrate_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    seed_args = ["seedfleet", "--devices", str(args.devices), "--days", f"{args.days:g}", "--json"]
    result["seed"] = json.loads(manage(seed_args, env).strip().splitlines()[-1])
    result["seed"]["wall_s"] = time.perf_counter() - t1
    log(f"  seeded {result['seed']['devices']:,} devices, {result['seed']['samples']:,} samples in {result['seed']['wall_s']:.1f} s")
    t1 = time.perf_counter()
    prepared = run_py([str(Path(__file__).resolve()), "prepare", "--audit-events", str(args.audit_events)], env, "prepare")
    result["prepare"] = {k: prepared[k] for k in ("detail", "detail_samples", "audit_events", "audit_s")} | {"wall_s": time.perf_counter() - t1}
    log(f"  {prepared['audit_events']:,} audit events in {prepared['audit_s']:.1f} s, {prepared['detail_samples']:,} samples for {prepared['detail']}")
    result["database"] = prepared["database"]
    targets = endpoints(prepared["detail"], prepared["group"], args.devices)
    logs = data_dir / "hub.log"
    log(f"=== {config}: pages, {args.requests} requests each after {args.warmup} warm-up rounds ===")
    with running_hub(config, env, logs) as hub:
        result["http"] = measure_pages(hub, targets, args)
    for e in targets:
        x = result["http"]["pages"][e.key]
        log(f"  {e.label}: p50 {x['p50']:.1f} ms, p95 {x['p95']:.1f} ms")
    if args.profile:
        result["profile"] = run_py(
            [str(Path(__file__).resolve()), "profile", "--detail", prepared["detail"], "--group", prepared["group"], "--devices", str(args.devices)],
            env,
            "profile",
        )
    if not args.skip_live:
        devices_dir = data_dir / "bench-devices"
        result["live_setup"] = run_py([str(BENCH_DIR / "gateway.py"), "setup", "--devices", str(args.live_devices), "--out", str(devices_dir)], env, "setup")
        result["live"] = []
        with running_hub(config, env, logs) as hub:
            for rate in args.rates:
                log(f"=== {config}: live, {args.live_devices} devices at {rate:g} reports/s, one browser on /devices/{LIVE_NODE}/ ===")
                live = measure_live(hub, devices_dir, args, targets, rate)
                result["live"].append(live)
                log(
                    f"  {live['stream']['acked_per_s']:,.0f} reports/s acknowledged; lag p50 {live['lag_ms'].get('p50', 0):.0f} ms, "
                    f"p95 {live['lag_ms'].get('p95', 0):.0f} ms; evaluate p95 {live['evaluate_rtt_ms']['p95']:.1f} ms"
                )
    from gateway import gateway_log_summary

    result["hub_log"] = gateway_log_summary(logs)
    result["wall_s"] = time.perf_counter() - t0
    return result


# ================================================================ report

LABELS = {"sqlite": "SQLite (embedded: runhub)", "postgres+redis": "PostgreSQL + Redis (daphne + runmesh)"}


def ms(x: dict[str, Any], key: str) -> str:
    return f"{x[key]:,.1f}" if x.get("n") else "—"


def print_report(machine: dict[str, Any], results: dict[str, dict[str, Any]], command: str) -> None:
    print("machine:")
    print(f"  command: {command}")
    for key in ("date_utc", "nproc", "cpu_model", "memory", "kernel", "python"):
        print(f"  {key}: {machine.get(key)}")
    print(f"  loadavg at start: {' '.join(machine.get('loadavg', []))}")
    print(f"  git: {machine.get('git')}")
    print(f"  chromium: {machine.get('chromium')}")
    for config, r in results.items():
        db = r["database"]
        seed = r["seed"]
        print()
        print(f"{LABELS[config]}, {db['vendor']} {db['version']} (run took {r['wall_s']:.0f} s):")
        print(
            f"  seedfleet: {seed['devices']:,} devices, {seed['capabilities']:,} capabilities, {seed['samples']:,} samples "
            f"in {seed['total_s']:.1f} s (telemetry {seed['telemetry_s']:.1f} s; process wall {seed['wall_s']:.1f} s)"
        )
        h = r["http"]
        print(f"  pages ({h['pages']['list']['n']} requests each, server CPU {h['server_cpu_ms_per_request']:.1f} ms per request on average):")
        for x in h["pages"].values():
            print(f"    {x['label']}: p50 {x['p50']:.1f} ms, p95 {x['p95']:.1f} ms, p99 {x['p99']:.1f} ms, max {x['max']:.1f} ms ({x['bytes']:,} bytes)")
        for live in r.get("live") or []:
            s = live["stream"]
            print(f"  live ({live['devices']} device sessions, {live['rate_offered']:g} reports/s offered, {live['hot_rate']:g}/s from {LIVE_NODE}):")
            print(
                f"    reports acknowledged: {s['acked_per_s']:,.0f}/s ({s['acked']:,} in {s['window_s']:.1f} s; sent {s['sent_per_s']:,.0f}/s; "
                f"no room {s['skipped_no_room']:,}; errors {s['errors'] or 0}; sessions lost {s['lost']}; unanswered {s['unanswered']})"
            )
            print(f"    send -> ack (committed): p50 {ms(s['ack_ms'], 'p50')} ms, p95 {ms(s['ack_ms'], 'p95')} ms, p99 {ms(s['ack_ms'], 'p99')} ms")
            print(
                f"    {LIVE_NODE} alone: {s['hot_acked_per_s']:.1f} reports/s acknowledged of {live['hot_rate']:g}/s offered, "
                f"send -> ack p50 {ms(s['hot_ack_ms'], 'p50')} ms, p95 {ms(s['hot_ack_ms'], 'p95')} ms"
            )
            lag = live["lag_ms"]
            print(f"    update lag, sent -> in the DOM: p50 {ms(lag, 'p50')} ms, p95 {ms(lag, 'p95')} ms, max {ms(lag, 'max')} ms ({lag.get('n', 0)} updates)")
            ages = live["arrival_age_ms"]
            print(
                f"    age of the streamed temperatures in each WebSocket message: freshest p50 {ms(ages['freshest'], 'p50')} ms, "
                f"median p50 {ms(ages['median'], 'p50')} / p95 {ms(ages['median'], 'p95')} ms, oldest p95 {ms(ages['oldest'], 'p95')} ms "
                f"({ages['values_per_message'].get('p50', 0):.0f} values per message)"
            )
            rtt, handler = live["evaluate_rtt_ms"], live["handler_ms"]
            print(f"    page.evaluate round trip: p50 {ms(rtt, 'p50')} ms, p95 {ms(rtt, 'p95')} ms, max {ms(rtt, 'max')} ms")
            print(
                f"    WebSocket: {live['ws_messages_per_s']:.1f} messages/s, {live['ws_kb_per_s']:.1f} KB/s; handler p50 {ms(handler, 'p50')} ms, "
                f"p95 {ms(handler, 'p95')} ms; long tasks {live['long_tasks']['count']} ({live['long_tasks']['total_ms']:.0f} ms in all)"
            )
            nav = live["navigation_ms"]
            print(f"    click -> next list page loaded: p50 {ms(nav, 'p50')} ms, p95 {ms(nav, 'p95')} ms ({nav.get('n', 0)} clicks)")
            for x in live["http_under_load"].values():
                print(f"    {x['label']} over HTTP under load: p50 {ms(x, 'p50')} ms, p95 {ms(x, 'p95')} ms ({x['n']} requests)")
            util = ", ".join(f"{name} {value * 100:.0f} %" for name, value in live["server_cpu_util"].items())
            print(
                f"    CPU during the window: {util} of one core; whole machine {live['machine_cpu_util'] * 100:.0f} % of one core (of {machine.get('nproc')})"
            )
        logged = r.get("hub_log") or {}
        if logged.get("counts"):
            print(f"  hub log: {logged['counts']} first: {logged['first']}")
    print()
    print(f"goals (p95 < {PAGE_GOAL_MS:.0f} ms per page):")
    for config, r in results.items():
        for x in r["http"]["pages"].values():
            verdict = "met" if x["p95"] < PAGE_GOAL_MS else "NOT met"
            print(f"  {LABELS[config]}, {x['label']}: p95 {x['p95']:.1f} ms -> {verdict}")
    print()
    configs = list(results)
    print("| figure | unit | " + " | ".join(LABELS[c] for c in configs) + " |")
    print("|---|---|" + "---:|" * len(configs))

    def row(figure: str, unit: str, cell: Any) -> None:
        cells = []
        for c in configs:
            try:
                cells.append(cell(results[c]))
            except (KeyError, TypeError):
                cells.append("—")
        print(f"| {figure} | {unit} | " + " | ".join(cells) + " |")

    seed = results[configs[0]]["seed"]
    row(f"seedfleet, {seed['devices']:,} devices + {seed['samples']:,} samples", "s", lambda r: f"{r['seed']['total_s']:.1f}")
    for key in results[configs[0]]["http"]["pages"]:
        label = results[configs[0]]["http"]["pages"][key]["label"].split(" (")[0]
        row(f"{label}, p50 / p95 / p99", "ms", lambda r, key=key: " / ".join(f"{r['http']['pages'][key][p]:.1f}" for p in ("p50", "p95", "p99")))
    for k, rate in enumerate(next((r["live"] for r in results.values() if r.get("live")), [])):
        at = f"live at {rate['rate_offered']:,.0f}/s offered"

        def pair(r: dict[str, Any], *path: str, k: int = k) -> str:
            x = r["live"][k]
            for key in path:
                x = x[key]
            return f"{ms(x, 'p50')} / {ms(x, 'p95')}"

        row(f"{at}: reports acknowledged", "per s", lambda r, k=k: f"{r['live'][k]['stream']['acked_per_s']:,.0f}")
        row(f"{at}: send → ack (committed) p50 / p95", "ms", lambda r, pair=pair: pair(r, "stream", "ack_ms"))
        row(f"{at}: update lag, sent → in the page, p50 / p95", "ms", lambda r, pair=pair: pair(r, "lag_ms"))
        row(f"{at}: page.evaluate round trip p50 / p95", "ms", lambda r, pair=pair: pair(r, "evaluate_rtt_ms"))
        row(f"{at}: WebSocket message handler p50 / p95", "ms", lambda r, pair=pair: pair(r, "handler_ms"))
        row(f"{at}: click → next list page loaded p50 / p95", "ms", lambda r, pair=pair: pair(r, "navigation_ms"))
        row(f"{at}: devices list over HTTP p50 / p95", "ms", lambda r, pair=pair: pair(r, "http_under_load", "list"))
        row(f"{at}: device page over HTTP p50 / p95", "ms", lambda r, pair=pair: pair(r, "http_under_load", "detail"))
    for config, r in results.items():
        for key, text in (r.get("profile") or {}).items():
            print()
            print(f"profile, {LABELS[config]}, {key}:")
            print(text)


def chromium_version() -> str:
    try:
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except OSError:
        return "missing"


WORKERS = {"prepare": worker_prepare, "profile": worker_profile, "load": worker_load}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, from {', '.join(CONFIGS)} (default {DEFAULT_CONFIGS})")
    parser.add_argument("--devices", type=int, default=10_000, help="seeded devices (default 10,000)")
    parser.add_argument("--days", type=float, default=1.0, help="days of telemetry; with the default interval 1 day = 1,000,000 samples for 10,000 devices")
    parser.add_argument(
        "--audit-events", type=int, default=200_000, help="audit history: mesh.session events round-robin over the fleet (default 200,000: 20 per device)"
    )
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first (default 20)")
    parser.add_argument("--profile", action="store_true", help="also each page in-process: queries, EXPLAIN of the slowest, cProfile")
    parser.add_argument("--skip-live", action="store_true", help="pages only: no gateway load, no browser")
    parser.add_argument("--live-devices", type=int, default=500, help="device sessions streaming state (default 500)")
    parser.add_argument(
        "--rates", default="1000,500", help="state reports per second offered in all, one live measurement per rate, comma-separated (default 1000,500)"
    )
    parser.add_argument(
        "--hot-rate", type=float, help=f"of which from {LIVE_NODE}, the device the browser shows (default: as much as any other device, rate / devices)"
    )
    parser.add_argument("--live-warmup", type=float, default=5.0, help="seconds of stream before the window (default 5)")
    parser.add_argument("--live-duration", type=float, default=60.0, help="seconds of lag and responsiveness samples (default 60)")
    parser.add_argument("--navigations", type=int, default=10, help="clicks between two list pages under load (default 10)")
    parser.add_argument("--live-requests", type=int, default=50, help="HTTP requests of the list and the device page under load (default 50 each)")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_PAGES_DATABASE_URL", DEFAULT_POSTGRES_URL), help="dropped and recreated per run")
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_PAGES_REDIS_URL", DEFAULT_REDIS_URL), help="a Redis database of its own (meshhub* keys are deleted)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        if config not in CONFIGS:
            parser.error(f"unknown config {config!r}")
    if not args.skip_live and args.live_devices < 2:
        parser.error("--live-devices: at least 2")
    try:
        args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        parser.error("--rates: e.g. 1000,500")
    name = urllib.parse.urlsplit(args.postgres_url).path.lstrip("/")
    if name in {"meshhub", "test_meshhub"}:
        parser.error(f"--postgres-url: {name!r} belongs to the hub or its test suite; give the bench its own database")
    if not args.skip_live and not os.path.exists(CHROMIUM):
        parser.error(f"{CHROMIUM} is missing (apt-get install -y chromium), or run with --skip-live")
    os.environ.setdefault(PASSWORD_ENV, secrets.token_urlsafe(18))

    from gateway import git_state
    from run import machine_info

    machine = machine_info()
    machine["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    machine["git"] = git_state()
    machine["chromium"] = chromium_version()
    command = " ".join(["python", "bench/pages.py", *sys.argv[1:]])
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meshhub-pages-bench-") as tmp:
        for config in configs:
            results[config] = run_config(config, args, Path(tmp))
    machine["total_wall_s"] = time.perf_counter() - t0
    machine["date_end_utc"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print_report(machine, results, command)
    print()
    print(f"total_runtime_s: {machine['total_wall_s']:.0f} s (started {machine['date_utc']}, ended {machine['date_end_utc']})")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "command": command, "results": results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
