"""Local intents: a sentence understood and acted on with no model at all.

The sentence is matched by hassil against `sentences/en.yaml` (the templates of Home
Assistant's Assist style: turn on/off, toggle, set X to V, what is X, is X on, which devices
are offline, activate a scene). Names are wildcards resolved against the registry by
`assistant.names` (names, aliases, node ids, near misses; several candidates answer with
`choices` and nothing is sent); capability words come from the registry at match time
(names, aliases and the synonyms below); values are parsed by `assistant.values`.

Acting goes through the same services as every other door: `send_command()` and its six
levels, `send_to_group()`, `scenes.activate()`, with the asking actor, so a sentence can do
exactly what its token or user may do. A sentence that would act, from an actor without the
`command` scope, is refused (403) before anything is resolved further, and audited.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hassil import Intents, recognize_best
from hassil.intents import SlotList, TextSlotList

from assistant import names, values
from audit.services import Actor, ScopeDenied, authorize
from automation import scenes
from automation.models import Scene
from devices import services
from devices.models import Capability, CapabilityKind, Device, DeviceStatus, Group, ValueType
from hub.scopes import Scope

SENTENCES = Path(__file__).parent / "sentences" / "en.yaml"
ACTING = frozenset({"TurnOn", "TurnOff", "Toggle", "SetValue", "ActivateScene"})
SWITCH_NAMES = ("on", "power", "enabled", "running", "pump", "open")
WARMTH = ("temperature",)
MAX_LISTED = 20


@dataclass
class Answer:
    """What the assistant made of a sentence (ARCHITECTURE §9.3)."""

    understood: str = ""
    commands: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""
    choices: list[dict[str, Any]] = field(default_factory=list)
    intent: str = ""
    status: int = 200  # 400: not understood; 403: would act without the command scope
    reason: str = ""

    def body(self, handled_by: str = "local", provider: str | None = None) -> dict[str, Any]:
        if self.status != 200:
            body: dict[str, Any] = {"field": "text", "reason": self.reason}
            if self.status == 400:
                body["choices"] = self.choices
            return body
        return {
            "handled_by": handled_by,
            "provider": provider,
            "understood": self.understood,
            "commands": self.commands,
            "answer": self.answer,
            "choices": self.choices,
        }


class NotUnderstood(Exception):
    def __init__(self, reason: str, choices: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.choices = choices or []


@functools.cache
def _intents() -> Intents:
    return Intents.from_dict(yaml.safe_load(SENTENCES.read_text()))


def vocabulary() -> dict[str, set[str]]:
    """spoken word → the capability names it may mean (the registry's, kept with the names)."""
    names.index.refresh()
    return names.index.vocabulary


@functools.lru_cache(maxsize=4)
def _capability_list(version: int) -> TextSlotList:
    return TextSlotList.from_strings(sorted(names.index.vocabulary) or ["-"])


def recognize(text: str) -> tuple[str, dict[str, str], dict[str, set[str]]]:
    """(intent, {slot: text}, vocabulary) or NotUnderstood."""
    words = vocabulary()
    slot_lists: dict[str, SlotList] = {"capability": _capability_list(names.index.version)}
    result = recognize_best(" ".join(text.split()), _intents(), slot_lists=slot_lists)
    if result is None:
        raise NotUnderstood(
            "not understood; try 'turn on the kitchen light', 'set the greenhouse thermostat to 21', "
            "'what is the temperature of the greenhouse', 'which devices are offline' or 'activate the movie night scene'"
        )
    slots = {key: str(entity.value).strip() for key, entity in result.entities.items()}
    if "capability" in result.entities:
        slots["capability"] = names.normalise(str(result.entities["capability"].text or result.entities["capability"].value)) or slots["capability"]
    return result.intent.name, slots, words


def handle(actor: Actor, text: str) -> Answer:
    """The local answer to `text`, acting with `actor`'s rights; NotUnderstood when no
    template fits or a name resolves to nothing."""
    intent, slots, words = recognize(text)
    if intent in ACTING:
        try:
            authorize(actor, Scope.COMMAND, "assistant.act", target_type="assistant", target_id=intent)
        except ScopeDenied as denied:
            return Answer(intent=intent, status=403, reason=f"'{text[:80]}' would act ({intent}): {denied.reason}")
    if intent == "ListOffline":
        return _offline()
    if intent == "ActivateScene":
        return _scene(actor, slots["name"])
    found = names.index.resolve(slots.get("name", ""), ("device", "group") if intent != "GetValue" else ("device",))
    if found.ambiguous:
        labels = ", ".join(c.label if c.kind == "device" else f"{c.kind} {c.key}" for c in found.choices[:10])
        return Answer(
            understood=f"{intent}: '{slots.get('name')}' fits {len(found.choices)} things",
            choices=[c.as_choice() for c in found.choices],
            answer=f"Which one: {labels}?",
            intent=intent,
        )
    if found.found is None:
        raise NotUnderstood(f"no device or group called '{slots.get('name')}'")
    thing = found.found
    if intent in ("TurnOn", "TurnOff", "Toggle"):
        return _switch(actor, thing, intent)
    if intent == "SetValue":
        return _set(actor, thing, slots, words)
    if intent == "IsState":
        return _is_state(thing, slots["state"])
    return _get(thing, slots, words)


# --- acting --------------------------------------------------------------------------------


def _devices(thing: names.Thing) -> list[Device]:
    if thing.kind == "device":
        return list(Device.objects.filter(node_id=thing.key).prefetch_related("capabilities"))
    group = Group.objects.get(name=thing.key)
    return list(group.members.order_by("node_id").prefetch_related("capabilities"))


def _switch_capability(devices: Iterable[Device]) -> str | None:
    """The on/off capability the devices share: a writable boolean, `on` first."""
    common: set[str] | None = None
    for device in devices:
        mine = {c.name for c in device.capabilities.all() if c.value_type == ValueType.BOOL and c.writable and c.kind != CapabilityKind.SENSOR}
        common = mine if common is None else common & mine
    if not common:
        return None
    return next((n for n in SWITCH_NAMES if n in common), sorted(common)[0])


def _entry(node_id: str, capability: str, action: str, value: Any, outcome: Any) -> dict[str, Any]:
    entry = {"device": node_id, "capability": capability, "action": action, "value": value}
    if isinstance(outcome, services.CommandRejected):
        return {**entry, "id": None, "status": "rejected", "reason": outcome.reason}
    return {**entry, "id": str(outcome.id), "status": outcome.status, "reason": ""}


def _send(actor: Actor, thing: names.Thing, action: str, capability: str, value: Any) -> list[dict[str, Any]]:
    sent_value = value if action == "set" else None
    if thing.kind == "group":
        group = Group.objects.get(name=thing.key)
        outcomes = services.send_to_group(actor, group, action, capability, value if action == "set" else services.MISSING)
        return [_entry(o.node_id, capability, action, sent_value, o.command or o.rejected) for o in outcomes]
    try:
        command: Any = services.send_command(actor, thing.key, action, capability, value if action == "set" else services.MISSING)
    except services.CommandRejected as rejected:
        command = rejected
    return [_entry(thing.key, capability, action, sent_value, command)]


def _summary(commands: list[dict[str, Any]]) -> str:
    sent = [c for c in commands if c["status"] != "rejected"]
    refused = [c for c in commands if c["status"] == "rejected"]
    text = f"Sent {len(sent)} of {len(commands)} commands." if len(commands) > 1 else ("Sent." if sent else "")
    if refused:
        text += " " + "; ".join(f"{c['device']}: {c['reason']}" for c in refused[:5])
    return text.strip()


def _switch(actor: Actor, thing: names.Thing, intent: str) -> Answer:
    devices = _devices(thing)
    capability = _switch_capability(devices)
    if capability is None:
        raise NotUnderstood(f"{thing.label} has nothing to switch on or off")
    action, value = {"TurnOn": ("set", True), "TurnOff": ("set", False), "Toggle": ("toggle", None)}[intent]
    commands = _send(actor, thing, action, capability, value)
    verb = {"TurnOn": "turn on", "TurnOff": "turn off", "Toggle": "toggle"}[intent]
    return Answer(understood=f"{verb} {_label(thing)}: {capability}", commands=commands, answer=_summary(commands), intent=intent)


def _label(thing: names.Thing) -> str:
    return f"group {thing.key}" if thing.kind == "group" else f"{thing.label} ({thing.key})" if thing.label != thing.key else thing.key


def _capabilities_named(word: str, vocabulary: dict[str, set[str]], device: Device) -> list[Capability]:
    meant = vocabulary.get(word, set()) | {word.replace(" ", "_"), word}
    return [c for c in device.capabilities.all() if c.name in meant or word in [names.normalise(a) for a in c.aliases or []]]


def _set(actor: Actor, thing: names.Thing, slots: dict[str, str], vocabulary: dict[str, set[str]]) -> Answer:
    devices = _devices(thing)
    if not devices:
        raise NotUnderstood(f"group {thing.key} has no members")
    first = devices[0]
    writable = [c for c in first.capabilities.all() if c.writable and c.kind != CapabilityKind.SENSOR]
    if "capability" in slots:
        candidates = [c for c in _capabilities_named(slots["capability"], vocabulary, first) if c in writable]
        if not candidates:
            raise NotUnderstood(f"{thing.label} has no '{slots['capability']}' to set (it can set: {', '.join(c.name for c in writable) or 'nothing'})")
    else:
        candidates = [c for c in writable if values.fits(slots["value"], c)]
        if not candidates:
            raise NotUnderstood(f"'{slots['value']}' fits nothing {thing.label} can set ({', '.join(c.name for c in writable) or 'nothing'})")
        if len(candidates) > 1:
            return Answer(
                understood=f"set {_label(thing)} to {slots['value']}",
                choices=[{"kind": "capability", "name": c.name} for c in candidates],
                answer=f"Set which: {', '.join(c.name for c in candidates)}?",
                intent="SetValue",
            )
    cap = candidates[0]
    try:
        value = values.parse(slots["value"], cap)
    except values.ValueRefused as refused:
        raise NotUnderstood(str(refused)) from None
    commands = _send(actor, thing, "set", cap.name, value)
    unit = f" {cap.unit}" if cap.unit and not isinstance(value, bool) else ""
    return Answer(understood=f"set {_label(thing)} {cap.name} to {value}{unit}", commands=commands, answer=_summary(commands), intent="SetValue")


# --- reading -------------------------------------------------------------------------------


def _shown(value: Any, cap: Capability | None) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    unit = f" {cap.unit}" if cap is not None and cap.unit else ""
    return f"{value}{unit}"


def _get(thing: names.Thing, slots: dict[str, str], vocabulary: dict[str, set[str]]) -> Answer:
    device = _devices(thing)[0]
    caps = list(device.capabilities.all())
    if "capability" in slots:
        chosen = _capabilities_named(slots["capability"], vocabulary, device)
        if not chosen:
            raise NotUnderstood(f"{thing.label} has no '{slots['capability']}' (it has: {', '.join(c.name for c in caps)})")
    else:
        sensors = [c for c in caps if c.kind == CapabilityKind.SENSOR]
        chosen = [c for c in sensors if c.name in WARMTH] or sensors[:1] or caps[:1]
    cap = chosen[0]
    reading = device.reported.get(cap.name)
    state = "" if device.online else " (offline; last reported)"
    answer = f"{thing.label} {cap.name}: {_shown(reading, cap)}{state}" if reading is not None else f"{thing.label} has not reported {cap.name} yet"
    return Answer(understood=f"read {_label(thing)} {cap.name}", answer=answer, intent="GetValue")


def _is_state(thing: names.Thing, word: str) -> Answer:
    devices = _devices(thing)
    if word in ("online", "offline"):
        online = [d for d in devices if d.online]
        yes = bool(online) if word == "online" else len(online) < len(devices)
        return Answer(understood=f"is {_label(thing)} {word}", answer=("yes" if yes else "no") + f": {len(online)} of {len(devices)} online", intent="IsState")
    wanted = word in ("on", "open")
    names_of = ("open",) if word in ("open", "closed") else SWITCH_NAMES
    lines = []
    for device in devices:
        cap = next((c for n in names_of for c in device.capabilities.all() if c.name == n and c.value_type == ValueType.BOOL), None)
        reading = device.reported.get(cap.name) if cap else None
        lines.append((device, cap, reading))
    known = [(d, c, r) for d, c, r in lines if isinstance(r, bool)]
    if not known:
        return Answer(understood=f"is {_label(thing)} {word}", answer=f"{thing.label} has not reported whether it is {word}", intent="IsState")
    matching = [d for d, _, r in known if r == wanted]
    if len(known) == 1:
        answer = (
            "yes" if matching else "no"
        ) + f": {thing.label} is {_shown(known[0][2], known[0][1]) if word in ('on', 'off') else ('open' if known[0][2] else 'closed')}"
    else:
        answer = f"{len(matching)} of {len(known)} are {word}"
    return Answer(understood=f"is {_label(thing)} {word}", answer=answer, intent="IsState")


def _offline() -> Answer:
    offline = list(Device.objects.filter(status=DeviceStatus.PROVISIONED, online=False).order_by("node_id").values_list("node_id", "name")[: MAX_LISTED + 1])
    total = Device.objects.filter(status=DeviceStatus.PROVISIONED, online=False).count() if len(offline) > MAX_LISTED else len(offline)
    if not offline:
        return Answer(understood="list the offline devices", answer="Every device is online.", intent="ListOffline")
    shown = ", ".join(name or node_id for node_id, name in offline[:MAX_LISTED])
    more = f" and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
    return Answer(
        understood="list the offline devices",
        answer=f"{total} offline: {shown}{more}",
        choices=[{"kind": "device", "node_id": node_id, "name": name or node_id} for node_id, name in offline[:MAX_LISTED]],
        intent="ListOffline",
    )


def _scene(actor: Actor, phrase: str) -> Answer:
    found = names.index.resolve(phrase, ("scene",))
    if found.ambiguous:
        return Answer(
            understood=f"activate scene '{phrase}'",
            choices=[c.as_choice() for c in found.choices],
            answer=f"Which scene: {', '.join(c.key for c in found.choices)}?",
            intent="ActivateScene",
        )
    if found.found is None:
        known = list(Scene.objects.order_by("name").values_list("name", flat=True)[:10])
        raise NotUnderstood(f"no scene called '{phrase}'", [{"kind": "scene", "name": n} for n in known])
    scene = Scene.objects.get(name=found.found.key)
    results = scenes.activate(actor, scene.pk)
    commands = [
        {
            "device": r.device,
            "capability": r.capability,
            "action": "set",
            "value": next((m.get("value") for m in scene.members if m.get("device") == r.device and m.get("capability") == r.capability), None),
            "id": r.command_id,
            "status": r.status if r.command_id else "rejected",
            "reason": r.reason,
        }
        for r in results
    ]
    return Answer(understood=f"activate scene {scene.name}", commands=commands, answer=_summary(commands), intent="ActivateScene")
