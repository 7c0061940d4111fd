"""The audit page: filters as the API has them, and the chain's state (first broken entry)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.dateparse import parse_date

from audit import services
from audit.models import AuditEvent, Decision
from hub.pages import paginate, query_without_page, require_scope
from hub.scopes import Scope

AUTO_VERIFY_MAX = 50_000


def audit_list(request: HttpRequest) -> HttpResponse:
    require_scope(request, Scope.ADMIN, "audit.view", "audit")
    events = AuditEvent.objects.order_by("-seq")
    filters = {k: request.GET.get(k, "").strip()[:100] for k in ("actor", "action", "decision", "scope", "since", "until")}
    if filters["actor"]:
        events = events.filter(actor_id__icontains=filters["actor"])
    if filters["action"]:
        events = events.filter(action__startswith=filters["action"])
    if filters["decision"] in Decision.values:
        events = events.filter(decision=filters["decision"])
    if filters["scope"]:
        events = events.filter(scope=filters["scope"])
    for key, lookup in (("since", "ts__date__gte"), ("until", "ts__date__lte")):
        day = parse_date(filters[key]) if filters[key] else None
        if day is not None:
            events = events.filter(**{lookup: day})
    # Verifying walks the whole chain: automatic while it is small, on request beyond.
    total = AuditEvent.objects.count()
    chain = services.verify() if request.GET.get("verify") == "1" or total <= AUTO_VERIFY_MAX else None
    broken = None
    if chain is not None and chain.broken is not None and chain.broken.event_id is not None:
        broken = AuditEvent.objects.filter(pk=chain.broken.event_id).first()
    context = {
        "page": paginate(request, events),
        "query": query_without_page(request),
        "filters": filters,
        "decisions": Decision.choices,
        "chain": chain,
        "broken": broken,
        "total": total,
    }
    return render(request, "audit/audit_list.html", context)
