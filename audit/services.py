"""The only way into the audit log: `record()` for one event, `record_many()` for a batch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit import chain
from audit.models import ActorType, AuditChainHead, AuditEvent, Decision

logger = logging.getLogger("meshhub.audit")

# Called with the denied events of a batch after its transaction commits (the operator
# pages' live alerts subscribe here; audit imports no app above it).
DenyHook = Callable[[list[AuditEvent]], None]
deny_hooks: list[DenyHook] = []


def on_deny(hook: DenyHook) -> DenyHook:
    deny_hooks.append(hook)
    return hook


def _run_deny_hooks(denied: list[AuditEvent]) -> None:
    for hook in list(deny_hooks):
        try:
            hook(denied)
        except Exception:  # a subscriber's bug must not undo or block what was recorded
            logger.exception("deny hook %r failed", hook)


# TextChoices.values builds a new list per access; the hot path checks against these.
_DECISIONS = frozenset(Decision.values)
_ACTOR_TYPES = frozenset(ActorType.values)
_TRUSTED_WITHOUT_SCOPES = frozenset({ActorType.SYSTEM, ActorType.USER})


@dataclass(frozen=True)
class Actor:
    """Who asked: a device, a user, an API token, a rule or the hub itself, and what it may do.

    `scopes` are what the door that built the actor established: a token's scopes, the
    union of a user's roles, a device session's grant, a rule's. The services check them
    (`authorize`), so the API, pages, admin, commands and rules cannot disagree. `None`
    is the hub acting on its own authority (`Actor.system`: management commands run on the
    hub's machine, beat tasks) or a user whose door already decided (tests of a service's
    logic); every door builds its users with their scopes (`hub.actors`). A device, token
    or rule actor without stated scopes is allowed nothing: fail closed.
    """

    type: str
    id: str = ""
    scopes: frozenset[str] | None = field(default=None, compare=False)

    @classmethod
    def system(cls, name: str = "meshhub") -> Actor:
        return cls(ActorType.SYSTEM, name)

    def allows(self, scope: str) -> bool:
        if self.scopes is None:
            return self.type in _TRUSTED_WITHOUT_SCOPES
        return scope in self.scopes


class ScopeDenied(PermissionDenied):
    """A service refused an actor for a missing scope; already audited as a deny. Being
    Django's PermissionDenied, a page that lets it through answers 403 with no extra code;
    the API's exception handler answers 403 naming the scope."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(reason)
        self.scope = scope
        self.reason = reason


def authorize(actor: Actor, scope: str, action: str, *, target_type: str = "", target_id: object = "", details: dict[str, Any] | None = None) -> None:
    """The scope check every service runs itself: nothing when `actor` holds `scope`;
    otherwise a deny event (the service's action, scope, target, the actor) and ScopeDenied.
    Call it before the operation's transaction: a deny recorded inside one that then
    rolls back would be lost with it."""
    if actor.allows(scope):
        return
    reason = f"missing scope '{scope}'"
    record(actor, action, Decision.DENY, scope=scope, target_type=target_type, target_id=str(target_id)[:150], reason=reason, details=details)
    raise ScopeDenied(scope, reason)


@dataclass
class Entry:
    """One event waiting to be appended."""

    actor: Actor
    action: str
    decision: str
    scope: str = ""
    target_type: str = ""
    target_id: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.decision not in _DECISIONS:
            raise ValueError(f"decision must be one of {sorted(_DECISIONS)}, not {self.decision!r}")
        if self.actor.type not in _ACTOR_TYPES:
            raise ValueError(f"actor type must be one of {sorted(_ACTOR_TYPES)}, not {self.actor.type!r}")
        if not self.action:
            raise ValueError("an audit event needs an action")


