"""A rule checked against the fleet when it is saved (API, admin, page, import).

The engine (`automation.engine.parse_rule`) checks the document's shape: operators, nesting,
numbers, times. This module checks what only the registry knows, each refusal naming the
field path and the reason (`when.all[0].capability`, `then[1].value`):

- a device, group or scene that does not exist; a capability a device does not declare
  (or that no member of a group declares);
- a condition whose operator does not fit the capability's type (`gt` on a boolean), a
  value of the wrong type or outside the enum, a condition the capability can never meet
  (`gt 50` where it reads at most 35, `between` a range outside its own);
- an action that writes a sensor or a read-only point, or a value the device would refuse:
  the same levels 4-6 a command goes through (`devices.services`), so a rule can never be
  saved with an action that would be refused when it fires, a PLC point outside its
  declared range included;
- a webhook to a loopback, link-local or unspecified address, unless allowed by
  MESHHUB_AUTOMATION_WEBHOOK_PRIVATE.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from devices.models import Capability, CommandAction, Device, Group, ValueType
from devices.services import MISSING, CommandRejected, check_action_fits, check_command_value
from devices.values import ValueSpec, check_value

NUMERIC = (ValueType.INT, ValueType.FLOAT)
ORDERING_OPS = ("gt", "ge", "lt", "le", "between")


class RuleInvalid(Exception):
    """A rule refused at save: `field` is the path in the document, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def leaves(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The device/group conditions of a `when` tree with their paths (shape already checked)."""
    if not isinstance(node, dict):
        return
    for key in ("all", "any"):
        if key in node and isinstance(node[key], list):
            for i, child in enumerate(node[key]):
                yield from leaves(child, f"{path}.{key}[{i}]")
            return
    if "device" in node or "group" in node:
        yield path, node


def check_fleet(document: dict[str, Any]) -> None:
    """Raise RuleInvalid for the first thing in `document` the fleet cannot do."""
    for path, condition in leaves(document.get("when"), "when"):
        _check_condition(path, condition)
    for i, action in enumerate(document.get("then") or []):
        check_action(f"then[{i}]", action)


def _spec(cap: Capability) -> ValueSpec:
    return ValueSpec(cap.name, cap.value_type, cap.min_value, cap.max_value, tuple(cap.enum_values or ()))


def _capabilities(path: str, target: dict[str, Any]) -> list[Capability]:
    """The capabilities a condition or action reads or writes: the device's one, or every
    group member's that declares it."""
    name = target.get("capability")
    if "device" in target:
        device = Device.objects.filter(node_id=target["device"]).first()
        if device is None:
            raise RuleInvalid(f"{path}.device", f"no device '{target['device']}'")
        cap = device.capabilities.filter(name=name).first()
        if cap is None:
            known = ", ".join(device.capabilities.values_list("name", flat=True)) or "none"
            raise RuleInvalid(f"{path}.capability", f"device '{device.node_id}' has no capability '{name}' (it has: {known})")
        return [cap]
    group = Group.objects.filter(name=target.get("group")).first()
    if group is None:
        raise RuleInvalid(f"{path}.group", f"no group '{target.get('group')}'")
    caps = list(Capability.objects.filter(device__groups=group, name=name).select_related("device"))
    if not caps:
        raise RuleInvalid(f"{path}.capability", f"no member of group '{group.name}' has capability '{name}'")
    return caps


def _check_condition(path: str, condition: dict[str, Any]) -> None:
    op = condition.get("op")
    value: Any = condition.get("value")
    for cap in _capabilities(path, condition):
        where = f"'{cap.name}' of {cap.device.node_id}"
        if op in ORDERING_OPS or condition.get("hysteresis"):
            if cap.value_type not in NUMERIC:
                raise RuleInvalid(f"{path}.op", f"'{op}' compares numbers, and {where} is {cap.value_type}")
        if op == "changed":
            continue
        if op == "between":
            for j, bound in enumerate(value):
                if isinstance(bound, bool) or not isinstance(bound, int | float):
                    raise RuleInvalid(f"{path}.value[{j}]", f"a bound of 'between' must be a number, got {bound!r}")
            low, high = value
            if (cap.max_value is not None and low > cap.max_value) or (cap.min_value is not None and high < cap.min_value):
                raise RuleInvalid(f"{path}.value", f"{where} reads {_range(cap)}: it can never be between {low} and {high}")
            continue
        if op in ORDERING_OPS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RuleInvalid(f"{path}.value", f"'{op}' needs a number, got {value!r}")
            never = (
                (op == "gt" and cap.max_value is not None and value >= cap.max_value)
                or (op == "ge" and cap.max_value is not None and value > cap.max_value)
                or (op == "lt" and cap.min_value is not None and value <= cap.min_value)
                or (op == "le" and cap.min_value is not None and value < cap.min_value)
            )
            if never:
                raise RuleInvalid(f"{path}.value", f"{where} reads {_range(cap)}: it can never be {_OP_WORDS[op]} {value}")
            continue
        # eq, ne, changed_to: the value must be one the capability can take
        reason = check_value(_spec(cap), value)
        if reason:
            raise RuleInvalid(f"{path}.value", reason)


_OP_WORDS = {"gt": "above", "ge": "at or above", "lt": "below", "le": "at or below"}


def _range(cap: Capability) -> str:
    low = "-∞" if cap.min_value is None else f"{cap.min_value:g}"
    high = "∞" if cap.max_value is None else f"{cap.max_value:g}"
    return f"{low}..{high}{' ' + cap.unit if cap.unit else ''}"


def check_action(path: str, action: dict[str, Any]) -> None:
    if "scene" in action:
        from automation.models import Scene

        if not Scene.objects.filter(name=action["scene"]).exists():
            raise RuleInvalid(f"{path}.scene", f"no scene '{action['scene']}'")
        return
    if "webhook" in action:
        _check_webhook(f"{path}.webhook", action["webhook"])
        return
    if "device" not in action and "group" not in action:
        return  # a delay: its range is the engine's to check
    verb = action.get("action")
    if verb not in CommandAction.values:
        raise RuleInvalid(f"{path}.action", f"unknown action {verb!r}; expected one of {', '.join(CommandAction.values)}")
    for cap in _capabilities(path, action):
        try:
            check_action_fits(verb, cap)
            check_command_value(verb, cap, action.get("value", MISSING))
        except CommandRejected as rejected:
            where = f" ({cap.device.node_id})" if "group" in action else ""
            raise RuleInvalid(f"{path}.{rejected.field}", rejected.reason + where) from None


def _check_webhook(path: str, url: Any) -> None:
    if not isinstance(url, str):
        raise RuleInvalid(path, f"a webhook is an http(s) URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleInvalid(path, f"a webhook is an http(s) URL with a host, got {url!r}")
    if settings.AUTOMATION_WEBHOOK_PRIVATE:
        return
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        raise RuleInvalid(path, f"{host} is this machine: webhooks to loopback addresses are refused (MESHHUB_AUTOMATION_WEBHOOK_PRIVATE)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: resolved and checked again when the webhook is sent
    kind = forbidden_address(address)
    if kind:
        raise RuleInvalid(path, f"{address} is a {kind} address: webhooks there are refused (MESHHUB_AUTOMATION_WEBHOOK_PRIVATE)")


def forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What kind of address a webhook may not reach ("loopback", "link-local", "unspecified",
    "multicast"), or "" (checked at save here and at send time by automation.webhooks)."""
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
    ):
        if flag:
            return kind
    return ""
