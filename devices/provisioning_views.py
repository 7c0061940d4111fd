"""Operator pages for provisioning: enrollment codes (create, show once with a QR, watch
the device arrive, cancel) and certificates (list, revoke one with a reason).

Creating a code, cancelling it and revoking need scope `reset` (the operator role holds
it); the lists need it too for enrollments (they name who is about to join) and only
`read-status` for certificates, like the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from devices import identity
from devices.models import Certificate, CertificateStatus, Enrollment, EnrollmentStatus
from hub.actors import actor_for_request
from hub.pages import paginate, query_without_page, require_scope
from hub.scopes import Scope

TTL_CHOICES = [(15 * 60, "15 minutes"), (3600, "1 hour"), (24 * 3600, "1 day"), (7 * 24 * 3600, "7 days")]


def _enrollment_context(request: HttpRequest, form: dict[str, Any], error: str = "") -> dict[str, Any]:
    enrollments = Enrollment.objects.order_by("-created_at")
    status = request.GET.get("status", "")
    if status in EnrollmentStatus.values:
        enrollments = enrollments.filter(status=status)
    return {
        "page": paginate(
            request, enrollments.only("pk", "node_id", "device_type", "status", "failed_attempts", "expires_at", "created_by", "created_at", "used_at")
        ),
        "query": query_without_page(request),
        "statuses": EnrollmentStatus.choices,
        "status": status,
        "form": form,
        "error": error,
        "ttl_choices": TTL_CHOICES,
    }


def enrollment_page(request: HttpRequest) -> HttpResponse:
    """GET: the form and the codes handed out so far. POST: create a code and show it once.
    Both need scope `reset` (one check: the list names who is about to join)."""
    require_scope(request, Scope.RESET, "enrollment.view", "enrollment")
    if request.method != "POST":
        return render(request, "devices/enrollment.html", _enrollment_context(request, {"device_type": "generic", "ttl_s": str(TTL_CHOICES[0][0])}))
    form: dict[str, Any] = {
        "node_id": request.POST.get("node_id", "").strip(),
        "device_type": request.POST.get("device_type", "").strip() or "generic",
        "pin": request.POST.get("pin") == "on",
        "ttl_s": request.POST.get("ttl_s", ""),
    }
    try:
        ttl = int(form["ttl_s"])
    except ValueError:
        ttl = -1
    if ttl not in dict(TTL_CHOICES):
        return render(request, "devices/enrollment.html", _enrollment_context(request, form, "Choose how long the code stays valid."), status=400)
    try:
        ticket = identity.create_enrollment(actor_for_request(request), form["node_id"], device_type=form["device_type"], with_pin=form["pin"], ttl_s=ttl)
    except identity.IdentityError as refused:
        return render(request, "devices/enrollment.html", _enrollment_context(request, form, refused.reason), status=400)
    context = {"ticket": ticket.as_dict(), "expires_at": ticket.enrollment.expires_at, "qr_svg": ticket.qr_svg(), "agent_command": ticket.agent_command()}
    response = render(request, "devices/enrollment_ticket.html", context)
    response["Cache-Control"] = "no-store"  # the code and PIN are shown once; keep them out of caches and history
    return response


@require_POST
def enrollment_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    enrollment = get_object_or_404(Enrollment, pk=pk)
    if identity.cancel_enrollment(actor_for_request(request), enrollment):  # the service checks scope `reset` (403)
        messages.success(request, f"Cancelled the enrollment code for {enrollment.node_id}: it can no longer be used.")
    else:
        messages.error(request, f"The code for {enrollment.node_id} is {enrollment.get_status_display().lower()}, not open: nothing to cancel.")
    return redirect("enrollment-page")


def certificate_list(request: HttpRequest) -> HttpResponse:
    certificates = Certificate.objects.select_related("device", "ca").order_by("-issued_at")
    q = request.GET.get("q", "").strip()[:100]
    if q:
        certificates = certificates.filter(Q(device__node_id__icontains=q) | Q(serial__istartswith=q.lower()) | Q(fingerprint__icontains=q))
    status = request.GET.get("status", "")
    if status in CertificateStatus.values:
        certificates = certificates.filter(status=status)
    context = {
        "page": paginate(request, certificates.defer("pem", "ca__cert_pem", "ca__key_pem", "ca__crl_pem")),
        "query": query_without_page(request),
        "q": q,
        "status": status,
        "statuses": CertificateStatus.choices,
        "cas": identity.trusted_cas(),
        "expiring": len(identity.certificates_expiring()),
    }
    return render(request, "devices/certificate_list.html", context)


@require_POST
def certificate_revoke(request: HttpRequest, serial: str) -> HttpResponse:
    cert = get_object_or_404(Certificate.objects.select_related("device"), serial=serial)
    require_scope(request, Scope.RESET, "certificate.revoke", "device", cert.device.node_id)
    reason = request.POST.get("reason", "").strip()[:200]
    if not reason:
        messages.error(request, "Give a reason: it goes into the certificate's revocation and the audit log.")
        return redirect("certificates-page")
    try:
        identity.revoke_certificate(actor_for_request(request), cert, reason)
    except identity.IdentityError as refused:
        messages.error(request, refused.reason)
    else:
        messages.success(request, f"Revoked certificate {serial} of {cert.device.node_id}; the CRL is re-signed and a session on it is closed.")
    return redirect("certificates-page")
