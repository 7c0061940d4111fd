"""Operator pages for the industrial bridge: every PLC with its connection health, and a
PLC's points with live values, quality and a write form for the writable ones.

A write is an ordinary command (`services.send_command`, scope `command`): the bridge's
worker claims it, writes, reads back and reports the outcome, which the page shows live.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from devices import services
from devices.views import parse_form_value
from hub.actors import actor_for_request
from hub.pages import paginate, query_without_page
from industrial.models import ModbusBridge


def bridge_list(request: HttpRequest) -> HttpResponse:
    from django.db.models import Count, Q

    bridges = (
        ModbusBridge.objects.select_related("device")
        .annotate(point_count=Count("points"), bad_points=Count("points", filter=~Q(points__quality="good")))
        .order_by("device__node_id")
    )
    return render(request, "industrial/bridge_list.html", {"page": paginate(request, bridges), "query": query_without_page(request)})


def _bridge_context(request: HttpRequest, bridge: ModbusBridge) -> dict[str, Any]:
    device = bridge.device
    points = bridge.points.order_by("capability")
    q = request.GET.get("q", "").strip()[:64]
    if q:
        points = points.filter(capability__icontains=q)
    return {
        "bridge": bridge,
        "device": device,
        "page": paginate(request, points, per_page=100),
        "query": query_without_page(request),
        "q": q,
        "reported": device.reported or {},
        "commands": device.commands.order_by("-created_at")[:10],
        "form": {},
    }


def bridge_detail(request: HttpRequest, node_id: str) -> HttpResponse:
    bridge = get_object_or_404(ModbusBridge.objects.select_related("device"), device__node_id=node_id)
    return render(request, "industrial/bridge_detail.html", _bridge_context(request, bridge))


@require_POST
def point_write(request: HttpRequest, node_id: str) -> HttpResponse:
    """Write one point: validated by send_command (writable, type, range) before anything
    reaches the PLC; a refusal is shown next to the form."""
    bridge = get_object_or_404(ModbusBridge.objects.select_related("device"), device__node_id=node_id)
    form = {"capability": request.POST.get("capability", ""), "value": request.POST.get("value", "")}
    try:  # the service checks scope `command` first: a ScopeDenied (audited as command.create) is the 403
        command = services.send_command(actor_for_request(request), node_id, "set", form["capability"], parse_form_value(form["value"]))
    except services.CommandRejected as rejected:
        context = {**_bridge_context(request, bridge), "form": form, "error": rejected}
        return render(request, "industrial/bridge_detail.html", context, status=400)
    messages.success(request, f"Write {form['capability']} = {form['value']} queued ({str(command.id)[:8]}…): the PLC's read-back confirms it below.")
    return redirect("industrial-bridge-page", node_id=node_id)
