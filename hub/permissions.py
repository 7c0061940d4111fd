"""Scope checks for the REST API; every deny and every allowed mutation is audited."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from audit.models import Decision
from audit.services import record
from hub.actors import actor_for_request, request_scopes
from hub.scopes import Scope


def required_scope(request: Request, view: Any) -> str:
    """A view names its scopes in `scope_map` (by action or method); reads default to
    read-status and writes to admin, so a forgotten mapping fails closed."""
    scope_map: dict[str, str] = getattr(view, "scope_map", {})
    action = getattr(view, "action", None)
    if action and action in scope_map:
        return scope_map[action]
    if request.method in scope_map:
        return scope_map[request.method]
    return Scope.READ_STATUS if request.method in SAFE_METHODS else Scope.ADMIN


def audit_action(view: Any) -> str:
    basename = getattr(view, "basename", None) or view.__class__.__name__.removesuffix("View").removesuffix("ViewSet").lower()
    action = getattr(view, "action", None)
    return f"api.{basename}.{action}" if action else f"api.{basename}"


def audit_target(request: Request, view: Any) -> tuple[str, str]:
    kwargs = getattr(view, "kwargs", {}) or {}
    target_type = getattr(view, "audit_target_type", "endpoint")
    for key in ("node_id", "pk", "id"):
        if key in kwargs:
            return target_type, str(kwargs[key])
    return "endpoint", f"{request.method} {request.path}"[:150]


def audit_request(request: Request, view: Any, decision: str, scope: str, reason: str = "") -> None:
    target_type, target_id = audit_target(request, view)
    record(
        actor_for_request(request),
        audit_action(view),
        decision,
        scope=scope,
        target_type=target_type,
        target_id=target_id,
        reason=reason,
        details={"method": request.method, "path": request.path},
    )
    if decision == Decision.DENY:
        request._meshhub_denied = True  # type: ignore[attr-defined]


def decided_by_service(request: Request, view: Any) -> bool:
    """Actions whose service checks the scope itself (against `actor_for_request`, which
    carries the request's scopes) and audits its decision: the edge only authenticates,
    and a refusal (ScopeDenied) becomes a 403 in hub.api_errors. The API, the pages, the
    admin and rules then share one decision and one audit shape."""
    return request.method not in SAFE_METHODS and getattr(view, "action", None) in getattr(view, "service_decides", ())


class HasScope(BasePermission):
    message = "permission denied"

    def has_permission(self, request: Request, view: Any) -> bool:
        scope = required_scope(request, view)
        if not (request.user and request.user.is_authenticated):
            audit_request(request, view, Decision.DENY, scope, "authentication required")
            return False
        if decided_by_service(request, view):
            return True
        if scope not in request_scopes(request):
            self.message = f"this endpoint needs scope '{scope}'"
            audit_request(request, view, Decision.DENY, scope, f"missing scope '{scope}'")
            return False
        if request.method not in SAFE_METHODS:
            audit_request(request, view, Decision.ALLOW, scope)
        return True
