"""What every operator page shares: the scope check that audits a refusal, and paging.

Pages decide by the same scopes as the API (`hub.scopes.ROLE_SCOPES`: a `viewer` reads,
an `operator` also commands, an `admin` does everything), re-checked on every action:
a page that showed a button is not authority.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from audit.models import Decision
from audit.services import record
from hub.actors import actor_for_request, request_scopes
from hub.scopes import Scope

PAGE_SIZE = 50


def scopes(request: HttpRequest) -> frozenset[str]:
    """The signed-in user's scopes, read once per request (hub.actors.request_scopes)."""
    return request_scopes(request)


def require_scope(request: HttpRequest, scope: str, action: str, target_type: str = "", target_id: str = "") -> None:
    """403 and a `deny` audit event unless the user holds `scope`."""
    if scope in scopes(request):
        return
    record(
        actor_for_request(request),
        f"page.{action}",
        Decision.DENY,
        scope=scope,
        target_type=target_type,
        target_id=target_id,
        reason=f"missing scope '{scope}'",
        details={"path": request.path[:200], "method": request.method},
    )
    raise PermissionDenied(f"this action needs scope '{scope}'")


def operator_page(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Every operator page: a session (else /login/), then scope `read-status` before the
    view runs, so a user who holds no role sees nothing of the fleet (a 403 naming the
    missing scope and a `page.view` deny in the audit log), as the API and /ws/live/
    refuse them. Actions re-check their own scope inside the view."""

    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        require_scope(request, Scope.READ_STATUS, "view", "page", request.path[:150])
        return view(request, *args, **kwargs)

    return login_required(checked)


def paginate(request: HttpRequest, queryset: QuerySet[Any], per_page: int = PAGE_SIZE) -> Page:  # type: ignore[type-arg]
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


def query_without_page(request: HttpRequest) -> str:
    """The current filters, for page links."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
