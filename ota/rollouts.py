"""Creating rollouts and the operator controls: pause, resume, abort, approve a wave; per
device force a rollback, clear a pending image, clear the boot guard. Every control is
checked against the actor's scopes here (the API, the admin and the pages share it) and
audited, allowed or denied."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import Actor, Decision, record
from devices.models import Device, DeviceStatus, Group
from hub.scopes import Scope
from ota import deployments, driver, waves
from ota import statemachine as sm
from ota.models import Deployment, DeploymentState, DeviceFirmware, FirmwareRelease, Rollout, RolloutState


class RolloutRefused(Exception):
    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def _authorize(actor: Actor, scope: str, action: str, target_type: str, target_id: str) -> None:
    if not actor.allows(scope):
        reason = f"this needs scope '{scope}'"
        record(actor, action, Decision.DENY, scope=scope, target_type=target_type, target_id=target_id, reason=reason)
        raise RolloutRefused("scope", reason, status=403)


@dataclass(frozen=True)
class RolloutSpec:
    release: int
    targets: dict[str, Any]
    waves: list[Any]
    success_threshold: float = 0.9
    min_sample: int = 1
    error_threshold: float = 0.2
    max_concurrent: int = 50
    approval: bool = False
    health_beacons: int = 3
    deadline_s: int = 600
    start: bool = True


def resolve_targets(targets: Any, device_types: list[str]) -> list[Device]:
    """The devices a rollout reaches: named devices must run the release (refused
    otherwise); groups, a device type and `all` reach their members that do."""
    if not isinstance(targets, dict):
        raise RolloutRefused("targets", "must be an object with devices, groups, device_type or all")
    unknown = sorted(set(targets) - {"devices", "groups", "device_type", "all"})
    if unknown:
        raise RolloutRefused(f"targets.{unknown[0]}", "is not a target kind (devices, groups, device_type, all)")
    found: dict[int, Device] = {}
    provisioned = Device.objects.filter(status=DeviceStatus.PROVISIONED)
    compatible = provisioned.filter(device_type__in=device_types)
    if targets.get("all") is True:
        found.update({d.pk: d for d in compatible})
    for i, node_id in enumerate(targets.get("devices") or []):
        device = Device.objects.filter(node_id=node_id).first() if isinstance(node_id, str) else None
        if device is None:
            raise RolloutRefused(f"targets.devices[{i}]", f"no device {node_id!r}")
        if device.status != DeviceStatus.PROVISIONED:
            raise RolloutRefused(f"targets.devices[{i}]", f"device {node_id} is {device.status}")
        if device.device_type not in device_types:
            raise RolloutRefused(f"targets.devices[{i}]", f"device {node_id} is a {device.device_type}; the release runs on {', '.join(device_types)}")
        found[device.pk] = device
    for i, name in enumerate(targets.get("groups") or []):
        group = Group.objects.filter(name=name).first() if isinstance(name, str) else None
        if group is None:
            raise RolloutRefused(f"targets.groups[{i}]", f"no group {name!r}")
        found.update({d.pk: d for d in group.members.filter(status=DeviceStatus.PROVISIONED, device_type__in=device_types)})
    device_type = targets.get("device_type")
    if device_type:
        if not isinstance(device_type, str):
            raise RolloutRefused("targets.device_type", "must be a device type")
        found.update({d.pk: d for d in compatible.filter(device_type=device_type)})
    if not found:
        raise RolloutRefused("targets", f"selects no provisioned device that runs the release ({', '.join(device_types)})")
    return sorted(found.values(), key=lambda d: d.node_id)


def _number(value: Any, field: str, low: float, high: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        raise RolloutRefused(field, f"must be {kind} from {low:g} to {high:g}")
    return value


def create(actor: Actor, spec: RolloutSpec) -> Rollout:
    _authorize(actor, Scope.OTA, "ota.rollout.create", "release", str(spec.release))
    release = FirmwareRelease.objects.filter(pk=spec.release).first()
    if release is None:
        raise RolloutRefused("release", f"no release {spec.release}")
    if release.expires_at <= timezone.now():
        raise RolloutRefused("release", f"release {release} expired at {release.expires_at.isoformat()}")
    devices = resolve_targets(spec.targets, release.device_types)
    try:
        parsed = waves.parse_waves(spec.waves)
    except waves.WaveError as exc:
        raise RolloutRefused(exc.field, exc.reason) from None
    _number(spec.success_threshold, "success_threshold", 0, 1)
    _number(spec.error_threshold, "error_threshold", 0, 1)
    _number(spec.min_sample, "min_sample", 1, 100_000, integer=True)
    _number(spec.max_concurrent, "max_concurrent", 1, 10_000, integer=True)
    _number(spec.health_beacons, "health_beacons", 0, 100, integer=True)
    _number(spec.deadline_s, "deadline_s", 10, 7 * 86400, integer=True)
    with transaction.atomic():
        rollout = Rollout.objects.create(
            release=release,
            targets=spec.targets,
            waves=list(spec.waves),
            success_threshold=spec.success_threshold,
            min_sample=spec.min_sample,
            error_threshold=spec.error_threshold,
            max_concurrent=spec.max_concurrent,
            approval=spec.approval,
            health_beacons=spec.health_beacons,
            deadline_s=spec.deadline_s,
            created_by=f"{actor.type}:{actor.id}",
        )
        assigned = waves.assign_waves([d.node_id for d in devices], parsed, seed=str(rollout.pk))
        Deployment.objects.bulk_create(Deployment(rollout=rollout, device=d, wave=assigned[d.node_id]) for d in devices)
        record(
            actor,
            "ota.rollout.create",
            Decision.ALLOW,
            scope=Scope.OTA,
            target_type="rollout",
            target_id=str(rollout.pk),
            details={"release": release.version, "devices": len(devices)},
        )
        if spec.start:
            _start(actor, rollout)
    return rollout


def _start(actor: Actor, rollout: Rollout) -> None:
    rollout.state = RolloutState.RUNNING
    rollout.started_at = rollout.started_at or timezone.now()
    rollout.save(update_fields=["state", "started_at"])
    rollout_id = rollout.pk
    transaction.on_commit(lambda: deployments._drive_soon(rollout_id))


def control(actor: Actor, rollout_id: int, action: str) -> Rollout:
    """pause / resume / abort / approve (or start a draft)."""
    _authorize(actor, Scope.OTA, f"ota.rollout.{action}", "rollout", str(rollout_id))
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
        if rollout is None:
            raise RolloutRefused("id", f"no rollout {rollout_id}", status=404)
        allowed = {
            "start": {RolloutState.DRAFT},
            "pause": {RolloutState.RUNNING},
            "resume": {RolloutState.PAUSED},
            "abort": {RolloutState.DRAFT, RolloutState.RUNNING, RolloutState.PAUSED},
            "approve": {RolloutState.RUNNING},
        }
        if action not in allowed:
            raise RolloutRefused("action", f"unknown control {action!r}")
        if rollout.state not in allowed[action] or (action == "approve" and not rollout.awaiting_approval):
            reason = f"cannot {action} a rollout that is {rollout.state}" + (" and not waiting for approval" if action == "approve" else "")
            record(actor, f"ota.rollout.{action}", Decision.DENY, scope=Scope.OTA, target_type="rollout", target_id=str(rollout_id), reason=reason)
            raise RolloutRefused("state", reason, status=409)
        aborted: list[tuple[str, int]] = []
        if action in ("start", "resume"):
            rollout.reason = ""
            _start(actor, rollout)
        elif action == "pause":
            rollout.state, rollout.reason = RolloutState.PAUSED, f"paused by {actor.id}"
        elif action == "approve":
            rollout.awaiting_approval = False
            rollout.wave += 1
            rollout.reason = f"wave {rollout.wave + 1} approved by {actor.id}"
            rollout_id_ = rollout.pk
            transaction.on_commit(lambda: deployments._drive_soon(rollout_id_))
        elif action == "abort":
            rollout.state, rollout.reason, rollout.finished_at = RolloutState.ABORTED, f"aborted by {actor.id}", timezone.now()
            # Every row locked first, in id order: applying the aborts one by one would take
            # the audit chain's head (recorded by the first) before the next row, the
            # reverse of a device event's order (its row, then the head): a deadlock.
            open_rows = Deployment.objects.select_for_update(of=("self",)).filter(
                rollout=rollout, state__in=[DeploymentState.QUEUED, *deployments.TRANSFER_STATES]
            )
            for pk, node_id in list(open_rows.order_by("pk").values_list("pk", "device__node_id")):
                try:
                    deployments.apply(pk, sm.Abort(f"rollout aborted by {actor.id}"), actor=actor)
                    aborted.append((node_id, pk))
                except sm.TransitionRefused:
                    continue
        rollout.save()
        record(actor, f"ota.rollout.{action}", Decision.ALLOW, scope=Scope.OTA, target_type="rollout", target_id=str(rollout_id), reason=rollout.reason)
    for node_id, pk in aborted:
        driver.send_to_node(node_id, "abort", {"deployment": pk, "reason": "the rollout was aborted"})
    return rollout


DEVICE_CONTROLS = {"rollback": Scope.OTA, "clear": Scope.OTA, "bootguard.clear": Scope.RESET}


def device_control(actor: Actor, node_id: str, control_name: str, reason: str = "") -> str:
    """Send the device its signed frame (through its live session); returns the frame id."""
    scope = DEVICE_CONTROLS[control_name]
    action = f"ota.device.{control_name}"
    _authorize(actor, scope, action, "device", node_id)
    device = Device.objects.filter(node_id=node_id).first()
    if device is None:
        raise RolloutRefused("node_id", f"no device {node_id!r}", status=404)
    if not device.online:
        record(actor, action, Decision.DENY, scope=scope, target_type="device", target_id=node_id, reason="the device is offline")
        raise RolloutRefused("node_id", f"device {node_id} is offline: the signed order goes through its live session", status=409)
    frame_id = str(uuid.uuid4())
    order = {"id": frame_id, "kind": control_name, "reason": reason[:200] or f"{control_name} by {actor.id}", "at": timezone.now().isoformat()}
    with transaction.atomic():
        firmware, _ = DeviceFirmware.objects.select_for_update().get_or_create(device=device)
        firmware.pending_order = order  # a newer order replaces one not sent yet
        firmware.save(update_fields=["pending_order", "updated_at"])
        record(actor, action, Decision.ALLOW, scope=scope, target_type="device", target_id=node_id, reason=reason[:200], details={"frame": frame_id})
    driver.send_to_node(node_id, "order", {"id": frame_id})
    return frame_id
