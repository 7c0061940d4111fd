"""Rules, scenes and groups as one JSON document (`manage.py automation export/import`).

Import applies the document whole or not at all: groups first (their members must exist),
then scenes, then rules, each checked as the API checks it, inside one transaction that is
rolled back at the first refusal (whose field path names the item: `rules[2].when.value`).
It is idempotent by name: an item that exists is replaced, one that does not is created,
nothing else is touched. `dry_run` checks everything and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from audit.services import Actor, Decision, record
from automation import rules, scenes
from automation.models import Rule, Scene
from automation.validation import RuleInvalid
from devices.models import Device, Group
from hub.scopes import Scope

SECTIONS = ("groups", "scenes", "rules")


def export() -> dict[str, Any]:
    return {
        "groups": [
            {"name": g.name, "description": g.description, "members": sorted(g.members.values_list("node_id", flat=True))}
            for g in Group.objects.order_by("name")
        ],
        "scenes": [{"name": s.name, "members": s.members} for s in Scene.objects.order_by("name")],
        "rules": [r.document for r in Rule.objects.order_by("name")],
    }


@dataclass
class ImportReport:
    created: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    replaced: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "replaced": self.replaced}


class _DryRun(Exception):
    pass


def _prefixed(prefix: str, invalid: RuleInvalid) -> RuleInvalid:
    return RuleInvalid(f"{prefix}.{invalid.field}" if invalid.field else prefix, invalid.reason)


def import_document(actor: Actor, document: Any, *, dry_run: bool = False) -> ImportReport:
    if not isinstance(document, dict) or not set(document) <= set(SECTIONS):
        raise RuleInvalid("", f"the document is an object with {', '.join(SECTIONS)}")
    report = ImportReport()
    try:
        with transaction.atomic():
            _groups(document.get("groups") or [], report)
            _scenes(actor, document.get("scenes") or [], report)
            _rules(actor, document.get("rules") or [], report)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    except RuleInvalid as invalid:
        record(
            actor,
            "automation.import",
            Decision.DENY,
            scope=Scope.COMMAND,
            target_type="automation",
            reason=invalid.reason[:500],
            details={"field": invalid.field},
        )
        raise
    if not dry_run:
        record(actor, "automation.import", Decision.ALLOW, scope=Scope.COMMAND, target_type="automation", details=report.as_dict())
    return report


def _named(items: Any, section: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise RuleInvalid(section, f"'{section}' is a list")
    names: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise RuleInvalid(f"{section}[{i}].name", "each item has a name")
        if item["name"] in names:
            raise RuleInvalid(f"{section}[{i}].name", f"'{item['name']}' appears twice")
        names.add(item["name"])
    return items


def _groups(items: Any, report: ImportReport) -> None:
    for i, item in enumerate(_named(items, "groups")):
        members = item.get("members", [])
        if not isinstance(members, list):
            raise RuleInvalid(f"groups[{i}].members", "members is a list of node ids")
        found = dict(Device.objects.filter(node_id__in=[m for m in members if isinstance(m, str)]).values_list("node_id", "pk"))
        for j, node_id in enumerate(members):
            if node_id not in found:
                raise RuleInvalid(f"groups[{i}].members[{j}]", f"no device {node_id!r}")
        group, created = Group.objects.get_or_create(name=item["name"])
        group.description = str(item.get("description", ""))[:2000]
        group.save()
        group.members.set(found.values())
        (report.created if created else report.replaced)["groups"].append(group.name)


def _scenes(actor: Actor, items: Any, report: ImportReport) -> None:
    for i, item in enumerate(_named(items, "scenes")):
        existing = Scene.objects.filter(name=item["name"]).first()
        if existing is not None:
            existing.delete()  # replaced whole: the members are checked again below
        try:
            scenes.create(actor, item)
        except RuleInvalid as invalid:
            raise _prefixed(f"scenes[{i}]", invalid) from None
        (report.replaced if existing else report.created)["scenes"].append(item["name"])


def _rules(actor: Actor, items: Any, report: ImportReport) -> None:
    for i, item in enumerate(_named(items, "rules")):
        existing = Rule.objects.filter(name=item["name"]).first()
        try:
            if existing is not None:
                rules.replace(actor, existing.pk, item)
            else:
                rules.create(actor, item)
        except RuleInvalid as invalid:
            raise _prefixed(f"rules[{i}]", invalid) from None
        (report.replaced if existing else report.created)["rules"].append(item["name"])
