"""What the system page shows: the hub's moving parts, each read from where it proves
itself (heartbeat rows, beat's bookkeeping, the broker's queues), and the versions.

Every probe is independent and reports its own failure as text: a broker that is down
must show as down on the page, not turn the page into a 500.

Right after `runhub` (`make run`) starts, the Celery worker and beat have not stamped yet:
they show as `starting`, not `down`, until their first heartbeat is due (ARCHITECTURE §9).
The start time comes from the `hub` Heartbeat row that runhub writes just before it spawns
the worker + beat child (`record_hub_start`), not from this web process or a gateway:
production web processes and `runmesh` gateways restart on their own schedule and would
dress a long-dead worker up as starting; runhub is what starts the worker. Only runhub's
own start counts, not the supervisor's respawns, so a crash-looping worker turns `down`.
Production roles (no runhub) write no such row: a missing heartbeat is `down` at once.
"""

from __future__ import annotations

import os
import platform
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_celery_beat.models import PeriodicTask

from devices import retention
from devices.consumers import HUB_VERSION
from devices.models import Device, DeviceStatus
from hub.models import Heartbeat

WORKER_STALE_AFTER = timedelta(seconds=90)  # the heartbeat task runs every 30 s
BEAT_STALE_AFTER = timedelta(minutes=5)  # django-celery-beat saves last_run_at every few minutes
HUB_ROW = "hub"  # the Heartbeat row runhub stamps when it starts the worker + beat child
STARTING_GRACE = timedelta(seconds=30)  # the worker's boot (Django, Celery, the broker) before beat's first tick
PACKAGES = [
    "Django",
    "channels",
    "daphne",
    "channels-redis",
    "celery",
    "kombu",
    "django-celery-beat",
    "djangorestframework",
    "psycopg",
    "redis",
    "cryptography",
    "pymodbus",
    "uvloop",
]


@dataclass
class Component:
    name: str
    ok: bool
    summary: str
    at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    starting: bool = False  # not proven alive yet, and not overdue either: no alarm

    @property
    def state(self) -> str:
        return "up" if self.ok else "starting" if self.starting else "down"


def _age(at: datetime, now: datetime) -> str:
    seconds = int((now - at).total_seconds())
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def gateways(now: datetime) -> list[Component]:
    """One row per gateway that stamped in the last hour; older ones are history, not news."""
    stale_after = timedelta(seconds=3 * settings.GATEWAY_STAMP_S)
    rows = Heartbeat.objects.filter(name__startswith="gateway:", at__gte=now - timedelta(hours=1)).order_by("name")
    found = []
    for row in rows:
        info = dict(row.details or {})
        info["started_at"] = parse_datetime(str(info.get("started_at", "")))
        alive = now - row.at <= stale_after
        summary = f"{info.get('connections', '?')} connections on {info.get('host', '?')}:{info.get('port', '?')} (pid {info.get('pid', '?')})"
        if not alive:
            summary = f"silent since {_age(row.at, now)}; last seen with {summary}"
        found.append(Component(row.name, alive, summary, row.at, info))
    return found


def first_heartbeat_due() -> timedelta:
    """How long after the hub's start a missing heartbeat is overdue: beat's interval for
    the heartbeat task plus the worker's boot."""
    return timedelta(seconds=settings.WORKER_HEARTBEAT_S) + STARTING_GRACE


