"""The tools an agent gets: the MCP server's (`assistant.mcp`) and the LLM's (`assistant.llm`).

Each tool names the scope it needs; a caller is offered only the tools its scopes allow
(`available`), and `call` checks again, so a model or an MCP client can never do more than
the token or user it acts for. Every call goes through the services the API uses (the six
levels of `send_command()`, `send_to_group()`, `scenes.activate()`), with the caller as
actor, and is audited (`assistant.tool`, allow or deny, with the tool's name). Results and
errors are compact JSON; an error names its field, its reason and, for a refused command,
the level (`{"error": {"field": "value", "reason": "...", "level": "value"}}`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, ScopeDenied, authorize, record
from automation import scenes
from automation.models import Rule, Scene
from devices import services
from devices.models import CommandAction, Device, Group
from devices.telemetry import TelemetryQuery
from hub.scopes import Scope

MAX_LIST = 200


class ToolError(Exception):
    def __init__(self, field: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.body = {"field": field, "reason": reason, **extra}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    scope: str
    schema: dict[str, Any]
    run: Callable[[Actor, dict[str, Any]], Any]


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


NODE = {"type": "string", "description": "the device's node id (list_devices gives them)"}
ACTION = {"type": "string", "enum": list(CommandAction.values)}
VALUE = {"description": "the value for set: a number, true/false or a string the capability takes"}


def _device_row(d: Device) -> dict[str, Any]:
    return {"node_id": d.node_id, "name": d.name, "type": d.device_type, "online": d.online}


def list_devices(actor: Actor, args: dict[str, Any]) -> Any:
    qs = Device.objects.order_by("node_id")
    query = args.get("query")
    if query:
        qs = qs.filter(name__icontains=query) | qs.filter(node_id__icontains=query)
    if "online" in args:
        qs = qs.filter(online=bool(args["online"]))
    limit = min(int(args.get("limit") or 50), MAX_LIST)
    total = qs.count()
    return {"devices": [_device_row(d) for d in qs[:limit]], "total": total}


def get_device(actor: Actor, args: dict[str, Any]) -> Any:
    device = Device.objects.filter(node_id=args["node_id"]).prefetch_related("capabilities").first()
    if device is None:
        raise ToolError("node_id", f"no device '{args['node_id']}'")
    caps = [
        {
            "name": c.name,
            "kind": c.kind,
            "type": c.value_type,
            "unit": c.unit,
            "min": c.min_value,
            "max": c.max_value,
            "enum": c.enum_values or None,
            "writable": c.writable,
        }
        for c in device.capabilities.all()
    ]
    return {
        **_device_row(device),
        "aliases": device.aliases,
        "reported": device.reported,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
        "capabilities": caps,
    }


def _command_row(outcome: Any, node_id: str) -> dict[str, Any]:
    if isinstance(outcome, services.CommandRejected):
        return {"device": node_id, "status": "rejected", **outcome.as_dict()}
    return {"device": node_id, "id": str(outcome.id), "status": outcome.status}


def send_command(actor: Actor, args: dict[str, Any]) -> Any:
    try:
        command = services.send_command(actor, args["node_id"], args["action"], args["capability"], args.get("value", services.MISSING))
    except services.CommandRejected as rejected:
        raise ToolError(rejected.field, rejected.reason, level=rejected.level_name, **({"guard": rejected.guard} if rejected.guard else {})) from None
    return _command_row(command, args["node_id"])


def list_groups(actor: Actor, args: dict[str, Any]) -> Any:
    return {
        "groups": [
            {"name": g.name, "members": [m.node_id for m in g.members.all()]} for g in Group.objects.order_by("name").prefetch_related("members")[:MAX_LIST]
        ]
    }


def group_command(actor: Actor, args: dict[str, Any]) -> Any:
    group = Group.objects.filter(name=args["group"]).first()
    if group is None:
        raise ToolError("group", f"no group '{args['group']}'")
    outcomes = services.send_to_group(actor, group, args["action"], args["capability"], args.get("value", services.MISSING))
    return {"commands": [_command_row(o.command or o.rejected, o.node_id) for o in outcomes]}


def list_scenes(actor: Actor, args: dict[str, Any]) -> Any:
    return {"scenes": [{"name": s.name, "members": s.members} for s in Scene.objects.order_by("name")[:MAX_LIST]]}


def activate_scene(actor: Actor, args: dict[str, Any]) -> Any:
    scene = Scene.objects.filter(name=args["name"]).first()
    if scene is None:
        raise ToolError("name", f"no scene '{args['name']}'")
    return {"members": [r.as_dict() for r in scenes.activate(actor, scene.pk)]}


def get_telemetry(actor: Actor, args: dict[str, Any]) -> Any:
    device = Device.objects.filter(node_id=args["node_id"]).first()
    if device is None:
        raise ToolError("node_id", f"no device '{args['node_id']}'")
    hours = float(args.get("hours") or 24)
    if not 0 < hours <= 24 * 31:
        raise ToolError("hours", f"hours is between 0 and {24 * 31}, got {hours:g}")
    end = timezone.now()
    bucket_s = int(args.get("bucket_s") or max(60, int(hours * 3600 / 48)))
    query = TelemetryQuery(device=device, start=end - timedelta(hours=hours), end=end, capability=args["capability"], bucket_s=bucket_s)
    buckets = query.buckets()
    return {"node_id": device.node_id, "capability": args["capability"], "bucket_s": query.effective_bucket_s(), "buckets": buckets[:500]}


def list_rules(actor: Actor, args: dict[str, Any]) -> Any:
    return {
        "rules": [
            {
                "id": r.pk,
                "name": r.name,
                "enabled": r.enabled,
                "last_fired_at": r.last_fired_at.isoformat() if r.last_fired_at else None,
                "last_outcome": r.last_outcome,
            }
            for r in Rule.objects.order_by("name")[:MAX_LIST]
        ]
    }


def list_rollouts(actor: Actor, args: dict[str, Any]) -> Any:
    from ota.models import Rollout

    return {
        "rollouts": [
            {"id": r.pk, "release": str(r.release), "state": r.state, "reason": r.reason, "created_at": r.created_at.isoformat()}
            for r in Rollout.objects.select_related("release").order_by("-created_at")[:50]
        ]
    }


def list_audit(actor: Actor, args: dict[str, Any]) -> Any:
    from audit.models import AuditEvent

    rows = AuditEvent.objects.order_by("-seq")[: min(int(args.get("limit") or 20), MAX_LIST)]
    return {
        "events": [
            {"seq": e.seq, "ts": e.ts.isoformat(), "actor": f"{e.actor_type}:{e.actor_id}", "action": e.action, "decision": e.decision, "reason": e.reason}
            for e in rows
        ]
    }


TOOLS: tuple[Tool, ...] = (
    Tool("list_devices", "Devices of the fleet: node id, name, type, online. Filter by a word or by online.", Scope.READ_STATUS,
         _obj({"query": {"type": "string"}, "online": {"type": "boolean"}, "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST}}), list_devices),
    Tool("get_device", "One device: its capabilities (type, unit, range, writable) and last reported values.", Scope.READ_STATUS,
         _obj({"node_id": NODE}, ["node_id"]), get_device),
    Tool("send_command", "Send a command to a device (set, toggle, execute, get); checked like every command.", Scope.COMMAND,
         _obj({"node_id": NODE, "action": ACTION, "capability": {"type": "string"}, "value": VALUE}, ["node_id", "action", "capability"]), send_command),
    Tool("list_groups", "Groups of devices and their members.", Scope.READ_STATUS, _obj({}), list_groups),
    Tool("group_command", "Send one command to every member of a group.", Scope.COMMAND,
         _obj({"group": {"type": "string"}, "action": ACTION, "capability": {"type": "string"}, "value": VALUE}, ["group", "action", "capability"]), group_command),
    Tool("list_scenes", "Scenes: named sets of values.", Scope.READ_STATUS, _obj({}), list_scenes),
    Tool("activate_scene", "Activate a scene: one command per member.", Scope.COMMAND, _obj({"name": {"type": "string"}}, ["name"]), activate_scene),
    Tool("get_telemetry", "A capability's history, bucketed (count, mean, min, max per bucket).", Scope.READ_STATUS,
         _obj({"node_id": NODE, "capability": {"type": "string"}, "hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 744}, "bucket_s": {"type": "integer", "minimum": 1}},
              ["node_id", "capability"]), get_telemetry),
    Tool("list_rules", "Automation rules: enabled, last fired, last outcome.", Scope.READ_STATUS, _obj({}), list_rules),
    Tool("list_rollouts", "Firmware rollouts and their state.", Scope.OTA, _obj({}), list_rollouts),
    Tool("list_audit", "The newest audit events (who did what, allowed or denied).", Scope.ADMIN,
         _obj({"limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST}}), list_audit),
)  # fmt: skip
BY_NAME = {tool.name: tool for tool in TOOLS}


def available(actor: Actor) -> list[Tool]:
    """The tools `actor` may use (a tool it cannot use is not offered at all)."""
    return [tool for tool in TOOLS if actor.allows(tool.scope)]


def _check(tool: Tool, args: Any) -> dict[str, Any]:
    """The arguments against the tool's schema: required, known, and of the right type."""
    if not isinstance(args, dict):
        raise ToolError("arguments", f"arguments are a JSON object, got {type(args).__name__}")
    properties = tool.schema["properties"]
    for key in args:
        if key not in properties:
            raise ToolError(key, f"unknown argument; {tool.name} takes {', '.join(properties) or 'none'}")
    for key in tool.schema["required"]:
        if key not in args:
            raise ToolError(key, f"{tool.name} needs '{key}'")
    for key, value in args.items():
        kind = properties[key].get("type")
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
        }.get(kind, True)
        if not ok:
            raise ToolError(key, f"'{key}' is a {kind}, got {value!r}"[:200])
        if "enum" in properties[key] and value not in properties[key]["enum"]:
            raise ToolError(key, f"'{key}' is one of {', '.join(properties[key]['enum'])}, got {value!r}"[:200])
    return args


def call(actor: Actor, name: str, args: Any, via: str) -> tuple[bool, Any]:
    """(ok, result or {"error": …}) of one tool call by `actor` through `via` (mcp, llm)."""
    tool = BY_NAME.get(name)
    try:
        if tool is None:
            raise ToolError("name", f"no tool '{name}'")
        authorize(actor, tool.scope, "assistant.tool", target_type="tool", target_id=name, details={"via": via})
        result = tool.run(actor, _check(tool, args))
    except ScopeDenied as denied:  # audited by authorize
        return False, {"error": {"field": "name", "reason": denied.reason, "scope": denied.scope}}
    except ToolError as error:
        record(
            actor,
            "assistant.tool",
            Decision.DENY,
            target_type="tool",
            target_id=name[:100],
            reason=error.body["reason"][:500],
            details={"via": via, "field": error.body["field"]},
        )
        return False, {"error": error.body}
    record(actor, "assistant.tool", Decision.ALLOW, scope=tool.scope, target_type="tool", target_id=name, details={"via": via})
    return True, result
