"""What a firing does: a rule run and its actions, in order, with the rule's mode.

A firing starts a run (`start`), inside the evaluator's transaction, with the rule's row
locked: what is in flight for the rule is known exactly, and the run, its commands and the
engine's state commit together.

- **Modes** (`automation.engine.admit`) decide with the rule's runs in flight, i.e. waiting at
  a delay (`running`) or queued: `single` records a skipped run, `restart` cancels the runs in
  flight and starts, `queued` queues the run behind them (at most engine.MAX_QUEUED),
  `parallel` starts.
- **Actions** run in order: device and group commands and scenes through `send_command()`
  with the rule as actor (a refusal, an interlock included, is recorded in the run with its
  reason and does not stop the others); a webhook is queued for a Celery task after the
  commit (`automation.webhooks`); a `delay_s` stops the run as `running` until `resume_at`,
  when beat (`resume_due`, every second) goes on from the next action. The moment a delayed
  action runs is its due time: a hub that was down during the delay runs it when it is back,
  once (the run is locked and advanced in one transaction).
- A run that finishes starts the rule's next queued run. Saving or disabling the rule
  cancels its runs in flight (`cancel_in_flight`): a changed rule's actions are not the ones
  the waiting runs were started with.

Every run, when it starts, waits, finishes or is cancelled, is pushed to the operator pages
through /ws/live/ after its commit (`published`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.models import ActorType
from audit.services import Actor
from automation import engine
from automation.models import IN_FLIGHT, Rule, RuleRun, RunOutcome
from devices import services
from devices.models import Group
from hub.scopes import Scope

logger = logging.getLogger("meshhub.automation")


def rule_actor(rule: Rule) -> Actor:
    """A rule acts with the command scope only: it can send what its conditions ask, nothing else."""
    return Actor(ActorType.RULE, str(rule.pk), scopes=frozenset({Scope.COMMAND}))


def start(rule: Rule, parsed: engine.Rule, trigger: dict[str, Any], depth: int, now: datetime) -> RuleRun:
    """A firing of `rule` (locked by the caller's transaction) at `now`: the run it made."""
    in_flight = list(RuleRun.objects.filter(rule=rule, outcome__in=IN_FLIGHT).order_by("started_at", "pk"))
    running = sum(1 for r in in_flight if r.outcome == RunOutcome.RUNNING)
    admission = engine.admit(parsed.mode, running, len(in_flight) - running)
    if admission.decision == "skip":
        run = RuleRun.objects.create(
            rule=rule, started_at=now, trigger=trigger, outcome=RunOutcome.SKIPPED, reason=admission.reason[:500], depth=depth, finished_at=now
        )
        _stamp(rule, run)
        return run
    if admission.decision == "restart":
        _cancel(in_flight, "restart mode: cancelled by a new firing", now)
    queued = admission.decision == "queue"
    run = RuleRun.objects.create(
        rule=rule,
        started_at=now,
        trigger=trigger,
        outcome=RunOutcome.QUEUED if queued else RunOutcome.RUNNING,
        reason=admission.reason[:500] if queued else "",
        depth=depth,
    )
    if queued:
        _stamp(rule, run)
        return run
    advance(rule, parsed, run, now)
    return run


def advance(rule: Rule, parsed: engine.Rule, run: RuleRun, now: datetime) -> None:
    """Run `run`'s actions from `run.next_action` until a delay or the end."""
    actor = rule_actor(rule)
    actions = list(run.actions)
    for index in range(run.next_action, len(parsed.then)):
        action = parsed.then[index]
        if "delay_s" in action:
            run.next_action = index + 1
            run.resume_at = now + timedelta(seconds=action["delay_s"])
            run.outcome = RunOutcome.RUNNING
            run.reason = f"waiting {action['delay_s']:g} s at then[{index}]"
            run.actions = [*actions, {"action": index, "delay_s": action["delay_s"], "until": run.resume_at.isoformat()}]
            run.save()
            _stamp(rule, run)
            return
        actions.extend(_act(actor, run, len(actions), index, action))
    run.actions = actions
    run.next_action = len(parsed.then)
    run.resume_at = None
    run.finished_at = now
    run.outcome, run.reason = _outcome(actions)
    run.save()
    _stamp(rule, run)
    following = RuleRun.objects.filter(rule=rule, outcome=RunOutcome.QUEUED).order_by("started_at", "pk").first()
    if following is not None:
        following.outcome, following.reason = RunOutcome.RUNNING, ""
        advance(rule, parsed, following, now)


def _outcome(actions: list[dict[str, Any]]) -> tuple[str, str]:
    done = [a for a in actions if "delay_s" not in a]
    refused = [a for a in done if a.get("status") == "refused"]
    if done and len(refused) == len(done):
        return RunOutcome.REFUSED, "; ".join(a["reason"] for a in refused)[:500]
    kind = "commands" if all("command_id" in a for a in done) else "actions"
    reason = f"{len(done) - len(refused)} of {len(done)} {kind} sent" if done else "no actions"
    if refused:
        reason += ": " + "; ".join(f"{a.get('device') or a.get('scene') or a.get('group') or a.get('webhook') or 'action'}: {a['reason']}" for a in refused)
    return RunOutcome.FIRED, reason[:500]


def _stamp(rule: Rule, run: RuleRun) -> None:
    Rule.objects.filter(pk=rule.pk).update(last_fired_at=run.started_at, last_outcome=run.outcome)
    published(run)


def _cancel(in_flight: Iterable[RuleRun], reason: str, now: datetime) -> None:
    for run in in_flight:
        run.outcome, run.reason, run.resume_at, run.finished_at = RunOutcome.CANCELLED, reason[:500], None, now
        run.save(update_fields=["outcome", "reason", "resume_at", "finished_at"])
        published(run)


def cancel_in_flight(rule: Rule, reason: str) -> int:
    """Cancel the rule's runs waiting at a delay or queued (the rule was changed, disabled
    or lost a capability); the number cancelled."""
    in_flight = list(RuleRun.objects.select_for_update().filter(rule=rule, outcome__in=IN_FLIGHT))
    _cancel(in_flight, reason, timezone.now())
    return len(in_flight)


def resume_due(now: datetime | None = None) -> int:
    """Beat: runs whose delay is over go on, each in its own transaction with its rule locked
    (a second beat or worker finds it advanced and leaves it)."""
    now = now or timezone.now()
    due = list(RuleRun.objects.filter(outcome=RunOutcome.RUNNING, resume_at__lte=now).order_by("resume_at").values_list("pk", "rule_id"))
    resumed = 0
    for run_id, rule_id in due:
        try:
            with transaction.atomic():
                rule = Rule.objects.select_for_update().filter(pk=rule_id).first()
                run = RuleRun.objects.select_for_update().filter(pk=run_id, outcome=RunOutcome.RUNNING, resume_at__lte=now).first()
                if rule is None or run is None:
                    continue
                assert run.resume_at is not None
                advance(rule, engine.parse_rule(rule.document), run, run.resume_at)
                resumed += 1
        except Exception:
            logger.exception("resuming run %s of rule %s failed", run_id, rule_id)
    return resumed


def _act(actor: Actor, run: RuleRun, position: int, index: int, action: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries one action adds to the run (`position`: where its first one will be)."""
    value = action.get("value", services.MISSING)
    if "device" in action:
        return [_command(actor, action["device"], action, value)]
    if "group" in action:
        group = Group.objects.filter(name=action["group"]).first()
        if group is None:
            return [{"group": action["group"], "capability": action.get("capability"), "status": "refused", "reason": f"no group '{action['group']}'"}]
        nodes = list(group.members.order_by("node_id").values_list("node_id", flat=True))
        return [_command(actor, node_id, action, value) for node_id in nodes]
    if "scene" in action:
        from automation import scenes
        from automation.models import Scene

        scene = Scene.objects.filter(name=action["scene"]).first()
        if scene is None:
            return [{"scene": action["scene"], "command_id": None, "status": "refused", "reason": f"no scene '{action['scene']}'"}]
        return [{"scene": scene.name, **r.as_dict()} for r in scenes.run_members(actor, scene)]
    if "webhook" in action:
        from automation import webhooks

        return [webhooks.queue(run, position, index, action)]
    kind = next(iter(action))
    return [{"action": index, "status": "refused", "reason": f"unknown action '{kind}'"}]


def _command(actor: Actor, node_id: str, action: dict[str, Any], value: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"device": node_id, "capability": action.get("capability")}
    try:
        command = services.send_command(actor, node_id, action.get("action"), action.get("capability"), value)
    except services.CommandRejected as rejected:
        return {**entry, "command_id": None, "status": "refused", "reason": rejected.reason, **({"guard": rejected.guard} if rejected.guard else {})}
    return {**entry, "command_id": str(command.id), "status": command.status, "reason": ""}


def run_event(run: RuleRun) -> Any:
    """The run as the operator pages get it (hub.live)."""
    from hub import live

    return live.rule_run_event(run.rule_id, run.pk, run.started_at, run.outcome, run.reason, run.trigger_text, run.actions_text)


def published(run: RuleRun) -> None:
    """Push the run to the operator pages after its commit (hub.live)."""
    from hub import live

    event = run_event(run)
    transaction.on_commit(lambda: live.on_rule_run(event))


MISSED_RUNS_MAX = 500


def missed_events(rule_ids: Iterable[int], since: datetime) -> list[Any]:
    """What a page showing these rules since `since` (its render time) has not seen: the
    runs that started or ended after it, and those still in flight; oldest first, the
    newest `MISSED_RUNS_MAX` of them. Sent when its /ws/live/ (re)connects."""
    from django.db.models import Q

    changed = RuleRun.objects.filter(rule_id__in=list(rule_ids)).filter(Q(started_at__gt=since) | Q(finished_at__gt=since) | Q(finished_at__isnull=True))
    newest = list(changed.order_by("-started_at", "-pk")[:MISSED_RUNS_MAX])
    return [run_event(run) for run in reversed(newest)]


def prune(now: datetime | None = None, batch: int = 5000) -> int:
    """Delete finished runs older than MESHHUB_AUTOMATION_RUN_DAYS, in short batches; the
    number deleted. Each rule's latest run stays, whatever its age (its page says what it
    last did)."""
    from django.conf import settings
    from django.db.models import Max

    horizon = (now or timezone.now()) - timedelta(days=settings.AUTOMATION_RUN_DAYS)
    latest = set(RuleRun.objects.values("rule_id").annotate(last=Max("pk")).values_list("last", flat=True))
    deleted = 0
    while True:
        ids = list(RuleRun.objects.filter(started_at__lt=horizon).exclude(outcome__in=IN_FLIGHT).exclude(pk__in=latest).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += RuleRun.objects.filter(pk__in=ids).delete()[0]
