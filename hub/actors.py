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
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return frozenset(token.scopes)
    return scopes_for_user(getattr(request, "user", None))


def actor_for_request(request: Any) -> Actor:
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return Actor(ActorType.TOKEN, f"{token.key}/{token.user.get_username()}")
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Actor(ActorType.USER, user.get_username())
    address = request.META.get("REMOTE_ADDR", "") if hasattr(request, "META") else ""
    return Actor(ActorType.USER, f"anonymous@{address}")
