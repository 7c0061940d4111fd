"""Public PKI files (the CA certificates and the current CRL, for anyone to verify
against) and the operator pages for devices."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from audit.models import AuditEvent
from devices import identity, services
from devices.details import details
from devices.models import CapabilityKind, Certificate, CertificateStatus, Device, DeviceStatus, Group, ValueType
from devices.services import MISSING
from hub.actors import actor_for_request
from hub.pages import paginate, query_without_page, require_scope
from hub.scopes import Scope


@require_GET
def ca_pem(request: HttpRequest) -> HttpResponse:
    identity.active_ca()
    body = "".join(ca.cert_pem for ca in identity.trusted_cas())
    return HttpResponse(body, content_type="application/x-pem-file")


@require_GET
def crl_pem(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(identity.current_crl_pem(), content_type="application/x-pem-file")
    response["Cache-Control"] = "no-cache"
    return response


# --- pages --------------------------------------------------------------------------

COMMAND_ACTIONS = ["set", "toggle", "get", "execute"]


def device_list(request: HttpRequest) -> HttpResponse:
    """Search and filters stay in the URL, so a view can be bookmarked or shared.

    A device that enrolls while the list is open arrives over /ws/live/ (static/meshhub/app.js):
    an unfiltered list adds its row where node id order puts it, if that is on the shown
    page; a filtered list, or another page, counts it in a "reload" notice instead, so the
    filters are decided here only, never again in the browser."""
    rendered_at = timezone.now()  # before the query: a device enrolled meanwhile comes again, never not at all
    devices = Device.objects.order_by("node_id")
    q = request.GET.get("q", "").strip()[:100]
    if q:
        devices = devices.filter(Q(node_id__icontains=q) | Q(name__icontains=q))
    device_type = request.GET.get("type", "")
    if device_type:
        devices = devices.filter(device_type=device_type)
    status = request.GET.get("status", "")
    if status in DeviceStatus.values:
        devices = devices.filter(status=status)
    online = request.GET.get("online", "")
    if online in ("yes", "no"):
        devices = devices.filter(online=online == "yes")
    group = request.GET.get("group", "")
    if group:
        devices = devices.filter(groups__name=group)
    page = paginate(request, devices.only("node_id", "name", "device_type", "status", "online", "last_seen", "firmware_version"))
    context = {
        "page": page,
        "query": query_without_page(request),
        "q": q,
        "filters": {"type": device_type, "status": status, "online": online, "group": group},
        "filtered": bool(q or device_type or status in DeviceStatus.values or online in ("yes", "no") or group),
        "rendered_at": rendered_at,
        "types": Device.objects.order_by("device_type").values_list("device_type", flat=True).distinct(),
        "statuses": DeviceStatus.choices,
        "groups": Group.objects.order_by("name").values_list("name", flat=True),
        "any_devices": Device.objects.exists(),
    }
    return render(request, "devices/device_list.html", context)


def _detail_context(device: Any) -> dict[str, Any]:
    capabilities = list(device.capabilities.order_by("name"))
    rows = [{"cap": cap, "reported": device.reported.get(cap.name), "desired": device.desired.get(cap.name)} for cap in capabilities]
    numeric = [c for c in capabilities if c.value_type in (ValueType.INT, ValueType.FLOAT)]
    return {
        "device": device,
        "rows": rows,
        "writable": [c for c in capabilities if c.writable or c.kind != "sensor"],
        "actions": COMMAND_ACTIONS,
        "commands": device.commands.order_by("-created_at")[:20],
        "certificate": Certificate.objects.filter(device=device, status=CertificateStatus.ACTIVE).order_by("-not_after").first(),
        # Through the (target_type, target_id) index: on target_id alone the databases walked
        # the whole log back from the newest event (SQLite 27 ms at 200,000 events, PostgreSQL
        # 90-160 ms at 1,000,000; bench/pages.py). Events naming a node id are "device" ones,
        # and "modbus" for a PLC bridge's import.
        "trail": AuditEvent.objects.filter(target_type__in=("device", "modbus"), target_id=device.node_id).order_by("-seq")[:20],
        "points": device.metadata.get("points") or {},
        "charted": sorted(numeric, key=lambda c: c.kind != CapabilityKind.SENSOR),  # the chart's choices, sensors first
        "cards": details.cards(device),  # what other apps show here (firmware: ota)
    }


def device_detail(request: HttpRequest, node_id: str) -> HttpResponse:
    device = get_object_or_404(Device, node_id=node_id)
    return render(request, "devices/device_detail.html", {**_detail_context(device), "form": {}})


def parse_form_value(text: str) -> Any:
    """The command form's value box: JSON when it parses (`true`, `21.5`, `"auto"`), else the text."""
    text = text.strip()
    if text == "":
        return MISSING
    try:
        return json.loads(text)
    except ValueError:
        return text


@require_POST
def device_command(request: HttpRequest, node_id: str) -> HttpResponse:
    """The command form: send_command() validates; a refusal is shown next to the field."""
    device = get_object_or_404(Device, node_id=node_id)
    require_scope(request, Scope.COMMAND, "command", "device", node_id)
    form = {k: request.POST.get(k, "") for k in ("action", "capability", "value")}
    try:
        command = services.send_command(actor_for_request(request), node_id, form["action"], form["capability"], parse_form_value(form["value"]))
    except services.CommandRejected as rejected:
        context = {**_detail_context(device), "form": form, "error": rejected}
        return render(request, "devices/device_detail.html", context, status=400)
    # Not its status: that changes within a second and the flash would go on saying "pending";
    # the Commands table below shows it live.
    messages.success(request, f"Command {command.action} {command.capability} queued ({str(command.id)[:8]}…): its status and result follow under Commands.")
    return redirect("device-page", node_id=node_id)


@require_POST
def device_revoke(request: HttpRequest, node_id: str) -> HttpResponse:
    """Revoke every active certificate (asks for a reason; the page confirms first)."""
    device = get_object_or_404(Device, node_id=node_id)
    reason = request.POST.get("reason", "").strip()[:200]
    try:  # the service checks scope `reset` first: a ScopeDenied is the 403
        revoked = identity.revoke_device(actor_for_request(request), device.node_id, reason)
    except identity.IdentityError as refused:
        why = "Give a reason: it goes into the certificate's revocation and the audit log." if refused.code == "reason_required" else refused.reason
        messages.error(request, why)
        return redirect("device-page", node_id=node_id)
    messages.success(request, f"Revoked {len(revoked)} certificate(s) of {node_id}: the device is thrown out now.")
    return redirect("device-page", node_id=node_id)