def record(
    actor: Actor,
    action: str,
    decision: str,
    *,
    scope: str = "",
    target_type: str = "",
    target_id: object = "",
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain and return it."""
    entry = Entry(actor, action, decision, scope, target_type, str(target_id), reason, details or {})
    return record_many([entry])[0]


def record_many(entries: Iterable[Entry]) -> list[AuditEvent]:
    """Append a batch in one transaction: one lock, one INSERT, one head update.

    This is the hot-path API (gateway frames, bulk commands): the per-event cost is the
    hash, not a round trip. The caller's transaction, if any, owns the commit; a rolled
    back caller rolls back its audit events with it, so record denials outside of work
    that may roll back.
    """
    entries = list(entries)
    if not entries:
        return []
    # No savepoint when nested: if the insert fails, the caller's transaction is lost
    # anyway, and a savepoint costs two round trips on every command.
    with transaction.atomic(savepoint=False):
        head = _lock_head()
        now = timezone.now()
        rows = [
            {
                "ts": now,
                "actor_type": e.actor.type,
                "actor_id": chain.scrub(e.actor.id[:150]),
                "action": chain.scrub(e.action[:100]),
                "scope": chain.scrub(e.scope[:32]),
                "target_type": chain.scrub(e.target_type[:50]),
                "target_id": chain.scrub(e.target_id[:150]),
                "decision": e.decision,
                "reason": chain.scrub(e.reason),
                "details": chain.normalize_details(e.details),
            }
            for e in entries
        ]
        events = [AuditEvent(**row) for row in chain.iter_links(head.hash, head.seq + 1, rows)]
        AuditEvent.objects.bulk_create(events)
        head.seq = events[-1].seq
        head.hash = events[-1].hash
        head.save(update_fields=["seq", "hash"])
    denied = [event for event in events if event.decision == Decision.DENY]
    for event in denied:
        logger.info(
            "denied %s",
            event.action,
            extra={"actor": f"{event.actor_type}:{event.actor_id}", "target": f"{event.target_type}:{event.target_id}", "reason": event.reason},
        )
    if denied and deny_hooks:
        transaction.on_commit(lambda: _run_deny_hooks(denied))
    return events


def _lock_head() -> AuditChainHead:
    """Lock the head row, creating it race-free on the very first append (or after a flush)."""
    head = AuditChainHead.objects.select_for_update().filter(id=1).first()
    if head is None:
        AuditChainHead.objects.bulk_create([AuditChainHead(id=1)], ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(id=1)
    return head


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    broken: chain.ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify() -> VerifyResult:
    """Recompute the whole chain from the database (streamed, constant memory)."""
    fields = ["id", *chain.HASHED_FIELDS, "prev_hash", "hash"]
    events = AuditEvent.objects.order_by("seq").values(*fields).iterator(chunk_size=5000)
    head = AuditChainHead.objects.filter(id=1).values_list("seq", "hash").first()
    checked, broken = chain.verify_links(events, head)
    return VerifyResult(checked, broken)


# --- export -------------------------------------------------------------------------------

EXPORT_FIELDS = ("id", *chain.HASHED_FIELDS, "prev_hash", "hash")


def events_between(since: date | None = None, until: date | None = None) -> QuerySet[AuditEvent]:
    """Events of the UTC days since..until, both included: the days snapshots cover."""
    events = AuditEvent.objects.all()
    if since is not None:
        events = events.filter(ts__gte=datetime.combine(since, time.min, tzinfo=UTC))
    if until is not None and until < date.max:  # the last day there is has no day after it
        events = events.filter(ts__lt=datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC))
    return events


def jsonl_line(row: Mapping[str, Any]) -> str:
    """One event as a line of JSON: what the chain hashes plus id, prev_hash and hash, with
    `ts` written as the chain writes it, so a third party can recompute every link."""
    return chain.canonical_json({**row, "ts": chain.format_ts(row["ts"])}) + "\n"


def _export_rows(events: QuerySet[AuditEvent]) -> QuerySet[AuditEvent, dict[str, Any]]:
    return events.order_by("seq").values(*EXPORT_FIELDS)


def iter_jsonl(events: QuerySet[AuditEvent], chunk_size: int = 2000) -> Iterator[str]:
    """The events as JSONL in seq order, streamed: a million rows never sit in memory."""
    for row in _export_rows(events).iterator(chunk_size=chunk_size):
        yield jsonl_line(row)


async def aiter_jsonl(events: QuerySet[AuditEvent], chunk_size: int = 2000) -> AsyncIterator[str]:
    """The same for an ASGI response, which would otherwise read a sync iterator to the end first."""
    async for row in _export_rows(events).aiterator(chunk_size=chunk_size):
        yield jsonl_line(row)
