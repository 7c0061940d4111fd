"""The rollout driver (Celery: beat every few seconds, and at once when a deployment ends):
it times out what stopped answering, judges the current wave against the thresholds,
advances, pauses or completes the rollout, and asks the gateways to offer the release to
the devices of the current wave that are online, idle and not in safe mode, at most
`max_concurrent` at a time.

It takes a rollout id and holds the rollout's row lock while it decides, so two drives at
once (beat and an event) do the same work once; every step is idempotent, so a hub,
gateway or worker restart mid-rollout goes on from the rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import Actor, Decision, Entry, record_many
from devices.models import Device
from hub import messages
from hub.scopes import Scope
from ota import deployments, waves
from ota import statemachine as sm
from ota.models import Deployment, DeploymentState, DeviceFirmware, Rollout, RolloutState

logger = logging.getLogger("meshhub.ota")
SYSTEM = Actor.system("ota.driver")


@dataclass
class DriveReport:
    rollout: int
    state: str = ""
    timed_out: list[int] = field(default_factory=list)
    offered: list[str] = field(default_factory=list)
    verdict: str = ""


def send_to_node(node_id: str, event: str, data: dict[str, object]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(messages.node_group(node_id), messages.app_message("ota", event, data))


def _outcomes(qs: list[Deployment]) -> list[sm.Outcome | None]:
    return [sm.outcome(d.state, d.reason) for d in qs]


def drive(rollout_id: int) -> DriveReport:
    report = DriveReport(rollout_id)
    now = timezone.now()
    # A device chosen for an offer that went offline before it got it frees its place.
    Deployment.objects.filter(rollout_id=rollout_id, state=DeploymentState.QUEUED, offer_requested_at__isnull=False, device__online=False).update(
        offer_requested_at=None
    )
    # 1. Timeouts, each under its own row lock (deployments.apply).
    due = list(Deployment.objects.filter(rollout_id=rollout_id, state__in=deployments.ACTIVE, deadline_at__lte=now).values_list("pk", "device__node_id"))
    for pk, node_id in due:
        try:
            applied = deployments.apply(pk, sm.Timeout(), actor=SYSTEM, now=now)
        except sm.TransitionRefused:
            continue
        report.timed_out.append(pk)
        if any(isinstance(a, sm.SendAbort) for a in applied.actions):
            send_to_node(node_id, "abort", {"deployment": pk, "reason": applied.state.reason})
    audit: list[Entry] = []
    with transaction.atomic():
        chosen = _decide(rollout_id, report, now, audit)
        # The audit chain's head is locked last: a row lock taken after it (a deployment's,
        # above) could wait for a device event holding that row and waiting for the head.
        record_many(audit)
    for deployment in chosen:
        send_to_node(deployment.device.node_id, "offer", {"deployment": deployment.pk})
    return report


def _decide(rollout_id: int, report: DriveReport, now: datetime, audit: list[Entry]) -> list[Deployment]:
    """Steps 2 and 3 under the rollout's row lock: the wave's verdict, then the devices to
    offer to (marked in their rows); the audit events go to `audit` for the caller."""
    rollout = Rollout.objects.select_for_update(of=("self",)).select_related("release").filter(pk=rollout_id).first()
    if rollout is None:
        return []  # deleted meanwhile
    report.state = rollout.state
    if rollout.state != RolloutState.RUNNING:
        return []
    rows = list(Deployment.objects.filter(rollout=rollout).select_related("device"))
    current = [d for d in rows if d.wave == rollout.wave]
    verdict = waves.wave_verdict(
        waves.Tally.of(_outcomes(current)),
        waves.Tally.of(_outcomes(rows)),
        success_threshold=rollout.success_threshold,
        min_sample=rollout.min_sample,
        error_threshold=rollout.error_threshold,
    )
    report.verdict = f"{verdict.kind}: {verdict.reason}"
    last_wave = max((d.wave for d in rows), default=0)
    if verdict.kind == waves.VerdictKind.PAUSE:
        _set_state(rollout, RolloutState.PAUSED, verdict.reason, audit)
        report.state = rollout.state
        return []
    if verdict.kind == waves.VerdictKind.ADVANCE:
        if rollout.wave >= last_wave:
            # Complete once nothing is in flight and no device still waits for its
            # offer; a device offline for longer than the grace is left queued, and said
            # so. The grace is what keeps a device that is only rebooting (from the last
            # rollout, say) from being skipped because the drive came in its second away.
            unfinished = sum(1 for d in rows if d.state in deployments.ACTIVE or (d.state == DeploymentState.QUEUED and _may_come_back(d.device, now)))
            if not unfinished:
                never = sum(1 for d in rows if d.state == DeploymentState.QUEUED)
                grace = f"{settings.OTA_OFFLINE_GRACE_S:g} s"
                reason = f"every wave passed: {verdict.reason}" + (f"; {never} never offered (offline for more than {grace})" if never else "")
                _set_state(rollout, RolloutState.COMPLETED, reason, audit)
                report.state = rollout.state
                return []
            report.verdict += f"; completes when {unfinished} more finish"
        elif rollout.approval and not rollout.awaiting_approval:
            rollout.awaiting_approval = True
            rollout.reason = f"wave {rollout.wave + 1} done ({verdict.reason}); waiting for approval of wave {rollout.wave + 2}"
            rollout.save(update_fields=["awaiting_approval", "reason"])
            audit.append(
                Entry(
                    SYSTEM,
                    "ota.rollout.awaiting_approval",
                    Decision.ALLOW,
                    scope=Scope.OTA,
                    target_type="rollout",
                    target_id=str(rollout.pk),
                    reason=rollout.reason,
                )
            )
        elif not rollout.awaiting_approval:  # the next wave
            rollout.wave += 1
            rollout.reason = f"wave {rollout.wave} passed: {verdict.reason}"
            rollout.save(update_fields=["wave", "reason"])
            audit.append(
                Entry(
                    SYSTEM,
                    "ota.rollout.wave",
                    Decision.ALLOW,
                    scope=Scope.OTA,
                    target_type="rollout",
                    target_id=str(rollout.pk),
                    details={"wave": rollout.wave},
                )
            )
            current = [d for d in rows if d.wave <= rollout.wave]
    # 3. Offers to the current wave (and earlier ones still waiting), within the budget.
    active = sum(1 for d in rows if d.state in deployments.ACTIVE or (d.state == DeploymentState.QUEUED and d.offer_requested_at is not None))
    budget = waves.offer_budget(rollout.max_concurrent, active)
    if budget <= 0 or rollout.awaiting_approval:
        return []
    queued = [d for d in rows if d.wave <= rollout.wave and d.state == DeploymentState.QUEUED and d.offer_requested_at is None]
    busy_elsewhere = set(
        Deployment.objects.filter(device__in=[d.device_id for d in queued], state__in=deployments.ACTIVE)
        .exclude(rollout=rollout)
        .values_list("device_id", flat=True)
    )
    safe_mode = set(DeviceFirmware.objects.filter(device__in=[d.device_id for d in queued], safe_mode=True).values_list("device_id", flat=True))
    for deployment in queued:
        if budget <= 0:
            break
        if not deployment.device.online or deployment.device_id in busy_elsewhere or deployment.device_id in safe_mode:
            continue
        report.offered.append(deployment.device.node_id)
        budget -= 1
    chosen = [d for d in queued if d.device.node_id in report.offered]
    # Kept in the row: the device's gateway offers at its next 1 s sweep even if the nudge
    # below is lost (Redis away, or the in-process layer of the embedded hub).
    Deployment.objects.filter(pk__in=[d.pk for d in chosen], offer_requested_at__isnull=True).update(offer_requested_at=now)
    return chosen


def _set_state(rollout: Rollout, state: str, reason: str, audit: list[Entry]) -> None:
    rollout.state = state
    rollout.reason = reason[:300]
    if state in (RolloutState.COMPLETED, RolloutState.ABORTED):
        rollout.finished_at = timezone.now()
    rollout.save(update_fields=["state", "reason", "finished_at"])
    decision = Decision.DENY if state == RolloutState.PAUSED else Decision.ALLOW
    audit.append(Entry(SYSTEM, f"ota.rollout.{state}", decision, scope=Scope.OTA, target_type="rollout", target_id=str(rollout.pk), reason=reason[:500]))


def running_rollouts() -> list[int]:
    return list(Rollout.objects.filter(state=RolloutState.RUNNING).values_list("pk", flat=True))


def _may_come_back(device: Device, now: datetime) -> bool:
    """Online, or offline for less than MESHHUB_OTA_OFFLINE_GRACE_S: its offer may still come."""
    if device.online:
        return True
    return device.last_seen is not None and (now - device.last_seen).total_seconds() < settings.OTA_OFFLINE_GRACE_S
