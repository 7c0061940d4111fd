"""API error responses, and the audit events for refusals nobody recorded yet."""

from __future__ import annotations

import json
from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from audit.models import Decision
from audit.services import ScopeDenied
from hub.middleware import unavailable_response
from hub.permissions import audit_request, required_scope


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            out.extend(_flatten(value, f"{prefix}{key}: " if key != "non_field_errors" else prefix))
        return out
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def audited_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a deny event for 401/403 and for rejected writes (400/404/405/415).
    A service's ScopeDenied (already audited by the service) is a 403 naming the scope."""
    request = context.get("request")
    if request is not None:
        unavailable = unavailable_response(request, exc)  # the database or Redis is away: 503, nothing to audit with
        if unavailable is not None:
            refusal = Response(json.loads(unavailable.content), status=503, headers={"Retry-After": unavailable["Retry-After"]})
            refusal._has_been_logged = True  # type: ignore[attr-defined]  # logged once per outage (hub.outages)
            return refusal
    if isinstance(exc, ScopeDenied):
        if request is not None:
            request._meshhub_denied = True
        exc = exceptions.PermissionDenied(f"this endpoint needs scope '{exc.scope}'")
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ParseError):
        response.data = {"field": "body", "reason": str(exc.detail)}
    view = context.get("view")
    if response is None or request is None or view is None or getattr(request, "_meshhub_denied", False):
        return response
    mutating = request.method not in ("GET", "HEAD", "OPTIONS")
    if response.status_code in (401, 403) or (mutating and 400 <= response.status_code < 500):
        if isinstance(exc, exceptions.ParseError):
            reason = f"malformed request body: {exc.detail}"
        elif isinstance(exc, exceptions.APIException):
            reason = "; ".join(_flatten(exc.detail))
        else:
            reason = str(exc)
        audit_request(request, view, Decision.DENY, required_scope(request, view), reason[:1000])
    return response
