"""The command outbox as the gateway sees it: what to send, and what the device said."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from devices import events
from devices.models import RESET_KINDS, Certificate, CertificateStatus, Command, CommandStatus

MAX_IN_FLIGHT = 20


def pending_for(node_id: str, exclude: set[str]) -> list[dict[str, Any]]:
    """Open, unexpired commands not yet handed to this session, oldest first."""
    now = timezone.now()
    rows = (
        Command.objects.filter(device__node_id=node_id, status=CommandStatus.PENDING, expires_at__gt=now)
        .exclude(id__in=list(exclude))
        .order_by("created_at")
        .values("id", "action", "capability", "value", "scope", "expires_at")[:MAX_IN_FLIGHT]
    )
    return [
        {
            "id": str(row["id"]),
            "body": {"action": row["action"], "capability": row["capability"], "value": row["value"], "scope": row["scope"]},
            "ttl_ms": max(1, int((row["expires_at"] - now).total_seconds() * 1000)),
        }
        for row in rows
    ]


def nodes_with_pending(node_ids: list[str]) -> list[str]:
    """Which of these connected nodes have something waiting: the gateway's 1 s sweep."""
    if not node_ids:
        return []
    rows = Command.objects.filter(device__node_id__in=node_ids, status=CommandStatus.PENDING, expires_at__gt=timezone.now())
    return list(rows.values_list("device__node_id", flat=True).distinct())


def _own(node_id: str, command_id: Any) -> Command | None:
    if not isinstance(command_id, str):
        return None
    try:
        return Command.objects.filter(id=command_id, device__node_id=node_id).first()
    except ValidationError:  # not a UUID: no such command
        return None


class AnswerRefused(Exception):
    """A device's `ack` or `result` the outbox does not take: `code` and `reason` go back
    to the device in an `error` frame and into the audit log."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def mark_delivered(node_id: str, command_id: Any) -> None:
    """`ack`: pending → delivered, once; raises AnswerRefused otherwise (unknown command, or
    a second ack of a command already acknowledged or completed)."""
    command = _own(node_id, command_id)
    if command is None:
        raise AnswerRefused("bad_ack", f"no command {command_id!r} for this device")
    # Claimed with a conditional update: of two acks racing, exactly one moves the row.
    if Command.objects.filter(pk=command.pk, status=CommandStatus.PENDING).update(status=CommandStatus.DELIVERED, delivered_at=timezone.now()):
        return
    status = Command.objects.filter(pk=command.pk).values_list("status", flat=True).first()
    if status == CommandStatus.DELIVERED:
        raise AnswerRefused("duplicate_ack", f"command {command.pk} was already acknowledged")
    if status in (CommandStatus.SUCCEEDED, CommandStatus.FAILED):
        raise AnswerRefused("duplicate_ack", f"command {command.pk} already completed ({status}); ack ignored")
    raise AnswerRefused("bad_ack", f"command {command.pk} is {status}; it takes no ack")


def record_result(node_id: str, command_id: Any, outcome: Any, value: Any, reason: Any) -> None:
    """`result`: delivered/pending → succeeded or failed, once; raises AnswerRefused otherwise.
    A second result never changes the stored one."""
    if outcome not in ("ok", "error"):
        raise AnswerRefused("bad_result", "result status must be 'ok' or 'error'")
    command = _own(node_id, command_id)
    if command is None:
        raise AnswerRefused("bad_result", f"no command {command_id!r} for this device")
    status = CommandStatus.SUCCEEDED if outcome == "ok" else CommandStatus.FAILED
    result = {"value": value, "reason": str(reason)[:500] if reason else ""}
    now = timezone.now()
    with transaction.atomic():
        updated = Command.objects.filter(pk=command.pk, status__in=[CommandStatus.PENDING, CommandStatus.DELIVERED]).update(
            status=status, result=result, completed_at=now, delivered_at=command.delivered_at or now
        )
        if updated:
            transaction.on_commit(lambda: events.command_finished(str(command.pk), status, result))
            return
        stored = Command.objects.filter(pk=command.pk).values_list("status", flat=True).first()
    if stored in (CommandStatus.SUCCEEDED, CommandStatus.FAILED):
        raise AnswerRefused("duplicate_result", f"command {command.pk} already has a result ({stored}); the stored result is kept")
    # Expired or rejected before the device answered: kept as it was (as before), not refused.


def inactive_serials(serials: list[str]) -> dict[str, str]:
    """Of these session certificates, the ones revoked, superseded or expired since, each
    with the reset it was revoked for (`provision.reset`, `factory_reset`) or "": only a
    reset kind, which only the reset services set, has the gateway deliver the signed reset
    frame before it closes the session. The free-text reason never decides it."""
    if not serials:
        return {}
    found = {
        serial: (status, kind) for serial, status, kind in Certificate.objects.filter(serial__in=serials).values_list("serial", "status", "revocation_kind")
    }
    inactive: dict[str, str] = {}
    for serial in serials:
        status, kind = found.get(serial, ("", ""))
        if status != CertificateStatus.ACTIVE:
            inactive[serial] = kind if status == CertificateStatus.REVOKED and kind in RESET_KINDS else ""
    return inactive