def record_hub_start() -> None:
    """runhub, just before it spawns the Celery worker + beat: the start of the `starting` window."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(name=HUB_ROW, defaults={"at": now, "details": {"started_at": now.isoformat(), "pid": os.getpid()}})


def hub_started_at(now: datetime) -> datetime | None:
    """When runhub started the worker + beat, if their first heartbeat is not due yet."""
    row = Heartbeat.objects.filter(name=HUB_ROW).first()
    if row is None or now - row.at >= first_heartbeat_due():
        return None
    return row.at


def _starting(name: str, started_at: datetime, now: datetime) -> Component:
    due = int(first_heartbeat_due().total_seconds())
    return Component(name, False, f"starting: runhub started it {_age(started_at, now)}; the first heartbeat is due within {due} s", started_at, starting=True)


def worker(now: datetime, started_at: datetime | None = None) -> Component:
    """Up on a fresh stamp; `starting` without one while the hub's start is recent (a stale
    stamp then predates the start: the window is shorter than WORKER_STALE_AFTER)."""
    row = Heartbeat.objects.filter(name="worker").first()
    if row is not None and now - row.at <= WORKER_STALE_AFTER:
        return Component("worker", True, f"ran the heartbeat task {_age(row.at, now)}", row.at)
    if started_at is not None:
        return _starting("worker", started_at, now)
    if row is None:
        return Component("worker", False, "no heartbeat yet: is a Celery worker running (runhub starts one)?")
    return Component("worker", False, f"ran the heartbeat task {_age(row.at, now)}: worker or beat is down", row.at)


def beat(now: datetime, worker: Component | None, started_at: datetime | None = None) -> Component:
    """Only beat schedules the heartbeat task, so a fresh worker stamp proves beat too;
    without one, beat's own bookkeeping (saved every few minutes) is the evidence, as long
    as it is newer than the hub's start (older, it proves the previous run's beat)."""
    if worker is not None and worker.ok and worker.at is not None:
        return Component("beat", True, f"scheduled the heartbeat task the worker ran {_age(worker.at, now)}", worker.at)
    last = PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
    if started_at is not None and (last is None or last < started_at):
        return _starting("beat", started_at, now)
    if last is None:
        return Component("beat", False, "no periodic task has run yet: is celery beat running?")
    alive = now - last <= BEAT_STALE_AFTER
    return Component("beat", alive, f"last scheduled a task {_age(last, now)}", last)


def queue_depths() -> tuple[list[tuple[str, int | None, str]], str]:
    """(queue, messages waiting or None, problem) per queue, and the broker's transport."""
    from hub.celery import app

    names = sorted({app.conf.task_default_queue or "celery", *(q.name for q in (app.conf.task_queues or []))})
    depths: list[tuple[str, int | None, str]] = []
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        transport = conn.transport_cls
        channel: Any = conn.default_channel  # a kombu virtual channel: queue_declare(passive=True) counts
        for name in names:
            try:
                _, count, _ = channel.queue_declare(queue=name, passive=True)
                depths.append((name, int(count), ""))
            except Exception as exc:  # not declared yet, or the broker went away mid-way
                depths.append((name, None, f"{type(exc).__name__}: {exc}"[:200]))
    return depths, str(transport)


def database_version() -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            return f"SQLite {cursor.fetchone()[0]}"
    return connection.vendor


def redis_version() -> str | None:
    if settings.EMBEDDED:
        return None

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    try:
        return f"Redis {client.info('server')['redis_version']}"
    finally:
        client.close()


def versions() -> list[tuple[str, str]]:
    found = [("Python", platform.python_version()), ("OpenSSL", ssl.OPENSSL_VERSION)]
    for package in PACKAGES:
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            continue
    return found


def telemetry_storage(now: datetime) -> dict[str, Any]:
    """The retention policy, and what the last retention run did and measured (table sizes
    are measured there, not here: on SQLite that reads the whole database file)."""
    policy = retention.Policy.from_settings()
    row = Heartbeat.objects.filter(name=retention.HEARTBEAT_NAME).first()
    details = dict(row.details) if row else {}
    report = details.get("report") or {}
    tables = details.get("tables") or []
    overdue = row is None or now - row.at > timedelta(seconds=3 * settings.TELEMETRY_RETENTION_S + policy.budget_s)
    return {
        "policy": policy,
        "every_s": int(settings.TELEMETRY_RETENTION_S),
        "ran_at": row.at if row else None,
        "report": report,
        "tables": tables,
        "total_bytes": sum(int(t.get("bytes", 0)) for t in tables),
        "overdue": overdue,
    }


def probe(name: str, fn: Any, *args: Any) -> tuple[Any, str]:
    """Run one probe; its failure becomes text on the page."""
    try:
        return fn(*args), ""
    except Exception as exc:
        return None, f"{name}: {type(exc).__name__}: {exc}"[:300]


def status() -> dict[str, Any]:
    now = timezone.now()
    problems: list[str] = []
    gateway_rows, problem = probe("gateways", gateways, now)
    problems.append(problem)
    started_at, problem = probe("hub start", hub_started_at, now)
    problems.append(problem)
    worker_row, problem = probe("worker", worker, now, started_at)
    problems.append(problem)
    beat_row, problem = probe("beat", beat, now, worker_row, started_at)
    problems.append(problem)
    queues, problem = probe("broker", queue_depths)
    problems.append(problem)
    db_version, problem = probe("database", database_version)
    problems.append(problem)
    redis, problem = probe("redis", redis_version)
    problems.append(problem)
    storage, problem = probe("storage", telemetry_storage, now)
    problems.append(problem)
    live_gateways = [g for g in gateway_rows or [] if g.ok]
    return {
        "now": now,
        "hub_version": HUB_VERSION,
        "mode": "embedded" if settings.EMBEDDED else "production",
        "gateways": gateway_rows or [],
        "connections": sum(int(g.details.get("connections", 0)) for g in live_gateways),
        "online": Device.objects.filter(online=True, status=DeviceStatus.PROVISIONED).count(),
        "worker": worker_row,
        "beat": beat_row,
        "queues": queues[0] if queues else [],
        "transport": queues[1] if queues else "",
        "database": db_version,
        "redis": redis,
        "channel_layer": str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1],
        "versions": versions(),
        "storage": storage,
        "ports": {"mesh": settings.MESH_PORT, "enroll": settings.ENROLL_PORT, "public_host": settings.PUBLIC_HOST},
        "problems": [p for p in problems if p],
    }
