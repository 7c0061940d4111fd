"""Operations on the registry. `send_command()` is the one door every command goes through."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, authorize, record
from devices import events
from devices.guards import CommandRequest, guards
from devices.models import (
    OPEN_COMMAND_STATUSES,
    Capability,
    CapabilityKind,
    Command,
    CommandAction,
    CommandStatus,
    Device,
    DeviceStatus,
    Group,
    ValueType,
)
from devices.values import ValueSpec, check_value
from hub import messages, outages
from hub.scopes import Scope

logger = logging.getLogger("meshhub.devices")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class CommandRejected(Exception):
    """A command failed one of the validation levels; `reason` is safe to show the caller."""

    LEVELS = {0: "ttl", 1: "action", 2: "device", 3: "provisioned", 4: "capability", 5: "kind", 6: "value", 7: "interlock"}
    INTERLOCK = 7  # a command guard an app registered (devices.guards) refused

    def __init__(self, level: int, field: str, reason: str, *, guard: str = "") -> None:
        super().__init__(reason)
        self.level = level
        self.field = field
        self.reason = reason
        self.guard = guard

    @property
    def level_name(self) -> str:
        return self.LEVELS[self.level]

    def audit_details(self) -> dict[str, Any]:
        """What a deny event records of the refusal: its level, and the guard at interlock."""
        return {"level": self.level_name, "guard": self.guard} if self.guard else {"level": self.level_name}

    def as_dict(self) -> dict[str, Any]:
        answer = {"field": self.field, "reason": self.reason, "level": self.level_name}
        if self.guard:
            answer["guard"] = self.guard
        return answer


def actor_label(actor: Actor) -> str:
    return f"{actor.type}:{actor.id}"


def capability_spec(cap: Capability) -> ValueSpec:
    return ValueSpec(cap.name, cap.value_type, cap.min_value, cap.max_value, tuple(cap.enum_values or ()))


def check_action_fits(action: str, cap: Capability) -> None:
    """Level 5: may this action be applied to this kind of capability at all?"""
    if action == CommandAction.GET:
        return
    if cap.kind == CapabilityKind.SENSOR:
        raise CommandRejected(5, "action", f"cannot {action} sensor capability '{cap.name}': sensors are read-only")
    if not cap.writable:
        raise CommandRejected(5, "action", f"cannot {action} capability '{cap.name}': it is not writable")
    if action == CommandAction.TOGGLE and cap.value_type != ValueType.BOOL:
        raise CommandRejected(5, "action", f"cannot toggle capability '{cap.name}': only boolean capabilities toggle (it is {cap.value_type})")
    if action == CommandAction.EXECUTE and cap.kind != CapabilityKind.ACTUATOR:
        raise CommandRejected(5, "action", f"cannot execute capability '{cap.name}': only actuators execute (it is a {cap.kind})")


def check_command_value(action: str, cap: Capability, value: Any) -> Any:
    """Level 6: does the value fit? Returns the value to store (None where none applies)."""
    if action in (CommandAction.GET, CommandAction.TOGGLE):
        if value is not MISSING and value is not None:
            raise CommandRejected(6, "value", f"{action} takes no value, got {value!r}")
        return None
    if value is MISSING:
        if action == CommandAction.EXECUTE:
            return None
        raise CommandRejected(6, "value", f"set needs a value for capability '{cap.name}'")
    if action == CommandAction.EXECUTE and value is None:
        return None
    reason = check_value(capability_spec(cap), value)
    if reason:
        raise CommandRejected(6, "value", reason)
    return value


def resolve_ttl(ttl_s: Any) -> int:
    if ttl_s is None or ttl_s is MISSING:
        return int(settings.COMMAND_DEFAULT_TTL_S)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int):
        raise CommandRejected(0, "ttl_s", f"ttl_s must be a whole number of seconds, got {ttl_s!r}")
    if ttl_s <= 0:
        raise CommandRejected(0, "ttl_s", f"ttl_s {ttl_s} is already expired: it must be at least 1 second")
    if ttl_s > settings.COMMAND_MAX_TTL_S:
        raise CommandRejected(0, "ttl_s", f"ttl_s {ttl_s} above the maximum of {settings.COMMAND_MAX_TTL_S} seconds")
    return ttl_s


def validate_command(
    node_id: Any, action: Any, capability: Any, value: Any, ttl_s: Any = None, *, actor: Actor | None = None, scope: str = "command"
) -> tuple[Device, Capability, Any, int]:
    """Run the six levels in order, then the registered guards (interlock), and return
    what the command row needs."""
    ttl = resolve_ttl(ttl_s)
    if not isinstance(action, str) or action not in CommandAction.values:
        raise CommandRejected(1, "action", f"unknown action {action!r}; expected one of {', '.join(CommandAction.values)}")
    if not isinstance(node_id, str) or not node_id or "\x00" in node_id:
        raise CommandRejected(2, "node_id", f"node_id must be a non-empty string without NUL characters, got {node_id!r}")
    device = Device.objects.filter(node_id=node_id).first()
    if device is None:
        raise CommandRejected(2, "node_id", f"no device with node_id '{node_id}'")
    if device.status != DeviceStatus.PROVISIONED:
        raise CommandRejected(3, "node_id", f"device '{node_id}' is {device.status}: only provisioned devices take commands")
    if not isinstance(capability, str) or not capability or "\x00" in capability:
        raise CommandRejected(4, "capability", f"capability must be a non-empty string without NUL characters, got {capability!r}")
    cap = device.capabilities.filter(name=capability).first()
    if cap is None:
        known = ", ".join(device.capabilities.values_list("name", flat=True)) or "none"
        raise CommandRejected(4, "capability", f"device '{node_id}' has no capability '{capability}' (it has: {known})")
    check_action_fits(action, cap)
    stored_value = check_command_value(action, cap, value)
    objection = guards.first_refusal(CommandRequest(actor, device, cap, action, stored_value, scope))
    if objection is not None:
        name, refusal = objection
        raise CommandRejected(CommandRejected.INTERLOCK, refusal.field, refusal.reason, guard=name)
    return device, cap, stored_value, ttl


def nudge_device(node_id: str, command_id: str) -> None:
    """Tell the gateway holding `node_id` that a command waits. Best effort by design:
    the gateway also sweeps pending rows every second, so a lost nudge costs latency only."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(messages.node_group(node_id), messages.command_pending(command_id))
    except Exception as exc:  # the outbox row is committed; the sweep will deliver it
        outages.report_failure(exc, f"nudge of node {node_id} about command {command_id}")  # one line per outage
    else:
        outages.report_success(outages.CHANNEL_LAYER)


