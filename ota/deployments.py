"""A Deployment row and the pure state machine (ota/statemachine.py) meet here: the row
is loaded into a `DeploymentState`, an event applied under the row's lock, the result
written back, and a finished deployment audited and handed to the rollout driver.

Everything that changes a deployment (the gateway's transfer, the device's boot, health
and complete frames, the driver's timeouts, operator controls) goes through `apply()`, so
two of them at once are serialised on the row and the machine's rules hold whatever the
order. A refused event changes nothing and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import Actor, Decision, record
from hub.scopes import Scope
from ota import statemachine as sm
from ota.models import Deployment, DeploymentState

logger = logging.getLogger("meshhub.ota")

ACTIVE = {s.value for s in sm.ACTIVE_STATES}
TERMINAL = {s.value for s in sm.TERMINAL_STATES}
TRANSFER_STATES = {DeploymentState.OFFERED, DeploymentState.TRANSFERRING, DeploymentState.VERIFYING}
INSTALL_STATES = {DeploymentState.INSTALLING, DeploymentState.REBOOTING, DeploymentState.HEALTH_CHECK}


def params_for(deployment: Deployment) -> sm.DeploymentParams:
    rollout = deployment.rollout
    release = rollout.release
    return sm.DeploymentParams(version=release.version, size=release.size, health_beacons=rollout.health_beacons, deadline_s=float(rollout.deadline_s))


def _ts(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts is not None else None


def to_state(deployment: Deployment, sent_offset: int | None = None) -> sm.DeploymentState:
    return sm.DeploymentState(
        params=params_for(deployment),
        state=sm.State(deployment.state),
        acked_offset=deployment.offset,
        sent_offset=deployment.offset if sent_offset is None else sent_offset,
        beacons=deployment.beacons,
        complete_received=deployment.complete_received,
        deadline=_ts(deployment.deadline_at),
        reason=deployment.reason,
    )


def _write(deployment: Deployment, state: sm.DeploymentState, now: datetime) -> None:
    old_state = deployment.state
    changed = old_state != state.state.value
    deployment.state = state.state.value
    deployment.offset = state.acked_offset
    deployment.beacons = state.beacons
    deployment.complete_received = state.complete_received
    deployment.deadline_at = _dt(state.deadline)
    deployment.reason = state.reason[:300]
    if changed:
        deployment.state_changed_at = now
    deployment.progress_at = now
    if state.terminal and deployment.finished_at is None:
        deployment.finished_at = now
        # Ended on the hub (timeout, abort) while the device held a transfer: it must be told,
        # by its session now or at the gateway's next sweep (ota/transfer.py waiting_for).
        deployment.abort_pending = changed and old_state in TRANSFER_STATES and state.state in (sm.State.FAILED, sm.State.ABORTED)
    deployment.save(
        update_fields=[
            "state",
            "offset",
            "beacons",
            "complete_received",
            "deadline_at",
            "reason",
            "state_changed_at",
            "finished_at",
            "holder",
            "offer_requested_at",
        ]
    )


@dataclass(frozen=True)
class Applied:
    deployment: Deployment
    state: sm.DeploymentState
    actions: tuple[sm.Action, ...]
    before: str


def apply(
    deployment_id: int, event: sm.Event, *, actor: Actor | None = None, sent_offset: int | None = None, holder: str | None = None, now: datetime | None = None
) -> Applied:
    """Apply `event` to the deployment under its row lock; raises sm.TransitionRefused.

    `holder` is the device session doing the transfer: an Offer makes it the holder, and
    its later transfer events apply only while it still is (a newer session of the device,
    on another gateway after a crash, takes the transfer over; the older one's writes are
    then refused instead of undoing the newer one's)."""
    now = now or timezone.now()
    with transaction.atomic():
        # `of=("self",)`: the joined rollout, release and device rows are read, not locked.
        # Locking the rollout here too would take it after the deployment, the reverse of
        # the driver's order (rollout, then its deployments): a deadlock on PostgreSQL.
        deployment = Deployment.objects.select_for_update(of=("self",)).select_related("rollout__release", "device").get(pk=deployment_id)
        before = deployment.state
        state = to_state(deployment, sent_offset)
        if holder is not None and not isinstance(event, sm.Offer) and deployment.holder and deployment.holder != holder:
            raise sm.TransitionRefused(state, event, "another session of the device holds this transfer now")
        result = sm.transition(state, event, now.timestamp())
        if isinstance(event, sm.Offer):
            deployment.holder = holder or ""
            deployment.offer_requested_at = None
        _write(deployment, result.state, now)
        for action in result.actions:
            if isinstance(action, sm.Finalize):
                _finished(deployment, before, action, actor)
    return Applied(deployment, result.state, result.actions, before)


def save_progress(deployment_id: int, state: sm.DeploymentState, *, expected: set[str], holder: str) -> bool:
    """The transfer's offset and deadline, written without an event (throttled by the
    gateway); False when the row left `expected` or `holder` meanwhile (aborted, timed
    out, taken over)."""
    updated = Deployment.objects.filter(pk=deployment_id, state__in=expected, holder=holder).update(
        offset=state.acked_offset, deadline_at=_dt(state.deadline), progress_at=timezone.now()
    )
    return updated == 1


def _finished(deployment: Deployment, before: str, action: sm.Finalize, actor: Actor | None) -> None:
    decision = Decision.ALLOW if action.outcome == sm.Outcome.SUCCESS else Decision.DENY
    record(
        actor or Actor.system("ota"),
        f"ota.deployment.{deployment.state}",
        decision,
        scope=Scope.OTA,
        target_type="device",
        target_id=deployment.device.node_id,
        reason=action.reason[:500],
        details={"deployment": deployment.pk, "rollout": deployment.rollout_id, "release": deployment.rollout.release.version, "from": before},
    )
    rollout_id = deployment.rollout_id
    transaction.on_commit(lambda: _drive_soon(rollout_id))


def _drive_soon(rollout_id: int) -> None:
    from ota.tasks import drive_rollout

    try:
        # A drive not picked up within a minute is stale (beat drives every few seconds anyway).
        drive_rollout.apply_async((rollout_id,), expires=60)
    except Exception:  # the broker is away: beat's periodic drive picks it up
        logger.warning("could not queue the drive of rollout %s", rollout_id, exc_info=True)


def catch_up(deployment_id: int, node_id: str, version: str, actor: Actor) -> None:
    """A device booted a new image on trial for this deployment, but the hub missed the end
    of its transfer (the last frames of a session that closed as the device rebooted, still
    being handled, or a gateway that died, or a session that took the transfer over): the
    boot proves the device holds, verified and installed the image (and it will sign its
    `ota.complete` with its own key), so the machine is walked to `rebooting`, where the
    boot frame takes it on."""
    deployment = Deployment.objects.select_related("rollout__release").filter(pk=deployment_id, device__node_id=node_id).first()
    if deployment is None or deployment.rollout.release.version != version:
        return
    size = deployment.rollout.release.size
    done: list[sm.Event] = [sm.ChunkAcked(size)] if deployment.offset < size else []
    done += [sm.Verified(True), sm.Rebooting()]
    steps: dict[str, list[sm.Event]] = {
        DeploymentState.QUEUED: [sm.Offer(), sm.Accepted(deployment.offset), *done],
        DeploymentState.OFFERED: [sm.Accepted(deployment.offset), *done],
        DeploymentState.TRANSFERRING: done,
        DeploymentState.VERIFYING: [sm.Verified(True), sm.Rebooting()],
        DeploymentState.INSTALLING: [sm.Rebooting()],
    }
    for event in steps.get(deployment.state, []):
        try:
            apply(deployment_id, event, actor=actor, sent_offset=size)
        except sm.TransitionRefused as refused:
            logger.info("deployment %s could not catch up with the boot of %s: %s", deployment_id, node_id, refused.reason)
            return


def current_for(node_id: str, states: set[Any]) -> Deployment | None:
    """The device's deployment in one of `states`, of a rollout that is not finished."""
    return (
        Deployment.objects.select_related("rollout__release", "device")
        .filter(device__node_id=node_id, state__in=states, rollout__state__in=["running", "paused"])
        .order_by("-rollout__created_at")
        .first()
    )
