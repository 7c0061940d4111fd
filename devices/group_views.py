"""Operator pages for device groups: who is in a group, and one command to all of them.

Groups are created and edited in the admin or the API (scope admin); the page's group
command needs scope `command` and fans out through `services.send_to_group`, each member
getting its own command row (one refusal never blocks the others).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from devices import services
from devices.models import Capability, Group
from devices.views import COMMAND_ACTIONS, parse_form_value
from hub.actors import actor_for_request
from hub.pages import paginate, query_without_page


def group_list(request: HttpRequest) -> HttpResponse:
    groups = Group.objects.annotate(size=Count("members", distinct=True), online=Count("members", filter=Q(members__online=True), distinct=True))
    return render(request, "devices/group_list.html", {"groups": groups.order_by("name")})


def _group_context(request: HttpRequest, group: Group) -> dict[str, Any]:
    members = group.members.order_by("node_id").only("node_id", "name", "device_type", "status", "online", "last_seen", "reported")
    capabilities = Capability.objects.filter(device__groups=group).order_by("name").values_list("name", flat=True).distinct()
    return {
        "group": group,
        "page": paginate(request, members),
        "query": query_without_page(request),
        "capabilities": list(capabilities),
        "actions": COMMAND_ACTIONS,
        "form": {},
    }


def group_detail(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(Group, pk=pk)
    return render(request, "devices/group_detail.html", _group_context(request, group))


@require_POST
def group_command(request: HttpRequest, pk: int) -> HttpResponse:
    """Send one command to every member and show each member's outcome (accepted with its
    live status, or refused with the reason)."""
    group = get_object_or_404(Group, pk=pk)
    form = {k: request.POST.get(k, "") for k in ("action", "capability", "value")}
    # The service checks scope `command` first (a ScopeDenied is the 403, audited as group.command).
    outcomes = services.send_to_group(actor_for_request(request), group, form["action"], form["capability"], parse_form_value(form["value"]))
    context = {**_group_context(request, group), "form": form}
    if not outcomes:
        return render(
            request, "devices/group_detail.html", {**context, "error": "This group has no members: add devices to it in the admin first."}, status=400
        )
    accepted = sum(1 for o in outcomes if o.command is not None)
    status = 200 if accepted else 400
    return render(request, "devices/group_detail.html", {**context, "outcomes": outcomes, "accepted": accepted}, status=status)