def send_command(
    actor: Actor,
    node_id: Any,
    action: Any,
    capability: Any,
    value: Any = MISSING,
    *,
    ttl_s: Any = None,
    scope: str = "command",
) -> Command:
    """Validate, write the outbox row, audit, and nudge the gateway after commit.

    Raises ScopeDenied when the actor lacks `scope`, CommandRejected when a level fails
    (both already audited as a deny); nothing but the audit event is written then.
    """
    asked = {"action": str(action)[:32], "capability": str(capability)[:64]}
    authorize(actor, scope, "command.create", target_type="device", target_id=str(node_id)[:150], details=asked)
    try:
        device, cap, stored_value, ttl = validate_command(node_id, action, capability, value, ttl_s, actor=actor, scope=scope)
    except CommandRejected as rejected:
        details = {**rejected.audit_details(), "field": rejected.field, **asked}
        record(
            actor,
            "command.create",
            Decision.DENY,
            scope=scope,
            target_type="device",
            target_id=str(node_id)[:150],
            reason=rejected.reason,
            details=details,
        )
        raise
    now = timezone.now()
    # One transaction: the command row and its allow event commit together or not at all.
    with transaction.atomic():
        command = Command.objects.create(
            device=device,
            action=action,
            capability=cap.name,
            value=stored_value,
            scope=scope,
            requested_by=actor_label(actor),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        record(
            actor,
            "command.create",
            Decision.ALLOW,
            scope=scope,
            target_type="device",
            target_id=device.node_id,
            details={"command_id": str(command.id), "action": action, "capability": cap.name, "value": stored_value, "ttl_s": ttl},
        )
        transaction.on_commit(lambda: nudge_device(device.node_id, str(command.id)))
        transaction.on_commit(lambda: events.command_created(str(command.id), device.node_id, device.device_type))
    return command


@dataclass(frozen=True)
class CommandOutcome:
    """One member's result in a batch or group fan-out."""

    node_id: str
    command: Command | None = None
    rejected: CommandRejected | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.command is not None:
            return {"node_id": self.node_id, "ok": True, "id": str(self.command.id), "status": self.command.status}
        assert self.rejected is not None
        return {"node_id": self.node_id, "ok": False, **self.rejected.as_dict()}


def send_many(actor: Actor, items: list[dict[str, Any]], *, scope: str = "command") -> list[CommandOutcome]:
    """Each item is its own command: one bad member never blocks the others. The scope is
    the batch's: an actor without it is refused once (ScopeDenied), not per member."""
    authorize(actor, scope, "command.batch", target_type="batch", target_id=f"{len(items)} commands")
    outcomes = []
    for item in items:
        node_id = item.get("node_id")
        try:
            command = send_command(actor, node_id, item.get("action"), item.get("capability"), item.get("value", MISSING), ttl_s=item.get("ttl_s"), scope=scope)
            outcomes.append(CommandOutcome(str(node_id), command=command))
        except CommandRejected as rejected:
            outcomes.append(CommandOutcome(str(node_id), rejected=rejected))
    return outcomes


def send_to_group(actor: Actor, group: Group, action: Any, capability: Any, value: Any = MISSING, *, ttl_s: Any = None) -> list[CommandOutcome]:
    authorize(actor, Scope.COMMAND, "group.command", target_type="group", target_id=group.pk, details={"group": group.name})
    members = list(group.members.order_by("node_id").values_list("node_id", flat=True))
    items = [{"node_id": node_id, "action": action, "capability": capability, "value": value, "ttl_s": ttl_s} for node_id in members]
    return send_many(actor, items)


class DesiredRejected(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def set_desired(actor: Actor, node_id: str, changes: Any, *, ttl_s: Any = None) -> tuple[Device, list[Command]]:
    """Merge `changes` into desired state (null clears a key) and command the delta.

    Every change is validated as a `set` before anything is written; one bad key
    rejects the whole request, so desired state never holds a value no command could carry.
    """
    authorize(actor, Scope.COMMAND, "device.desired", target_type="device", target_id=str(node_id)[:150])
    errors: dict[str, str] = {}
    validated: dict[str, Any] = {}
    if not isinstance(changes, dict) or not changes:
        errors["desired"] = "desired must be a non-empty object of capability: value"
    else:
        for name, value in changes.items():
            if value is None:
                validated[name] = None
                continue
            try:
                validate_command(node_id, CommandAction.SET, name, value, ttl_s, actor=actor)
                validated[name] = value
            except CommandRejected as rejected:
                if rejected.level <= 3:
                    errors[rejected.field] = rejected.reason
                    break
                errors[name] = rejected.reason
    if errors:
        record(
            actor,
            "device.desired",
            Decision.DENY,
            scope="command",
            target_type="device",
            target_id=str(node_id)[:150],
            reason="; ".join(errors.values()),
            details={"errors": errors},
        )
        raise DesiredRejected(errors)
    try:
        return _apply_desired(actor, node_id, validated, ttl_s)
    except CommandRejected as rejected:
        # Something changed since the check (a guard's device began an update, the device
        # was reset): the transaction rolled back with the deny send_command recorded in
        # it, so the refusal is recorded here, outside, and answered as a 400.
        errors = {rejected.field: rejected.reason}
        details = {"errors": errors, **rejected.audit_details()}
        record(
            actor, "device.desired", Decision.DENY, scope="command", target_type="device", target_id=str(node_id)[:150], reason=rejected.reason, details=details
        )
        raise DesiredRejected(errors) from None


def _apply_desired(actor: Actor, node_id: str, validated: dict[str, Any], ttl_s: Any) -> tuple[Device, list[Command]]:
    commands: list[Command] = []
    with transaction.atomic():
        device = Device.objects.select_for_update().get(node_id=node_id)
        desired = dict(device.desired)
        for name, value in validated.items():
            if value is None:
                desired.pop(name, None)
            else:
                desired[name] = value
        device.desired = desired
        device.save(update_fields=["desired", "updated_at"])
        record(actor, "device.desired", Decision.ALLOW, scope="command", target_type="device", target_id=node_id, details={"changes": validated})
        for name, value in validated.items():
            if value is not None and device.reported.get(name) != value:
                commands.append(send_command(actor, node_id, CommandAction.SET, name, value, ttl_s=ttl_s))
    return device, commands


def expire_commands() -> int:
    """Mark open commands past their expiry as expired; returns how many."""
    now = timezone.now()
    count = Command.objects.filter(status__in=OPEN_COMMAND_STATUSES, expires_at__lte=now).update(status=CommandStatus.EXPIRED, completed_at=now)
    if count:
        logger.info("expired %d commands", count, extra={"expired": count})
    return count


MAX_ALIASES = 20


class RenameRejected(Exception):
    """A name or alias refused: `field` and `reason`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def _label(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 100 or "\x00" in value or (value and not value.strip()):
        raise RenameRejected(field, f"a name is text of at most 100 characters, got {value!r}")
    return " ".join(value.split())


def rename_device(actor: Actor, node_id: str, changes: Any) -> Device:
    """PATCH /api/v1/devices/{node_id}/ `{name?, aliases?}` (scope admin): how people call the
    device, which the assistant matches. Checked whole before anything is written; audited."""
    authorize(actor, Scope.ADMIN, "device.rename", target_type="device", target_id=str(node_id)[:150])
    device = Device.objects.filter(node_id=node_id).first()
    try:
        if device is None:
            raise RenameRejected("node_id", f"no device '{node_id}'")
        if not isinstance(changes, dict) or not changes or set(changes) - {"name", "aliases"}:
            raise RenameRejected("body", "send {name?, aliases?}: a name, a list of aliases, or both")
        fields: dict[str, Any] = {}
        if "name" in changes:
            fields["name"] = _label(changes["name"], "name")
        if "aliases" in changes:
            aliases = changes["aliases"]
            if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
                raise RenameRejected("aliases", f"aliases are a list of at most {MAX_ALIASES} names, got {aliases!r}"[:300])
            cleaned = [_label(a, f"aliases[{i}]") for i, a in enumerate(aliases)]
            empty = [i for i, a in enumerate(cleaned) if not a]
            if empty:
                raise RenameRejected(f"aliases[{empty[0]}]", "an alias cannot be empty")
            fields["aliases"] = list(dict.fromkeys(cleaned))
    except RenameRejected as rejected:
        record(actor, "device.rename", Decision.DENY, scope=Scope.ADMIN, target_type="device", target_id=str(node_id)[:150], reason=rejected.reason[:500])
        raise
    assert device is not None
    with transaction.atomic():
        Device.objects.filter(pk=device.pk).update(**fields, named_at=timezone.now(), updated_at=timezone.now())
        record(actor, "device.rename", Decision.ALLOW, scope=Scope.ADMIN, target_type="device", target_id=node_id, details=fields)
        transaction.on_commit(lambda: events.device_renamed(node_id))
    device.refresh_from_db()
    return device
