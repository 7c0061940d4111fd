"""Deployment state machine (pure): every transition, timeout, resume rule and refusal for device sensor-1."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota.statemachine import (
    ACTIVE_STATES,
    EXPECTED_EVENTS,
    TERMINAL_STATES,
    Abort,
    Accepted,
    Booted,
    ChunkAcked,
    Completed,
    DeploymentParams,
    DeploymentState,
    Disconnected,
    Event,
    FailureReported,
    Finalize,
    HealthBeacon,
    Installing,
    Offer,
    Outcome,
    Rebooting,
    Rejected,
    RollbackReported,
    SendAbort,
    SendChunk,
    SendOffer,
    State,
    Timeout,
    TransitionRefused,
    Verified,
    is_due,
    new_deployment,
    outcome,
    transition,
)

# sensor-1 gets release 1.1.0 (10,000 bytes in chunks of 4096: 0, 4096, 8192) with two chunks in flight.
PARAMS = DeploymentParams(version="1.1.0", size=10_000, chunk_size=4096, window=2, health_beacons=3, deadline_s=600)
T0 = 1_000.0


def step(state: DeploymentState, event: Event, now: float = T0) -> tuple[DeploymentState, tuple]:
    new, actions = transition(state, event, now)
    return new, actions


def at(state: State, **changes: object) -> DeploymentState:
    return replace(new_deployment(PARAMS), state=state, **changes)


def offered(now: float = T0) -> DeploymentState:
    return step(new_deployment(PARAMS), Offer(), now)[0]


def transferring(now: float = T0) -> DeploymentState:
    return step(offered(now), Accepted(0), now)[0]


def verifying(now: float = T0) -> DeploymentState:
    state = transferring(now)
    for offset in (4096, 8192, 10_000):
        state = step(state, ChunkAcked(offset), now)[0]
    return state


def installing(now: float = T0) -> DeploymentState:
    return step(verifying(now), Verified(ok=True), now)[0]


def health_check(now: float = T0) -> DeploymentState:
    state = step(installing(now), Rebooting(), now)[0]
    return step(state, Booted(slot="b", version="1.1.0", reason="ota"), now)[0]


def refused(state: DeploymentState, event: Event, now: float = T0) -> str:
    with pytest.raises(TransitionRefused) as info:
        transition(state, event, now)
    assert info.value.state is state
    return info.value.reason


# --- the happy path ---------------------------------------------------------------------


def test_it_walks_sensor_1_from_queued_to_succeeded() -> None:
    state = new_deployment(PARAMS)
    assert state.state is State.QUEUED and state.deadline is None

    state, actions = step(state, Offer())
    assert state.state is State.OFFERED
    assert actions == (SendOffer(0),)
    assert state.deadline == T0 + 60

    state, actions = step(state, Accepted(0), T0 + 1)
    assert state.state is State.TRANSFERRING
    assert actions == (SendChunk(0, 4096), SendChunk(4096, 4096))  # the window is two chunks
    assert (state.acked_offset, state.sent_offset, state.deadline) == (0, 8192, T0 + 31)

    state, actions = step(state, ChunkAcked(4096), T0 + 2)
    assert actions == (SendChunk(8192, 10_000 - 8192),)  # the short last chunk
    assert (state.acked_offset, state.sent_offset, state.deadline) == (4096, 10_000, T0 + 32)

    state, actions = step(state, ChunkAcked(8192), T0 + 3)
    assert actions == ()
    state, actions = step(state, ChunkAcked(10_000), T0 + 4)
    assert state.state is State.VERIFYING
    assert actions == ()
    assert state.deadline == T0 + 64

    state, actions = step(state, Verified(ok=True), T0 + 5)
    assert state.state is State.INSTALLING
    assert state.deadline == T0 + 605  # the overall deadline starts here

    state, actions = step(state, Installing(), T0 + 6)
    assert state.state is State.INSTALLING and actions == ()
    state, _ = step(state, Rebooting(), T0 + 7)
    assert state.state is State.REBOOTING
    state, _ = step(state, Disconnected(), T0 + 8)
    assert state.state is State.REBOOTING  # a reboot drops the connection: expected
    state, _ = step(state, Booted(slot="b", version="1.1.0", reason="ota"), T0 + 20)
    assert state.state is State.HEALTH_CHECK
    assert state.deadline == T0 + 605  # the same overall deadline

    for expected in (1, 2, 3):
        state, actions = step(state, HealthBeacon(ok=True), T0 + 20 + expected)
        assert (state.state, state.beacons, actions) == (State.HEALTH_CHECK, expected, ())
    state, actions = step(state, Completed(signature_valid=True), T0 + 30)
    assert state.state is State.SUCCEEDED
    assert state.deadline is None
    assert actions == (Finalize(Outcome.SUCCESS, "3 health beacons and a signed ota.complete"),)
    assert state.outcome is Outcome.SUCCESS


def test_it_succeeds_on_the_nth_beacon_when_ota_complete_came_first() -> None:
    state, actions = step(health_check(), Completed(signature_valid=True))
    assert state.state is State.HEALTH_CHECK and state.complete_received and actions == ()
    state = step(state, HealthBeacon(ok=True))[0]
    state = step(state, HealthBeacon(ok=True))[0]
    assert state.state is State.HEALTH_CHECK
    state, actions = step(state, HealthBeacon(ok=True))
    assert state.state is State.SUCCEEDED
    assert [type(a) for a in actions] == [Finalize]


def test_it_succeeds_on_ota_complete_alone_when_no_beacons_are_required() -> None:
    params = replace(PARAMS, health_beacons=0)
    state = replace(new_deployment(params), state=State.HEALTH_CHECK)
    assert step(state, Completed(signature_valid=True))[0].state is State.SUCCEEDED


def test_it_goes_from_installing_to_health_check_when_the_device_skips_the_rebooting_status() -> None:
    state = step(installing(), Booted(slot="b", version="1.1.0", reason="ota"))[0]
    assert state.state is State.HEALTH_CHECK


def test_it_offers_and_transfers_an_image_smaller_than_one_chunk() -> None:
    params = replace(PARAMS, size=100)
    state = step(step(new_deployment(params), Offer())[0], Accepted(0))
    assert state[1] == (SendChunk(0, 100),)
    assert step(state[0], ChunkAcked(100))[0].state is State.VERIFYING


# --- failures, rollbacks, rejections --------------------------------------------------------


@pytest.mark.parametrize("reason", ["incompatible", "downgrade", "bad signature", "busy", "busy: installing 1.0.9"])
def test_it_records_the_device_reject_reason(reason: str) -> None:
    state, actions = step(offered(), Rejected(reason))
    assert state.state is State.REJECTED
    assert state.reason == reason
    expected = Outcome.NEUTRAL if reason.startswith("busy") else Outcome.ERROR
    assert actions == (Finalize(expected, reason),)


def test_it_fails_when_the_device_verification_fails() -> None:
    state, actions = step(verifying(), Verified(ok=False, reason="sha256 mismatch"))
    assert state.state is State.FAILED
    assert state.reason == "verification failed on the device: sha256 mismatch"
    assert actions == (Finalize(Outcome.ERROR, state.reason),)  # the device knows: no abort to send


@pytest.mark.parametrize("make", [transferring, verifying, installing, lambda: step(installing(), Rebooting())[0]])
def test_it_fails_when_the_device_reports_a_failure(make) -> None:
    state, actions = step(make(), FailureReported("flash write error at 0x3000"))
    assert state.state is State.FAILED
    assert state.reason == "the device reported a failure: flash write error at 0x3000"
    assert [type(a) for a in actions] == [Finalize]


@pytest.mark.parametrize(
    ("version", "boot_reason"),
    [("1.0.0", "rollback"), ("1.0.0", "watchdog"), ("1.0.0", "power-on"), ("1.1.0", "rollback")],
)
def test_it_rolls_back_when_sensor_1_boots_the_previous_version_or_a_rollback(version: str, boot_reason: str) -> None:
    rebooting = step(installing(), Rebooting())[0]
    state, actions = step(rebooting, Booted(slot="a", version=version, reason=boot_reason))
    assert state.state is State.ROLLED_BACK
    assert state.reason == f"the device booted {version} from slot a (boot reason {boot_reason}) instead of 1.1.0"
    assert actions == (Finalize(Outcome.ERROR, state.reason),)


def test_it_rolls_back_when_the_boot_guard_reverts_during_the_health_check() -> None:
    state = step(step(health_check(), HealthBeacon(ok=True))[0], Booted(slot="a", version="1.0.0", reason="rollback"))[0]
    assert state.state is State.ROLLED_BACK


def test_it_restarts_the_beacon_count_when_the_new_image_reboots_during_the_health_check() -> None:
    state = step(health_check(), HealthBeacon(ok=True))[0]
    state = step(state, Completed(signature_valid=True))[0]
    state = step(state, Booted(slot="b", version="1.1.0", reason="watchdog"))[0]
    assert state.state is State.HEALTH_CHECK
    assert (state.beacons, state.complete_received) == (0, False)
    assert state.reason == "rebooted during the health check (boot reason watchdog); health beacons count again"


def test_it_rolls_back_on_a_failed_health_beacon() -> None:
    state = step(health_check(), HealthBeacon(ok=True))[0]
    state, actions = step(state, HealthBeacon(ok=False))
    assert state.state is State.ROLLED_BACK
    assert state.reason == "health check failed after 1 of 3 good beacons; the device reverts"
    assert actions == (Finalize(Outcome.ERROR, state.reason),)  # never an ota.rollback of our own


@pytest.mark.parametrize("make", [installing, lambda: step(installing(), Rebooting())[0], health_check])
def test_it_rolls_back_when_the_device_reports_a_rollback(make) -> None:
    state, actions = step(make(), RollbackReported("boot guard: 3 failed boots"))
    assert state.state is State.ROLLED_BACK
    assert state.reason == "the device rolled back: boot guard: 3 failed boots"
    assert [type(a) for a in actions] == [Finalize]


def test_it_refuses_an_unsigned_ota_complete_and_keeps_waiting() -> None:
    state = health_check()
    for _ in range(3):
        state = step(state, HealthBeacon(ok=True))[0]
    assert refused(state, Completed(signature_valid=False)) == "the ota.complete signature does not verify with the device key"


def test_it_refuses_a_second_ota_complete() -> None:
    state = step(health_check(), Completed(signature_valid=True))[0]
    assert refused(state, Completed(signature_valid=True)) == "ota.complete already received"


# --- timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "after", "reason"),
    [
        (offered, 60, "no answer to the offer within 60 s"),
        (transferring, 30, "no chunk ack within 30 s (acked 0 of 10000 bytes)"),
        (verifying, 60, "no verification result within 60 s"),
    ],
)
def test_it_fails_and_aborts_when_a_transfer_step_times_out(make, after: int, reason: str) -> None:
    state = make()
    assert not is_due(state, T0 + after - 0.001)
    assert refused(state, Timeout(), T0 + after - 0.5) == f"not due: the deadline is {T0 + after:.3f}, now is {T0 + after - 0.5:.3f}"
    assert is_due(state, T0 + after)
    new, actions = step(state, Timeout(), T0 + after)
    assert new.state is State.FAILED
    assert new.reason == reason
    assert actions == (SendAbort(reason), Finalize(Outcome.ERROR, reason))


def test_it_restarts_the_chunk_ack_timer_on_every_ack() -> None:
    state = step(transferring(), ChunkAcked(4096), T0 + 25)[0]
    assert refused(state, Timeout(), T0 + 50).startswith("not due")
    assert step(state, Timeout(), T0 + 55)[0].reason == "no chunk ack within 30 s (acked 4096 of 10000 bytes)"


@pytest.mark.parametrize("make", [installing, lambda: step(installing(), Rebooting())[0], health_check])
def test_it_rolls_back_when_the_overall_deadline_passes(make) -> None:
    state = step(make(), Disconnected(), T0 + 100)[0]  # the deadline keeps running across a drop
    assert refused(state, Timeout(), T0 + 599).startswith("not due")
    new, actions = step(state, Timeout(), T0 + 600)
    assert new.state is State.ROLLED_BACK
    assert new.reason.startswith(f"deadline of 600 s passed while {state.state} (0 of 3 health beacons, ota.complete missing)")
    assert actions == (Finalize(Outcome.ERROR, new.reason),)


def test_it_uses_the_rollout_deadline() -> None:
    params = replace(PARAMS, deadline_s=120)
    state = replace(new_deployment(params), state=State.VERIFYING, acked_offset=10_000, sent_offset=10_000)
    state = step(state, Verified(ok=True), T0)[0]
    assert state.deadline == T0 + 120


def test_it_refuses_a_timeout_when_no_timer_runs() -> None:
    assert refused(new_deployment(PARAMS), Timeout(), T0 + 10_000).startswith("not expected while queued")
    assert refused(at(State.HEALTH_CHECK, deadline=None), Timeout()) == "no timer runs in this state"


# --- disconnects and resume ------------------------------------------------------------------


def test_it_keeps_the_last_acked_offset_when_sensor_1_drops_mid_transfer() -> None:
    state = step(transferring(), ChunkAcked(4096))[0]
    state, actions = step(state, Disconnected())
    assert state.state is State.QUEUED
    assert (state.acked_offset, state.sent_offset, state.deadline, actions) == (4096, 4096, None, ())
    assert state.reason == "connection lost at offset 4096 of 10000; resumes on the next offer"

    state, actions = step(state, Offer(), T0 + 50)
    assert actions == (SendOffer(4096),)
    state, actions = step(state, Accepted(4096), T0 + 51)
    assert state.state is State.TRANSFERRING
    assert actions == (SendChunk(4096, 4096), SendChunk(8192, 1808))


def test_it_may_resume_below_the_last_acked_offset() -> None:
    state = step(step(step(transferring(), ChunkAcked(8192))[0], Disconnected())[0], Offer())[0]
    state, actions = step(state, Accepted(4096))
    assert (state.acked_offset, actions) == (4096, (SendChunk(4096, 4096), SendChunk(8192, 1808)))
    state = step(step(state, Disconnected())[0], Offer())[0]
    assert state.acked_offset == 4096  # the lower resume point is now the promise
    assert refused(state, Accepted(8192)) == "resume offset 8192 beyond the last acked offset 4096"


def test_it_refuses_a_resume_beyond_the_last_acked_offset() -> None:
    state = step(step(step(transferring(), ChunkAcked(4096))[0], Disconnected())[0], Offer())[0]
    assert refused(state, Accepted(8192)) == "resume offset 8192 beyond the last acked offset 4096"
    assert refused(offered(), Accepted(4096)) == "resume offset 4096 beyond the last acked offset 0"


@pytest.mark.parametrize(("offset", "reason"), [(-1, "resume offset -1 is not a byte offset"), (True, "resume offset True is not a byte offset")])
def test_it_refuses_a_resume_offset_that_is_not_an_offset(offset, reason: str) -> None:
    state = at(State.OFFERED, acked_offset=8192, sent_offset=8192)
    assert refused(state, Accepted(offset)) == reason


def test_it_refuses_a_resume_inside_a_chunk() -> None:
    state = at(State.OFFERED, acked_offset=8192, sent_offset=8192)
    assert refused(state, Accepted(100)) == "resume offset 100 is not a chunk boundary (chunk size 4096)"


def test_it_goes_straight_to_verifying_when_the_device_already_holds_the_image() -> None:
    state = step(verifying(), Disconnected())[0]
    assert (state.state, state.acked_offset) == (State.QUEUED, 10_000)
    state, actions = step(step(state, Offer())[0], Accepted(10_000), T0 + 5)
    assert (state.state, state.deadline, actions) == (State.VERIFYING, T0 + 65, ())


def test_it_requeues_an_offer_lost_to_a_disconnect() -> None:
    state, actions = step(offered(), Disconnected())
    assert (state.state, state.acked_offset, state.deadline, actions) == (State.QUEUED, 0, None, ())


@pytest.mark.parametrize("make", [installing, lambda: step(installing(), Rebooting())[0], health_check])
def test_it_ignores_a_disconnect_once_installing(make) -> None:
    state = make()
    assert step(state, Disconnected()) == (state, ())


# --- chunk acks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (0, "ack for offset 0 not beyond the last acked offset 0"),
        (12_288, "ack for offset 12288 beyond what was sent (8192)"),
        (100, "ack for offset 100 is not a chunk end (chunk size 4096, size 10000)"),
        (10_000, "ack for offset 10000 beyond what was sent (8192)"),
    ],
)
def test_it_refuses_impossible_chunk_acks(offset: int, reason: str) -> None:
    assert refused(transferring(), ChunkAcked(offset)) == reason


def test_it_refuses_a_duplicate_chunk_ack() -> None:
    state = step(transferring(), ChunkAcked(4096))[0]
    assert refused(state, ChunkAcked(4096)) == "ack for offset 4096 not beyond the last acked offset 4096"


def test_it_accepts_a_cumulative_ack_for_two_chunks() -> None:
    state, actions = step(transferring(), ChunkAcked(8192))
    assert (state.acked_offset, actions) == (8192, (SendChunk(8192, 1808),))


# --- abort ---------------------------------------------------------------------------------


def test_it_aborts_a_queued_deployment_without_a_message() -> None:
    state, actions = step(new_deployment(PARAMS), Abort("rollout aborted by alice"))
    assert state.state is State.ABORTED
    assert actions == (Finalize(Outcome.NEUTRAL, "rollout aborted by alice"),)


@pytest.mark.parametrize("make", [offered, transferring, verifying])
def test_it_aborts_an_offered_or_transferring_deployment_and_tells_the_device(make) -> None:
    state, actions = step(make(), Abort())
    assert state.state is State.ABORTED and state.deadline is None
    assert actions == (SendAbort("aborted by an operator"), Finalize(Outcome.NEUTRAL, "aborted by an operator"))


@pytest.mark.parametrize("make", [installing, lambda: step(installing(), Rebooting())[0], health_check])
def test_it_refuses_an_abort_once_the_device_installs(make) -> None:
    assert refused(make(), Abort()).startswith("not expected while")


# --- invalid events and terminal states --------------------------------------------------------

ALL_EVENTS: list[Event] = [
    Offer(),
    Accepted(0),
    Rejected("busy"),
    ChunkAcked(4096),
    Verified(ok=True),
    Installing(),
    Rebooting(),
    FailureReported("x"),
    Booted(slot="b", version="1.1.0", reason="ota"),
    HealthBeacon(ok=True),
    Completed(signature_valid=True),
    Timeout(),
    Abort(),
    RollbackReported("x"),
    Disconnected(),
]


UNEXPECTED = [(s, e) for s in State if s not in TERMINAL_STATES for e in ALL_EVENTS if e.name not in EXPECTED_EVENTS[s]]


@pytest.mark.parametrize(("current", "event"), UNEXPECTED, ids=[f"{s}-{e.name}" for s, e in UNEXPECTED])
def test_it_refuses_every_event_a_state_does_not_expect(current: State, event: Event) -> None:
    state = at(current, deadline=T0)
    reason = refused(state, event, T0 + 1_000)
    assert reason.startswith(f"not expected while {current}; expected one of: ")
    assert all(name in reason for name in EXPECTED_EVENTS[current])


@pytest.mark.parametrize("final", sorted(TERMINAL_STATES))
@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e.name)
def test_it_refuses_every_event_after_the_deployment_finished(final: State, event: Event) -> None:
    assert refused(at(final), event) == f"the deployment already finished ({final})"


def test_it_names_the_event_and_state_in_the_refusal_message() -> None:
    with pytest.raises(TransitionRefused, match=r"^chunk_acked refused in queued: not expected while queued"):
        transition(new_deployment(PARAMS), ChunkAcked(4096), T0)


def test_it_lists_what_each_state_expects() -> None:
    assert EXPECTED_EVENTS[State.QUEUED] == {"offer", "abort"}
    assert EXPECTED_EVENTS[State.OFFERED] == {"accepted", "rejected", "timeout", "abort", "disconnected"}
    assert EXPECTED_EVENTS[State.HEALTH_CHECK] == {"booted", "health_beacon", "completed", "rollback_reported", "timeout", "disconnected"}
    assert set(EXPECTED_EVENTS) == set(State) - TERMINAL_STATES
    assert ACTIVE_STATES == set(State) - TERMINAL_STATES - {State.QUEUED}


# --- counting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("succeeded", "", Outcome.SUCCESS),
        ("failed", "no answer to the offer within 60 s", Outcome.ERROR),
        ("rolled_back", "health check failed", Outcome.ERROR),
        ("rejected", "incompatible", Outcome.ERROR),
        ("rejected", "downgrade", Outcome.ERROR),
        ("rejected", "bad signature", Outcome.ERROR),
        ("rejected", "busy", Outcome.NEUTRAL),
        ("rejected", "Busy: another update", Outcome.NEUTRAL),
        ("aborted", "aborted by an operator", Outcome.NEUTRAL),
        ("queued", "", None),
        ("transferring", "", None),
        ("health_check", "", None),
    ],
)
def test_it_counts_finished_deployments_for_the_thresholds(state: str, reason: str, expected: Outcome | None) -> None:
    assert outcome(state, reason) is expected


# --- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": ""}, "version must not be empty"),
        ({"size": 0}, "size must be a positive integer, got 0"),
        ({"chunk_size": -1}, "chunk_size must be a positive integer, got -1"),
        ({"window": True}, "window must be a positive integer, got True"),
        ({"health_beacons": -1}, "health_beacons must be an integer >= 0, got -1"),
        ({"deadline_s": 0}, "deadline_s must be a positive number of seconds, got 0"),
        ({"offer_timeout_s": "60"}, "offer_timeout_s must be a positive number of seconds, got '60'"),
    ],
)
def test_it_refuses_impossible_parameters(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        replace(PARAMS, **changes)


def test_it_defaults_to_the_seed_timeouts() -> None:
    params = DeploymentParams(version="1.1.0", size=1)
    assert (params.offer_timeout_s, params.chunk_ack_timeout_s, params.verify_timeout_s) == (60, 30, 60)
    assert (params.deadline_s, params.health_beacons) == (600, 3)


def test_it_imports_without_django() -> None:
    code = "import sys, ota.statemachine, ota.waves; assert not any(m == 'django' or m.startswith('django.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- properties ----------------------------------------------------------------------------

events = st.one_of(
    st.just(Offer()),
    st.builds(Accepted, st.sampled_from([0, 4096, 8192, 10_000, 100, -1])),
    st.builds(Rejected, st.sampled_from(["busy", "incompatible"])),
    st.builds(ChunkAcked, st.sampled_from([0, 4096, 8192, 10_000, 12_288, 100])),
    st.builds(Verified, st.booleans(), st.just("")),
    st.just(Installing()),
    st.just(Rebooting()),
    st.builds(FailureReported, st.just("x")),
    st.builds(Booted, st.sampled_from(["a", "b"]), st.sampled_from(["1.0.0", "1.1.0"]), st.sampled_from(["ota", "rollback", "watchdog"])),
    st.builds(HealthBeacon, st.booleans()),
    st.builds(Completed, st.booleans()),
    st.just(Timeout()),
    st.just(Abort()),
    st.builds(RollbackReported, st.just("x")),
    st.just(Disconnected()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(events, st.floats(min_value=0, max_value=120)), max_size=60))
def test_it_keeps_its_invariants_for_any_event_sequence(sequence: list[tuple[Event, float]]) -> None:
    """Refusals change nothing, a finished deployment stays finished, offsets never pass each other."""
    state, now = new_deployment(PARAMS), T0
    highest_promise = 0
    for event, delay in sequence:
        now += delay
        before = state
        try:
            state, actions = transition(state, event, now)
        except TransitionRefused:
            assert state is before
            continue
        assert not before.terminal
        assert 0 <= state.acked_offset <= state.sent_offset <= PARAMS.size
        assert sum(1 for a in actions if isinstance(a, Finalize)) == (1 if state.terminal else 0)
        if state.terminal:
            assert state.deadline is None
        if isinstance(event, Accepted):
            assert event.resume_offset <= highest_promise
        if state.state is State.TRANSFERRING:
            assert state.sent_offset - state.acked_offset <= PARAMS.window * PARAMS.chunk_size
        highest_promise = state.acked_offset
