"""Scenes: a named set of (device or group, capability, value), saved from a document or as a
snapshot of what devices report now, activated as one command per member.

Every member is checked when the scene is saved exactly as a rule's action is (the device
or group exists, the capability is writable, the value fits: `automation.validation`).
Activation sends each member its own command through `send_command()`; a member that is
offline, or whose command is refused (an interlock, a value it no longer takes), reports its
own failure without failing the others. The services check the `command` scope and audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from audit.services import Actor, Decision, authorize, record
from automation.models import Scene
from automation.validation import RuleInvalid, check_action
from devices import services
from devices.models import CapabilityKind, Device, Group
from hub.scopes import Scope

MAX_MEMBERS = 500


def _check_members(members: Any) -> list[dict[str, Any]]:
    if not isinstance(members, list) or not members:
        raise RuleInvalid("members", f"a scene has a non-empty list of members, got {members!r}")
    if len(members) > MAX_MEMBERS:
        raise RuleInvalid("members", f"a scene has at most {MAX_MEMBERS} members, got {len(members)}")
    checked = []
    for i, member in enumerate(members):
        path = f"members[{i}]"
        if not isinstance(member, dict) or ("device" in member) == ("group" in member):
            raise RuleInvalid(path, "a member is {device or group, capability, value}")
        unknown = sorted(set(member) - {"device", "group", "capability", "value"})
        if unknown:
            raise RuleInvalid(f"{path}.{unknown[0]}", "unknown field; a member has device or group, capability, value")
        if "value" not in member:
            raise RuleInvalid(f"{path}.value", "a member needs the value to set")
        check_action(path, {**member, "action": "set"})
        checked.append(dict(member))
    return checked


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise RuleInvalid("name", f"a scene's name is a non-empty string of at most 100 characters, got {name!r}")
    return name


def create(actor: Actor, document: Any) -> Scene:
    document = document if isinstance(document, dict) else {}
    name = str(document.get("name", ""))[:100]
    authorize(actor, Scope.COMMAND, "scene.create", target_type="scene", target_id=name)
    try:
        name = _name(document.get("name"))
        unknown = sorted(set(document) - {"name", "members"})
        if unknown:
            raise RuleInvalid(unknown[0], "unknown field; a scene has name and members")
        members = _check_members(document.get("members"))
        if Scene.objects.filter(name=name).exists():
            raise RuleInvalid("name", f"a scene named '{name}' exists already")
    except RuleInvalid as invalid:
        record(
            actor,
            "scene.create",
            Decision.DENY,
            scope=Scope.COMMAND,
            target_type="scene",
            target_id=name,
            reason=invalid.reason[:500],
            details={"field": invalid.field},
        )
        raise
    with transaction.atomic():
        scene = Scene.objects.create(name=name, members=members, created_by=f"{actor.type}:{actor.id}")
        record(
            actor,
            "scene.create",
            Decision.ALLOW,
            scope=Scope.COMMAND,
            target_type="scene",
            target_id=str(scene.pk),
            details={"name": name, "members": len(members)},
        )
    return scene


def snapshot(actor: Actor, name: Any, node_ids: Any) -> Scene:
    """A scene of what `node_ids` report now, for each capability a command can set."""
    if not isinstance(node_ids, list) or not node_ids or not all(isinstance(n, str) for n in node_ids):
        raise RuleInvalid("devices", f"a snapshot names a non-empty list of devices, got {node_ids!r}")
    members: list[dict[str, Any]] = []
    for i, node_id in enumerate(node_ids):
        device = Device.objects.filter(node_id=node_id).first()
        if device is None:
            raise RuleInvalid(f"devices[{i}]", f"no device '{node_id}'")
        for cap in device.capabilities.filter(writable=True).exclude(kind=CapabilityKind.SENSOR).order_by("name"):
            if cap.name in device.reported:
                members.append({"device": node_id, "capability": cap.name, "value": device.reported[cap.name]})
    if not members:
        raise RuleInvalid("devices", "none of these devices has reported a value a command can set")
    return create(actor, {"name": name, "members": members})


@dataclass
class MemberResult:
    device: str
    capability: str
    command_id: str | None
    status: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "capability": self.capability, "command_id": self.command_id, "status": self.status, "reason": self.reason}


def run_members(actor: Actor, scene: Scene) -> list[MemberResult]:
    """One command per member (group members expanded); an offline or refused member fails alone."""
    results: list[MemberResult] = []
    for member in scene.members:
        if "group" in member:
            group = Group.objects.filter(name=member["group"]).first()
            nodes = list(group.members.order_by("node_id").values_list("node_id", flat=True)) if group else []
            if not nodes:
                results.append(MemberResult("", member["capability"], None, "failed", f"group '{member['group']}' has no members"))
        else:
            nodes = [member["device"]]
        for node_id in nodes:
            results.append(_member(actor, node_id, member["capability"], member["value"]))
    return results


def _member(actor: Actor, node_id: str, capability: str, value: Any) -> MemberResult:
    device = Device.objects.filter(node_id=node_id).only("online").first()
    if device is not None and not device.online:
        return MemberResult(node_id, capability, None, "failed", f"device '{node_id}' is offline")
    try:
        command = services.send_command(actor, node_id, "set", capability, value)
    except services.CommandRejected as rejected:
        return MemberResult(node_id, capability, None, "failed", rejected.reason)
    return MemberResult(node_id, capability, str(command.id), command.status, "")


def activate(actor: Actor, scene_id: int) -> list[MemberResult]:
    scene = Scene.objects.get(pk=scene_id)
    authorize(actor, Scope.COMMAND, "scene.activate", target_type="scene", target_id=scene_id)
    results = run_members(actor, scene)
    sent = sum(1 for r in results if r.command_id)
    record(
        actor,
        "scene.activate",
        Decision.ALLOW,
        scope=Scope.COMMAND,
        target_type="scene",
        target_id=str(scene_id),
        reason=f"{sent} of {len(results)} members sent",
        details={"name": scene.name, "failed": [r.device for r in results if not r.command_id][:50]},
    )
    return results


def delete(actor: Actor, scene_id: int) -> None:
    authorize(actor, Scope.COMMAND, "scene.delete", target_type="scene", target_id=scene_id)
    with transaction.atomic():
        scene = Scene.objects.select_for_update().get(pk=scene_id)
        name = scene.name
        scene.delete()
        record(actor, "scene.delete", Decision.ALLOW, scope=Scope.COMMAND, target_type="scene", target_id=str(scene_id), details={"name": name})
