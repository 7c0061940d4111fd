"""Rules kept true to the fleet: a device that loses a capability (a new firmware declares
fewer, a PLC point is removed, an operator deletes it) disables every rule that uses it,
with the reason shown on the rule, instead of leaving it to fail each time it fires."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import transaction

from audit.services import Actor, Decision, record
from automation import evaluator, runs, schedules
from automation.models import Rule
from automation.validation import RuleInvalid, check_fleet
from devices.models import Capability, Group
from hub.scopes import Scope

logger = logging.getLogger("meshhub.automation")


def capability_removed(sender: Any, instance: Capability, **kwargs: Any) -> None:
    """post_delete of a Capability: look at the rules once the deletion has committed."""
    node_id = instance.device.node_id if instance.device_id else ""
    if node_id:
        transaction.on_commit(lambda: recheck_rules_using(node_id))


def _mentions(rule: Rule, node_id: str, groups: set[str]) -> bool:
    text = json.dumps(rule.document)
    return json.dumps(node_id) in text or any(json.dumps(g) in text for g in groups)


def recheck_rules_using(node_id: str) -> list[int]:
    """Disable the enabled rules naming `node_id` (or a group it is in) that no longer pass
    the fleet checks; returns their ids."""
    groups = set(Group.objects.filter(members__node_id=node_id).values_list("name", flat=True))
    disabled = []
    for rule in Rule.objects.filter(enabled=True):
        if not _mentions(rule, node_id, groups):
            continue
        try:
            check_fleet(rule.document)
        except RuleInvalid as invalid:
            reason = f"disabled: {invalid.field}: {invalid.reason}"[:300]
            with transaction.atomic():
                Rule.objects.filter(pk=rule.pk).update(enabled=False, disabled_reason=reason)
                runs.cancel_in_flight(rule, reason)
                schedules.forget(rule.pk)
                evaluator.inputs.invalidate()  # now (this thread) and after the commit (the others)
                transaction.on_commit(evaluator.inputs.invalidate)
                record(
                    Actor.system("automation"),
                    "automation.rule.disable",
                    Decision.DENY,
                    scope=Scope.COMMAND,
                    target_type="rule",
                    target_id=str(rule.pk),
                    reason=reason,
                )
            logger.warning("rule %s (%s) %s", rule.pk, rule.name, reason)
            disabled.append(rule.pk)
    return disabled
