"""The audit pages: the log with its filters and the chain's state (first broken entry), the
JSONL export, and the signed daily snapshots with the public key that checks them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from audit import services, snapshots
from audit.models import AuditEvent, AuditSnapshot, Decision
from hub.actors import actor_for_request
from hub.pages import paginate, query_without_page, require_scope
from hub.scopes import Scope

AUTO_VERIFY_MAX = 50_000
FILTERS = ("actor", "action", "decision", "scope", "since", "until")


class BadFilter(ValueError):
    """A filter that cannot be applied; its text says which and why."""


def utc_day(filters: dict[str, str], key: str) -> date | None:
    text = filters[key]
    if not text:
        return None
    day = snapshots.parse_day(text)
    if day is None:
        raise BadFilter(f"{key}: {text!r} is not a date (YYYY-MM-DD)")
    return day


def read_filters(request: HttpRequest) -> dict[str, str]:
    return {k: request.GET.get(k, "").strip()[:100] for k in FILTERS}


def filtered_events(filters: dict[str, str]) -> QuerySet[AuditEvent]:
    """The page's filters, shared by the list and its export. The dates are UTC days, as
    the signed snapshots and `manage.py audit export` count them, so an export of one day
    is exactly what that day's snapshot covers whatever MESHHUB_TIME_ZONE says.
    Raises BadFilter for a date that is none."""
    events = services.events_between(utc_day(filters, "since"), utc_day(filters, "until"))
    if filters["actor"]:
        events = events.filter(actor_id__icontains=filters["actor"])
    if filters["action"]:
        events = events.filter(action__startswith=filters["action"])
    if filters["decision"] in Decision.values:
        events = events.filter(decision=filters["decision"])
    if filters["scope"]:
        events = events.filter(scope=filters["scope"])
    return events


def audit_list(request: HttpRequest) -> HttpResponse:
    require_scope(request, Scope.ADMIN, "audit.view", "audit")
    filters = read_filters(request)
    try:
        events, error = filtered_events(filters), ""
    except BadFilter as bad:
        events, error = AuditEvent.objects.none(), str(bad)
    # Verifying walks the whole chain: automatic while it is small, on request beyond.
    total = AuditEvent.objects.count()
    chain = services.verify() if request.GET.get("verify") == "1" or total <= AUTO_VERIFY_MAX else None
    broken = None
    if chain is not None and chain.broken is not None and chain.broken.event_id is not None:
        broken = AuditEvent.objects.filter(pk=chain.broken.event_id).first()
    context = {
        "page": paginate(request, events.order_by("-seq")),
        "query": query_without_page(request),
        "filters": filters,
        "decisions": Decision.choices,
        "chain": chain,
        "broken": broken,
        "total": total,
        "error": error,
    }
    return render(request, "audit/audit_list.html", context, status=400 if error else 200)


@require_GET
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The events the page's filters select, as JSONL in seq order (a streamed download)."""
    require_scope(request, Scope.ADMIN, "audit.export", "audit")
    filters = read_filters(request)
    try:
        events = filtered_events(filters)
    except BadFilter as bad:
        return HttpResponseBadRequest(str(bad), content_type="text/plain; charset=utf-8")
    # Who took a copy of the log is itself worth a line in it.
    services.record(
        actor_for_request(request), "audit.export", Decision.ALLOW, scope=Scope.ADMIN, target_type="audit", details={k: v for k, v in filters.items() if v}
    )
    lines: Any = services.aiter_jsonl(events) if isinstance(request, ASGIRequest) else services.iter_jsonl(events)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="meshhub-audit-{timezone.now():%Y%m%dT%H%M%SZ}.jsonl"'
    return response


@dataclass(frozen=True)
class SnapshotRow:
    snapshot: AuditSnapshot
    checked: bool
    problem: str | None
    current_key: bool


def snapshot_list(request: HttpRequest) -> HttpResponse:
    require_scope(request, Scope.ADMIN, "audit.snapshots", "audit")
    page = paginate(request, AuditSnapshot.objects.order_by("-date"))
    total = AuditEvent.objects.count()
    # Checking a snapshot re-hashes its day; like the chain, automatic while the log is small.
    checking = request.GET.get("verify") == "1" or total <= AUTO_VERIFY_MAX
    current_key = snapshots.current_public_key_b64()
    rows = [SnapshotRow(snap, checking, snapshots.verify_snapshot(snap) if checking else None, snap.public_key == current_key) for snap in page.object_list]
    missing = snapshots.missing_days()
    context = {
        "page": page,
        "rows": rows,
        "query": query_without_page(request),
        "checking": checking,
        "missing": missing,
        "current_key": current_key,
        "total": total,
    }
    return render(request, "audit/snapshot_list.html", context)


@require_GET
def snapshot_detail(request: HttpRequest, day: str) -> JsonResponse:
    """One snapshot as a verifier needs it: the exact signed text, the signature and the key."""
    require_scope(request, Scope.ADMIN, "audit.snapshot", "audit_snapshot", day[:20])
    parsed = snapshots.parse_day(day)
    if parsed is None:
        raise Http404("not a date")
    snap = get_object_or_404(AuditSnapshot, date=parsed)
    try:
        pem: str | None = snapshots.public_key_pem(snap.public_key)
    except ValueError:  # a mangled row: the verifier will say so, the download still works
        pem = None
    document = {
        "date": snap.date.isoformat(),
        "algorithm": "Ed25519",
        "payload": snap.payload,
        "signature": snap.signature,
        "public_key": snap.public_key,
        "public_key_pem": pem,
    }
    response = JsonResponse(document, json_dumps_params={"indent": 2, "ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="meshhub-audit-snapshot-{snap.date.isoformat()}.json"'
    return response


@require_GET
def signing_key_pem(request: HttpRequest) -> HttpResponse:
    """The hub signing public key (SubjectPublicKeyInfo PEM) that signs new snapshots."""
    require_scope(request, Scope.ADMIN, "audit.signing_key", "audit")
    response = HttpResponse(snapshots.public_key_pem(snapshots.current_public_key_b64()), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'attachment; filename="meshhub-hub-signing-key.pem"'
    return response
