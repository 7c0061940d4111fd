"""Operational endpoints: /healthz for load balancers and humans, /metrics for Prometheus."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views import defaults
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audit.models import AuditEvent, Decision
from devices import identity
from devices.models import Device, DeviceStatus
from hub import messages, outages
from hub import system as system_status
from hub.metrics import registry
from hub.middleware import unavailable_response
from hub.models import Heartbeat
from industrial.models import ModbusBridge


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_channel_layer() -> dict[str, Any]:
    # A fresh instance: the process's shared one may already be receiving on the server's
    # event loop, and channels-redis allows one receiving loop per instance.
    if get_channel_layer() is None:
        raise RuntimeError("no channel layer configured")
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)

    async def roundtrip() -> None:
        channel = await layer.new_channel("healthz.")
        await layer.send(channel, dict(messages.healthz_ping(uuid.uuid4().hex)))
        await layer.receive(channel)

    async def roundtrip_and_close() -> None:
        try:
            await asyncio.wait_for(roundtrip(), 5)
        finally:
            close = getattr(layer, "close_pools", None)
            if close is not None:
                await close()

    async_to_sync(roundtrip_and_close)()
    return {"backend": type(layer).__name__}


def check_broker() -> dict[str, Any]:
    from hub.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        transport = conn.transport_cls
    return {"transport": str(transport)}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "broker": check_broker,
}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when every component answers, 503 naming the ones that do not: since when (as
    this process saw it), and the error. The log says it once per change (hub.outages)."""
    components: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        dependency = outages.DEPENDENCIES[name]
        started = time.perf_counter()
        try:
            info = check()
        except Exception as exc:  # each failure is reported, not raised: that is the endpoint's job
            dependency.failed(exc, "healthz")
            components[name] = {"status": "error", **dependency.as_dict()}
        else:
            dependency.succeeded()
            components[name] = {"status": "ok", **info}
        components[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    down = [name for name, component in components.items() if component["status"] != "ok"]
    body: dict[str, Any] = {
        "status": "error" if down else "ok",
        "down": down,
        "mode": "embedded" if settings.EMBEDDED else "production",
        "components": components,
        # This process's gateway audit backlog (runhub): held while the database is away.
        "audit_backlog": outages.audit_backlogs(),
    }
    # Informational: a hub whose worker is starting has no stamp yet, and is still healthy.
    body["worker_heartbeat"] = None
    if "database" not in down:
        try:
            beat = Heartbeat.objects.filter(name="worker").first()
        except Exception as exc:  # the database went away since its check
            outages.report_failure(exc, "healthz")
        else:
            body["worker_heartbeat"] = {"at": beat.at.isoformat(), "age_s": round((timezone.now() - beat.at).total_seconds(), 1)} if beat else None
    response = JsonResponse(body, status=503 if down else 200)
    response._has_been_logged = True  # type: ignore[attr-defined]  # hub.outages logs each change once, not each probe
    return response


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


# --- pages --------------------------------------------------------------------------


def overview(request: HttpRequest) -> HttpResponse:
    """Counts and what needs attention: expiring certificates, offline devices, dropped
    events, recent denials, PLCs in trouble."""
    provisioned = Device.objects.filter(status=DeviceStatus.PROVISIONED)
    since = timezone.now() - timedelta(hours=24)
    context = {
        "total": Device.objects.count(),
        "provisioned": provisioned.count(),
        "online": provisioned.filter(online=True).count(),
        "offline_devices": provisioned.filter(online=False).order_by("-last_seen")[:10],
        "offline_count": provisioned.filter(online=False).count(),
        "expiring": identity.certificates_expiring()[:10],
        "dropped": Device.objects.filter(metadata__has_key="dropped_events").exclude(metadata__dropped_events=0).order_by("node_id")[:10],
        "denied": AuditEvent.objects.filter(decision=Decision.DENY, ts__gte=since).order_by("-seq")[:8],
        "denied_count": AuditEvent.objects.filter(decision=Decision.DENY, ts__gte=since).count(),
        "plc_errors": ModbusBridge.objects.select_related("device").exclude(last_error="").order_by("device__node_id")[:10],
    }
    return render(request, "hub/overview.html", context)


def system(request: HttpRequest) -> HttpResponse:
    """The hub's moving parts: gateways and their connections, worker and beat heartbeat,
    queue depths, database/broker/layer and versions (hub.system)."""
    return render(request, "hub/system.html", system_status.status())


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an outage raised outside a view (a middleware's session or user lookup)
    is a 503 too; anything else is Django's plain 500."""
    exc = sys.exc_info()[1]
    if exc is not None:
        unavailable = unavailable_response(request, exc)
        if unavailable is not None:
            return unavailable
    return defaults.server_error(request)
