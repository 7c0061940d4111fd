"""`Authorization: Token mh_<key>_<secret>` for scripts; every refusal is audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from audit.models import ActorType, Decision
from audit.services import Actor, record
from hub.models import ApiToken

LAST_USED_GRANULARITY = timedelta(seconds=60)


def _deny(request: Request, actor_id: str, reason: str) -> AuthenticationFailed:
    record(
        Actor(ActorType.TOKEN, actor_id),
        "api.authenticate",
        Decision.DENY,
        target_type="endpoint",
        target_id=f"{request.method} {request.path}"[:150],
        reason=reason,
        details={"remote_addr": request.META.get("REMOTE_ADDR", "")},
    )
    request._meshhub_denied = True  # type: ignore[attr-defined]
    return AuthenticationFailed(reason)


class TokenRefused(Exception):
    def __init__(self, actor_id: str, reason: str) -> None:
        super().__init__(reason)
        self.actor_id, self.reason = actor_id, reason


def check_token(plaintext: str) -> ApiToken:
    """The live token `plaintext` names, or TokenRefused (not audited here: each door
    records its own deny with where it was asked). Used by the API and the MCP endpoint."""
    split = ApiToken.split(plaintext)
    if split is None:
        raise TokenRefused("unknown", "malformed token: expected mh_<key>_<secret>")
    key, secret = split
    token = ApiToken.objects.select_related("user").filter(key=key).first()
    if token is None or not token.matches(secret):
        # Same answer for an unknown key and a wrong secret: no oracle for valid keys.
        raise TokenRefused(key[:16], "invalid token")
    if token.revoked:
        raise TokenRefused(key, "token revoked")
    if token.is_expired():
        raise TokenRefused(key, "token expired")
    if not token.user.is_active:
        raise TokenRefused(key, "token owner is inactive")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise _deny(request, "unknown", "malformed Authorization header: expected 'Token <token>'")
        try:
            plaintext = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise _deny(request, "unknown", "malformed token: not ASCII") from None
        try:
            token = check_token(plaintext)
        except TokenRefused as refused:
            raise _deny(request, refused.actor_id, refused.reason) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
