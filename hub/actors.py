"""Who is asking: the audit actor and the scopes of a request, whatever authenticated it."""

from __future__ import annotations

from typing import Any

from audit.models import ActorType
from audit.services import Actor
from hub.models import ApiToken
from hub.scopes import ALL_SCOPES, ROLE_SCOPES


def scopes_for_user(user: Any) -> frozenset[str]:
    """A session user's scopes: everything for superusers, else the union of their roles."""
    if not user or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return ALL_SCOPES
    scopes: set[str] = set()
    for name in user.groups.values_list("name", flat=True):
        scopes |= ROLE_SCOPES.get(name, frozenset())
    return frozenset(scopes)


def request_scopes(request: Any) -> frozenset[str]:
    """A token's scopes, else the signed-in user's; read once per request (the edge's
    check, the page's buttons and the service's check would each query the user's groups)."""
    cached: frozenset[str] | None = getattr(request, "_meshhub_scopes", None)
    if cached is not None:
        return cached
    token = getattr(request, "auth", None)
    found = frozenset(token.scopes) if isinstance(token, ApiToken) else scopes_for_user(getattr(request, "user", None))
    try:
        request._meshhub_scopes = found
    except AttributeError:  # an object that takes no attributes: no cache, same answer
        pass
    return found


def actor_for_request(request: Any) -> Actor:
    """The audit actor of an API or page request, carrying the scopes the request holds."""
    token = getattr(request, "auth", None)
    scopes = request_scopes(request)
    if isinstance(token, ApiToken):
        return Actor(ActorType.TOKEN, f"{token.key}/{token.user.get_username()}", scopes)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Actor(ActorType.USER, user.get_username(), scopes)
    address = request.META.get("REMOTE_ADDR", "") if hasattr(request, "META") else ""
    return Actor(ActorType.USER, f"anonymous@{address}", frozenset())


def actor_for_user(user: Any) -> Actor:
    """A signed-in user outside a request's auth (the admin): their roles' scopes."""
    return Actor(ActorType.USER, user.get_username(), scopes_for_user(user))
