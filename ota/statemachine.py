"""The Deployment state machine: one device x one release (pure: stdlib only, no Django).

The Celery rollout driver and the gateway feed it events (frames from the device,
operator controls, the clock) and carry out the actions it returns; the model stores
the resulting :class:`DeploymentState`. Keeping the rules here lets every transition,
timeout and refusal be tested without a database (ARCHITECTURE §6 "OTA", §9.1).

::

    queued ─Offer→ offered ─Accepted→ transferring ─ChunkAcked(last)→ verifying
      ↑  (Disconnected: back to queued, the last acked offset kept for the resume)
    verifying ─Verified(ok)→ installing ─Rebooting→ rebooting ─Booted(new version)→
    health_check ─N x HealthBeacon(ok) + Completed(signature_valid)→ succeeded

    terminal: succeeded, rejected, failed, rolled_back, aborted

Decisions worth knowing before changing anything:

* The final :class:`ChunkAcked` (offset == size) *is* "transfer done": the device
  then hashes and checks the image and answers ``ota.verify``. There is no separate
  transfer-done event to get out of step with the acks.
* A dropped connection before the device verified (offered, transferring,
  verifying) sends the deployment back to ``queued`` with ``acked_offset`` kept; the
  next :class:`Accepted` may resume at any chunk boundary up to that offset, never
  beyond. From ``installing`` on a drop is expected (the device reboots) and changes
  nothing: the overall deadline keeps running.
* The overall deadline (``deadline_s``, default 600) starts when the device reports a
  good verification and covers install, reboot and health check. When it passes the
  deployment is ``rolled_back``: an unconfirmed slot is reverted by the device's own
  boot guard, so the machine never sends ``ota.rollback`` itself (to a device that
  already reverted that would switch it back to the bad slot).
* A failed health beacon is ``rolled_back`` at once, for the same reason.
* ``ota.complete`` with a bad signature is refused (it proves nothing); a valid one
  before the N-th beacon is remembered and the N-th beacon then succeeds.
* Abort is possible until the device reports a good verification; from
  ``installing`` on it is refused (the device is committed; force a rollback after).
* Counting (:func:`outcome`): ``succeeded`` is a success; ``failed``,
  ``rolled_back`` and ``rejected`` are errors, except a ``busy`` rejection, which
  like ``aborted`` is neutral: it says nothing about the release.

Times are seconds as floats (``datetime.timestamp()``); the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import ClassVar, Final, NamedTuple


class State(StrEnum):
    QUEUED = "queued"
    OFFERED = "offered"
    TRANSFERRING = "transferring"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    HEALTH_CHECK = "health_check"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


TERMINAL_STATES: Final = frozenset({State.SUCCEEDED, State.REJECTED, State.FAILED, State.ROLLED_BACK, State.ABORTED})
#: Offered and not finished: what ``max_concurrent`` limits.
ACTIVE_STATES: Final = frozenset({State.OFFERED, State.TRANSFERRING, State.VERIFYING, State.INSTALLING, State.REBOOTING, State.HEALTH_CHECK})
#: Before the device reported a good verification: abort still applies, a dropped
#: connection means "offer again and resume".
_PRE_INSTALL: Final = frozenset({State.OFFERED, State.TRANSFERRING, State.VERIFYING})
_BOOTING: Final = frozenset({State.INSTALLING, State.REBOOTING, State.HEALTH_CHECK})

OFFER_TIMEOUT_S: Final = 60.0
CHUNK_ACK_TIMEOUT_S: Final = 30.0
VERIFY_TIMEOUT_S: Final = 60.0
DEFAULT_DEADLINE_S: Final = 600.0
DEFAULT_HEALTH_BEACONS: Final = 3
DEFAULT_CHUNK_SIZE: Final = 4096
DEFAULT_WINDOW: Final = 8


class Outcome(StrEnum):
    """How a finished deployment counts towards the rollout's thresholds."""

    SUCCESS = "success"
    ERROR = "error"
    NEUTRAL = "neutral"


#: Device reject reasons that say nothing about the release (first word of the reason).
NEUTRAL_REJECT_REASONS: Final = frozenset({"busy"})


def outcome(state: State | str, reason: str = "") -> Outcome | None:
    """How a deployment in ``state`` (with its stored ``reason``) counts; None while it is not finished."""
    state = State(state)
    if state not in TERMINAL_STATES:
        return None
    if state is State.SUCCEEDED:
        return Outcome.SUCCESS
    if state is State.ABORTED:
        return Outcome.NEUTRAL
    if state is State.REJECTED and reject_code(reason) in NEUTRAL_REJECT_REASONS:
        return Outcome.NEUTRAL
    return Outcome.ERROR


