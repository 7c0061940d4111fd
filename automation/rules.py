"""Saving rules: create, replace, change and delete, for the API, the pages, the admin and
the import alike. Each checks the actor's scope itself (`command`: a rule sends commands),
validates the whole document (shape by the engine, then the fleet), writes the rule, its
input index and a fresh engine state in one transaction, and audits the outcome; a refusal
writes nothing but its audit event."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import Actor, Decision, authorize, record
from automation import engine, evaluator, runs, schedules
from automation.models import Rule, RuleInput, RuleState
from automation.validation import RuleInvalid, check_fleet, leaves
from hub.scopes import Scope

TOP_LEVEL = ("name", "description", "enabled", "mode", "cooldown_s", "when", "then")


def validate(document: Any) -> engine.Rule:
    """The parsed rule, or RuleInvalid naming the field and the reason."""
    if not isinstance(document, dict):
        raise RuleInvalid("", f"a rule is a JSON object, got {type(document).__name__}")
    try:
        parsed = engine.parse_rule(document)
    except engine.RuleError as error:
        raise RuleInvalid(error.field, error.reason) from None
    check_fleet(document)
    schedules.check(parsed)
    return parsed


def create(actor: Actor, document: Any) -> Rule:
    name = str(document.get("name", ""))[:100] if isinstance(document, dict) else ""
    authorize(actor, Scope.COMMAND, "automation.rule.create", target_type="rule", target_id=name)
    _validated(actor, "automation.rule.create", name, document)
    if Rule.objects.filter(name=document["name"]).exists():
        _refuse(actor, "automation.rule.create", name, RuleInvalid("name", f"a rule named '{document['name']}' exists already"))
    with transaction.atomic():
        rule = Rule(created_by=f"{actor.type}:{actor.id}")
        _store(rule, document)
        record(actor, "automation.rule.create", Decision.ALLOW, scope=Scope.COMMAND, target_type="rule", target_id=str(rule.pk), details={"name": rule.name})
    return rule


def replace(actor: Actor, rule_id: int, document: Any) -> Rule:
    authorize(actor, Scope.COMMAND, "automation.rule.update", target_type="rule", target_id=rule_id)
    rule = Rule.objects.get(pk=rule_id)
    _validated(actor, "automation.rule.update", str(rule_id), document)
    if Rule.objects.filter(name=document["name"]).exclude(pk=rule_id).exists():
        _refuse(actor, "automation.rule.update", str(rule_id), RuleInvalid("name", f"another rule is named '{document['name']}'"))
    with transaction.atomic():
        rule = Rule.objects.select_for_update().get(pk=rule_id)
        _store(rule, document)
        record(actor, "automation.rule.update", Decision.ALLOW, scope=Scope.COMMAND, target_type="rule", target_id=str(rule.pk), details={"name": rule.name})
    return rule


def change(actor: Actor, rule_id: int, fields: Any) -> Rule:
    """PATCH: the given top-level fields replace the document's, then it is checked whole."""
    rule = Rule.objects.get(pk=rule_id)
    if not isinstance(fields, dict):
        raise RuleInvalid("", f"a change is a JSON object, got {type(fields).__name__}")
    unknown = sorted(set(fields) - set(TOP_LEVEL))
    if unknown:
        raise RuleInvalid(unknown[0], f"unknown field; a rule has {', '.join(TOP_LEVEL)}")
    return replace(actor, rule_id, {**rule.document, **fields})


def delete(actor: Actor, rule_id: int) -> None:
    authorize(actor, Scope.COMMAND, "automation.rule.delete", target_type="rule", target_id=rule_id)
    with transaction.atomic():
        rule = Rule.objects.select_for_update().get(pk=rule_id)
        name = rule.name
        rule.delete()
        schedules.forget(rule_id)
        evaluator.inputs.invalidate()  # now (this thread) and after the commit (the others)
        transaction.on_commit(evaluator.inputs.invalidate)
        record(actor, "automation.rule.delete", Decision.ALLOW, scope=Scope.COMMAND, target_type="rule", target_id=str(rule_id), details={"name": name})


def _validated(actor: Actor, action: str, target: str, document: Any) -> engine.Rule:
    try:
        return validate(document)
    except RuleInvalid as invalid:
        _refuse(actor, action, target, invalid)
        raise  # unreachable: _refuse raises


def _refuse(actor: Actor, action: str, target: str, invalid: RuleInvalid) -> None:
    record(
        actor, action, Decision.DENY, scope=Scope.COMMAND, target_type="rule", target_id=target, reason=invalid.reason[:500], details={"field": invalid.field}
    )
    raise invalid


def _store(rule: Rule, document: dict[str, Any]) -> None:
    """The row, its input index and a fresh engine state (a changed rule starts over:
    timers and latches of the old conditions mean nothing for the new ones)."""
    rule.name = document["name"]
    rule.enabled = bool(document.get("enabled", True))
    rule.mode = document.get("mode", "single")
    rule.cooldown_s = float(document.get("cooldown_s", 0))
    rule.document = document
    rule.disabled_reason = ""
    rule.save()
    RuleInput.objects.filter(rule=rule).delete()
    inputs = {(c.get("device", ""), c.get("group", ""), c["capability"]) for _, c in leaves(document.get("when"), "when")}
    RuleInput.objects.bulk_create(RuleInput(rule=rule, node_id=d, group=g, capability=cap) for d, g, cap in sorted(inputs))
    RuleState.objects.update_or_create(rule=rule, defaults={"state": {}, "recheck_at": None})
    runs.cancel_in_flight(rule, "the rule was changed" if rule.enabled else "the rule was disabled")
    schedules.sync(rule.pk, rule.enabled, engine.parse_rule(document))
    evaluator.inputs.invalidate()  # now (this thread) and after the commit (the others)
    transaction.on_commit(evaluator.inputs.invalidate)
