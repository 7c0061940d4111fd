"""`Idempotency-Key` for the API's command endpoints (single, batch, group): a client that
retries after a timeout gets the first answer again instead of a second command.

The key row is inserted in the same transaction as the command(s) it answers for. A retry
that races the first request inserts the same (principal, key) and waits on the unique
index until the first transaction ends (PostgreSQL; SQLite's IMMEDIATE transactions queue
at BEGIN): then it reads the stored answer. Only a 2xx answer is kept: a refused request
executed nothing, so retrying it with the same key runs it again (as Stripe does)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from audit.models import Decision
from audit.services import record
from hub.actors import actor_for_request
from hub.models import ApiToken, IdempotencyKey
from hub.permissions import audit_request, audit_target, required_scope

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

HEADER_DESCRIPTION = (
    "Optional, up to 255 printable ASCII characters (a UUID is a good choice). The same key with the same body "
    "from the same token or user within 24 h answers with the first response (same status and body, header "
    "`Idempotent-Replayed: true`) and creates nothing; the same key with another body or endpoint is 409 "
    '`{"field": "Idempotency-Key", "reason"}`; a malformed key is 400. Only 2xx answers are remembered.'
)


class KeyRefused(Exception):
    """A malformed key (400) or a key already used for another request (409)."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason

    def response(self) -> Response:
        return Response({"field": HEADER, "reason": self.reason}, status=self.status_code)


def parse_key(raw: str) -> str:
    """The key a header carries: surrounding whitespace and the quotes of the IETF draft's
    structured-field string form (`"abc"`) are not part of it."""
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise KeyRefused(status.HTTP_400_BAD_REQUEST, f"{HEADER} must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise KeyRefused(status.HTTP_400_BAD_REQUEST, f"{HEADER} is {len(key)} characters long; at most {MAX_KEY_LENGTH} are allowed")
    for position, char in enumerate(key):
        if not " " <= char <= "~":
            raise KeyRefused(
                status.HTTP_400_BAD_REQUEST,
                f"{HEADER} has a non-printable character U+{ord(char):04X} at position {position}; only printable ASCII is allowed",
            )
    return key


def principal_of(request: Request) -> str:
    """Whose key space a request uses: its token's, else its signed-in user's."""
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return f"token:{token.pk}"
    return f"user:{request.user.pk}"


def fingerprint(method: str, path: str, body: Any) -> str:
    """The request as the key remembers it: the same JSON in another key order or spacing is
    the same request."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def respond(request: Request, view: Any, operation: Callable[[], Response], *, scope: str) -> Response:
    """Answer a command request once per key. Without the header, `operation()` as before.

    An actor without `scope` goes straight to `operation()`, whose service refuses and
    audits it as always (outside any transaction here, so the deny is not rolled back) and
    learns nothing about keys."""
    raw = request.headers.get(HEADER)
    if raw is None or not actor_for_request(request).allows(scope):
        return operation()
    try:
        key = parse_key(raw)
    except KeyRefused as refused:
        return _refuse(request, view, refused)
    endpoint = f"{request.method} {request.path}"[:300]
    digest = fingerprint(request.method or "", request.path, request.data)  # a malformed body raises its 400 here
    principal = principal_of(request)
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_S)
    with transaction.atomic():
        # An expired key is free again even before the housekeeping task prunes it.
        IdempotencyKey.objects.filter(principal=principal, key=key, created_at__lt=cutoff).delete()
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(principal=principal, key=key, endpoint=endpoint, fingerprint=digest)
        except IntegrityError:
            # Another request holds this key and has committed (we waited for it): answer from it.
            first = IdempotencyKey.objects.get(principal=principal, key=key)
        else:
            response = operation()
            if status.is_success(response.status_code):
                row.response_status = response.status_code
                row.response_body = json.loads(json.dumps(response.data, default=str))
                row.save(update_fields=["response_status", "response_body"])
            else:
                row.delete()  # nothing was executed: the same key may try again
            return response
    if first.fingerprint != digest:
        if first.endpoint != endpoint:
            reason = f"{HEADER} '{key}' was already used at {first.created_at.isoformat()} for {first.endpoint}; use a new key for a different request"
        else:
            reason = f"{HEADER} '{key}' was already used at {first.created_at.isoformat()} with a different body; use a new key for a different request"
        return _refuse(request, view, KeyRefused(status.HTTP_409_CONFLICT, reason))
    target_type, target_id = audit_target(request, view)
    record(
        actor_for_request(request),
        "api.idempotent_replay",
        Decision.ALLOW,
        scope=scope,
        target_type=target_type,
        target_id=target_id,
        details={"method": request.method, "path": request.path, "key": key, "first_at": first.created_at.isoformat(), "status": first.response_status},
    )
    return Response(first.response_body, status=first.response_status, headers={REPLAYED_HEADER: "true"})


def _refuse(request: Request, view: Any, refused: KeyRefused) -> Response:
    audit_request(request, view, Decision.DENY, required_scope(request, view), refused.reason)
    return refused.response()


def prune_expired() -> int:
    """Forget keys older than IDEMPOTENCY_KEY_TTL_S (beat runs it); returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_S)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