def reject_code(reason: str) -> str:
    """The device's reject code: the reason's first word (``"busy: installing"`` -> ``"busy"``)."""
    return reason.split(":", 1)[0].strip().lower()


# --- parameters and state -------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentParams:
    """What one deployment is held to: the release, the transfer shape and the rollout's limits."""

    version: str
    size: int
    chunk_size: int = DEFAULT_CHUNK_SIZE
    window: int = DEFAULT_WINDOW
    health_beacons: int = DEFAULT_HEALTH_BEACONS
    deadline_s: float = DEFAULT_DEADLINE_S
    offer_timeout_s: float = OFFER_TIMEOUT_S
    chunk_ack_timeout_s: float = CHUNK_ACK_TIMEOUT_S
    verify_timeout_s: float = VERIFY_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.version:
            raise ValueError("version must not be empty")
        for name in ("size", "chunk_size", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.health_beacons, bool) or not isinstance(self.health_beacons, int) or self.health_beacons < 0:
            raise ValueError(f"health_beacons must be an integer >= 0, got {self.health_beacons!r}")
        for name in ("deadline_s", "offer_timeout_s", "chunk_ack_timeout_s", "verify_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class DeploymentState:
    """Everything the machine needs between two events; what the Deployment row stores.

    ``acked_offset``: the device holds every byte below it (what a resume may start
    from). ``sent_offset``: chunks up to here are on the wire; the window is
    ``sent_offset - acked_offset``. ``deadline``: when :class:`Timeout` applies
    (None: no timer runs in this state).
    """

    params: DeploymentParams
    state: State = State.QUEUED
    acked_offset: int = 0
    sent_offset: int = 0
    beacons: int = 0
    complete_received: bool = False
    deadline: float | None = None
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def outcome(self) -> Outcome | None:
        return outcome(self.state, self.reason)


def new_deployment(params: DeploymentParams) -> DeploymentState:
    return DeploymentState(params=params)


def is_due(state: DeploymentState, now: float) -> bool:
    """True when a :class:`Timeout` would be accepted now (the driver's periodic check)."""
    return state.deadline is not None and now >= state.deadline


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """The driver picked this deployment (wave, budget, device online and idle): send ``ota.offer``."""

    name: ClassVar[str] = "offer"


@dataclass(frozen=True)
class Accepted:
    """``ota.accept``: the device takes the offer and wants bytes from ``resume_offset`` on."""

    resume_offset: int = 0
    name: ClassVar[str] = "accepted"


@dataclass(frozen=True)
class Rejected:
    """``ota.reject``: incompatible, downgrade, bad signature, busy (the first word is the code)."""

    reason: str
    name: ClassVar[str] = "rejected"


@dataclass(frozen=True)
class ChunkAcked:
    """``ota.chunk_ack``: the device now holds every byte below ``offset`` (cumulative)."""

    offset: int
    name: ClassVar[str] = "chunk_acked"


@dataclass(frozen=True)
class Verified:
    """``ota.verify``: the device's own hash and manifest-signature check of the whole image."""

    ok: bool
    reason: str = ""
    name: ClassVar[str] = "verified"


@dataclass(frozen=True)
class Installing:
    """``ota.status installing``: a confirmation; the good verification already moved us there."""

    name: ClassVar[str] = "installing"


@dataclass(frozen=True)
class Rebooting:
    """``ota.status rebooting``: the inactive slot is written, the device restarts into it."""

    name: ClassVar[str] = "rebooting"


@dataclass(frozen=True)
class FailureReported:
    """``ota.status failed``: the device gave up (flash write, out of space...) and stays on its slot."""

    reason: str
    name: ClassVar[str] = "failure_reported"


@dataclass(frozen=True)
class Booted:
    """``boot``: which slot and version came up, and why (power-on, ota, watchdog, panic, rollback)."""

    slot: str
    version: str
    reason: str
    name: ClassVar[str] = "booted"


@dataclass(frozen=True)
class HealthBeacon:
    """``health``: one beacon after the boot; ``ok`` False means the device's health check failed."""

    ok: bool
    name: ClassVar[str] = "health_beacon"


@dataclass(frozen=True)
class Completed:
    """``ota.complete``: the success handshake; ``signature_valid`` is the gateway's check of the device key."""

    signature_valid: bool
    name: ClassVar[str] = "completed"


@dataclass(frozen=True)
class Timeout:
    """The clock: applies when ``now`` (the transition's argument) reached ``state.deadline``."""

    name: ClassVar[str] = "timeout"


@dataclass(frozen=True)
class Abort:
    """An operator (or the rollout's abort) stops this deployment."""

    reason: str = "aborted by an operator"
    name: ClassVar[str] = "abort"


@dataclass(frozen=True)
class RollbackReported:
    """The device says it reverted to the other slot (e.g. from its boot guard)."""

    reason: str
    name: ClassVar[str] = "rollback_reported"


@dataclass(frozen=True)
class Disconnected:
    """The device's connection closed."""

    name: ClassVar[str] = "disconnected"


Event = (
    Offer | Accepted | Rejected | ChunkAcked | Verified | Installing | Rebooting | FailureReported | Booted | HealthBeacon
    | Completed | Timeout | Abort | RollbackReported | Disconnected
)  # fmt: skip


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class SendOffer:
    """Send ``ota.offer`` (release id, version, size, sha256, manifest, chunk size); ``resume_from`` is informative."""

    resume_from: int
    name: ClassVar[str] = "send_offer"


@dataclass(frozen=True)
class SendChunk:
    """Send ``ota.chunk`` with the image's bytes ``[offset, offset + length)``."""

    offset: int
    length: int
    name: ClassVar[str] = "send_chunk"


@dataclass(frozen=True)
class SendAbort:
    """Send the signed ``ota.abort``: the device drops the partial image."""

    reason: str
    name: ClassVar[str] = "send_abort"


@dataclass(frozen=True)
class Finalize:
    """The deployment reached a terminal state: record it, count it for the rollout, audit it."""

    outcome: Outcome
    reason: str
    name: ClassVar[str] = "finalize"


Action = SendOffer | SendChunk | SendAbort | Finalize


class Transition(NamedTuple):
    state: DeploymentState
    actions: tuple[Action, ...] = ()


class TransitionRefused(ValueError):
    """The event does not apply in this state; nothing changed. ``reason`` says why."""

    def __init__(self, state: DeploymentState, event: Event, reason: str) -> None:
        super().__init__(f"{event.name} refused in {state.state}: {reason}")
        self.state = state
        self.event = event
        self.reason = reason


# --- the machine ----------------------------------------------------------------------


def transition(state: DeploymentState, event: Event, now: float) -> Transition:
    """Apply ``event`` at time ``now``: the new state and the actions for the driver.

    Raises :class:`TransitionRefused` (and changes nothing) when the event does not
    apply in the current state or carries impossible values.
    """
    if state.terminal:
        raise TransitionRefused(state, event, f"the deployment already finished ({state.state})")
    handler = _HANDLERS.get((state.state, type(event)))
    if handler is None:
        raise TransitionRefused(state, event, _not_expected(state.state))
    return handler(state, event, now)


def _not_expected(current: State) -> str:
    return f"not expected while {current}; expected one of: {', '.join(sorted(_EXPECTED[current]))}"


def _finish(state: DeploymentState, to: State, reason: str, *extra: Action) -> Transition:
    new = replace(state, state=to, deadline=None, reason=reason)
    result = outcome(to, reason)
    assert result is not None
    return Transition(new, (*extra, Finalize(result, reason)))


def _fill_window(state: DeploymentState) -> tuple[DeploymentState, tuple[SendChunk, ...]]:
    """Send chunks from ``sent_offset`` until ``window`` chunks are outstanding or the image is out."""
    p = state.params
    chunks: list[SendChunk] = []
    sent = state.sent_offset
    outstanding = -(-(sent - state.acked_offset) // p.chunk_size)
    while sent < p.size and outstanding < p.window:
        length = min(p.chunk_size, p.size - sent)
        chunks.append(SendChunk(sent, length))
        sent += length
        outstanding += 1
    return replace(state, sent_offset=sent), tuple(chunks)


def _on_offer(state: DeploymentState, event: Event, now: float) -> Transition:
    p = state.params
    reason = f"offered; resumes from offset {state.acked_offset}" if state.acked_offset else ""
    new = replace(state, state=State.OFFERED, sent_offset=state.acked_offset, deadline=now + p.offer_timeout_s, reason=reason)
    return Transition(new, (SendOffer(state.acked_offset),))


def _on_accepted(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Accepted)
    p, offset = state.params, event.resume_offset
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise TransitionRefused(state, event, f"resume offset {offset!r} is not a byte offset")
    if offset > state.acked_offset:
        raise TransitionRefused(state, event, f"resume offset {offset} beyond the last acked offset {state.acked_offset}")
    if offset % p.chunk_size and offset != p.size:
        raise TransitionRefused(state, event, f"resume offset {offset} is not a chunk boundary (chunk size {p.chunk_size})")
    if offset == p.size:
        new = replace(state, state=State.VERIFYING, acked_offset=offset, sent_offset=offset, deadline=now + p.verify_timeout_s, reason="")
        return Transition(new)
    new = replace(state, state=State.TRANSFERRING, acked_offset=offset, sent_offset=offset, deadline=now + p.chunk_ack_timeout_s, reason="")
    new, chunks = _fill_window(new)
    return Transition(new, chunks)


def _on_rejected(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Rejected)
    return _finish(state, State.REJECTED, event.reason.strip() or "rejected without a reason")


def _on_chunk_acked(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, ChunkAcked)
    p, offset = state.params, event.offset
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TransitionRefused(state, event, f"ack offset {offset!r} is not a byte offset")
    if offset <= state.acked_offset:
        raise TransitionRefused(state, event, f"ack for offset {offset} not beyond the last acked offset {state.acked_offset}")
    if offset > state.sent_offset:
        raise TransitionRefused(state, event, f"ack for offset {offset} beyond what was sent ({state.sent_offset})")
    if offset % p.chunk_size and offset != p.size:
        raise TransitionRefused(state, event, f"ack for offset {offset} is not a chunk end (chunk size {p.chunk_size}, size {p.size})")
    if offset == p.size:
        new = replace(state, state=State.VERIFYING, acked_offset=offset, deadline=now + p.verify_timeout_s)
        return Transition(new)
    new, chunks = _fill_window(replace(state, acked_offset=offset, deadline=now + p.chunk_ack_timeout_s))
    return Transition(new, chunks)


def _on_verified(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Verified)
    if not event.ok:
        return _finish(state, State.FAILED, f"verification failed on the device: {event.reason or 'no reason given'}")
    return Transition(replace(state, state=State.INSTALLING, deadline=now + state.params.deadline_s))


def _unchanged(state: DeploymentState, event: Event, now: float) -> Transition:
    return Transition(state)


def _on_rebooting(state: DeploymentState, event: Event, now: float) -> Transition:
    return Transition(replace(state, state=State.REBOOTING))


def _on_failure_reported(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, FailureReported)
    return _finish(state, State.FAILED, f"the device reported a failure: {event.reason or 'no reason given'}")


def _on_booted(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Booted)
    target = state.params.version
    if event.reason == "rollback" or event.version != target:
        reason = f"the device booted {event.version} from slot {event.slot} (boot reason {event.reason}) instead of {target}"
        return _finish(state, State.ROLLED_BACK, reason)
    if state.state is State.HEALTH_CHECK:
        reason = f"rebooted during the health check (boot reason {event.reason}); health beacons count again"
    else:
        reason = ""
    return Transition(replace(state, state=State.HEALTH_CHECK, beacons=0, complete_received=False, reason=reason))


def _on_health_beacon(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, HealthBeacon)
    required = state.params.health_beacons
    if not event.ok:
        return _finish(state, State.ROLLED_BACK, f"health check failed after {state.beacons} of {required} good beacons; the device reverts")
    new = replace(state, beacons=state.beacons + 1)
    if new.complete_received and new.beacons >= required:
        return _succeed(new)
    return Transition(new)


def _on_completed(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Completed)
    if not event.signature_valid:
        raise TransitionRefused(state, event, "the ota.complete signature does not verify with the device key")
    if state.complete_received:
        raise TransitionRefused(state, event, "ota.complete already received")
    new = replace(state, complete_received=True)
    if new.beacons >= state.params.health_beacons:
        return _succeed(new)
    return Transition(new)


def _succeed(state: DeploymentState) -> Transition:
    return _finish(state, State.SUCCEEDED, f"{state.beacons} health beacons and a signed ota.complete")


def _on_timeout(state: DeploymentState, event: Event, now: float) -> Transition:
    if state.deadline is None:
        raise TransitionRefused(state, event, "no timer runs in this state")
    if now < state.deadline:
        raise TransitionRefused(state, event, f"not due: the deadline is {state.deadline:.3f}, now is {now:.3f}")
    p = state.params
    if state.state is State.OFFERED:
        reason = f"no answer to the offer within {p.offer_timeout_s:g} s"
    elif state.state is State.TRANSFERRING:
        reason = f"no chunk ack within {p.chunk_ack_timeout_s:g} s (acked {state.acked_offset} of {p.size} bytes)"
    elif state.state is State.VERIFYING:
        reason = f"no verification result within {p.verify_timeout_s:g} s"
    else:
        reason = (
            f"deadline of {p.deadline_s:g} s passed while {state.state} "
            f"({state.beacons} of {p.health_beacons} health beacons, ota.complete {'received' if state.complete_received else 'missing'}); "
            "the device's boot guard reverts an unconfirmed slot"
        )
        return _finish(state, State.ROLLED_BACK, reason)
    return _finish(state, State.FAILED, reason, SendAbort(reason))


def _on_abort(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, Abort)
    if state.state is State.QUEUED:
        return _finish(state, State.ABORTED, event.reason)
    return _finish(state, State.ABORTED, event.reason, SendAbort(event.reason))


def _on_rollback_reported(state: DeploymentState, event: Event, now: float) -> Transition:
    assert isinstance(event, RollbackReported)
    return _finish(state, State.ROLLED_BACK, f"the device rolled back: {event.reason or 'no reason given'}")


def _on_disconnected(state: DeploymentState, event: Event, now: float) -> Transition:
    if state.state in _BOOTING:
        return Transition(state)
    reason = f"connection lost at offset {state.acked_offset} of {state.params.size}; resumes on the next offer"
    return Transition(replace(state, state=State.QUEUED, sent_offset=state.acked_offset, deadline=None, reason=reason))


_HANDLERS: Final[dict[tuple[State, type[Event]], Callable[[DeploymentState, Event, float], Transition]]] = {
    (State.QUEUED, Offer): _on_offer,
    (State.QUEUED, Abort): _on_abort,
    (State.OFFERED, Accepted): _on_accepted,
    (State.OFFERED, Rejected): _on_rejected,
    (State.OFFERED, Timeout): _on_timeout,
    (State.OFFERED, Abort): _on_abort,
    (State.OFFERED, Disconnected): _on_disconnected,
    (State.TRANSFERRING, ChunkAcked): _on_chunk_acked,
    (State.TRANSFERRING, FailureReported): _on_failure_reported,
    (State.TRANSFERRING, Timeout): _on_timeout,
    (State.TRANSFERRING, Abort): _on_abort,
    (State.TRANSFERRING, Disconnected): _on_disconnected,
    (State.VERIFYING, Verified): _on_verified,
    (State.VERIFYING, FailureReported): _on_failure_reported,
    (State.VERIFYING, Timeout): _on_timeout,
    (State.VERIFYING, Abort): _on_abort,
    (State.VERIFYING, Disconnected): _on_disconnected,
    (State.INSTALLING, Installing): _unchanged,
    (State.INSTALLING, Rebooting): _on_rebooting,
    (State.INSTALLING, Booted): _on_booted,
    (State.INSTALLING, FailureReported): _on_failure_reported,
    (State.INSTALLING, RollbackReported): _on_rollback_reported,
    (State.INSTALLING, Timeout): _on_timeout,
    (State.INSTALLING, Disconnected): _on_disconnected,
    (State.REBOOTING, Booted): _on_booted,
    (State.REBOOTING, FailureReported): _on_failure_reported,
    (State.REBOOTING, RollbackReported): _on_rollback_reported,
    (State.REBOOTING, Timeout): _on_timeout,
    (State.REBOOTING, Disconnected): _on_disconnected,
    (State.HEALTH_CHECK, Booted): _on_booted,
    (State.HEALTH_CHECK, HealthBeacon): _on_health_beacon,
    (State.HEALTH_CHECK, Completed): _on_completed,
    (State.HEALTH_CHECK, RollbackReported): _on_rollback_reported,
    (State.HEALTH_CHECK, Timeout): _on_timeout,
    (State.HEALTH_CHECK, Disconnected): _on_disconnected,
}
_EXPECTED: Final[dict[State, set[str]]] = {s: set() for s in State}
for _state, _event in _HANDLERS:
    _EXPECTED[_state].add(_event.name)

#: Which events each non-terminal state accepts (for docs, the admin and the tests).
EXPECTED_EVENTS: Final = {s: frozenset(names) for s, names in _EXPECTED.items() if s not in TERMINAL_STATES}
