"""Rollout wave math (pure): parsing with reasons, sizes, assignment, verdicts at the thresholds, offer budget."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota.statemachine import Outcome
from ota.waves import (
    Percent,
    Tally,
    Verdict,
    VerdictKind,
    WaveError,
    assign_waves,
    offer_budget,
    parse_waves,
    wave_sizes,
    wave_verdict,
)

DEFAULT_WAVES = [1, "10%", "50%", "100%"]


def verdict(wave: Tally, rollout: Tally | None = None, *, success: float = 0.9, min_sample: int = 1, error: float = 0.2) -> Verdict:
    return wave_verdict(wave, rollout or wave, success_threshold=success, min_sample=min_sample, error_threshold=error)


# --- parsing -------------------------------------------------------------------------------


def test_it_parses_counts_and_percentages() -> None:
    assert parse_waves(DEFAULT_WAVES) == (1, Percent(10), Percent(50), Percent(100))
    assert parse_waves(["100%"]) == (Percent(100),)
    assert parse_waves([5, 5, " 20% ", "100%"]) == (5, 5, Percent(20), Percent(100))
    assert str(Percent(10)) == "10%"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1,10%", 'waves: must be a list like [1, "10%", "100%"], got str'),
        ([], "waves: must hold at least one wave"),
        ([0, "100%"], "waves[0]: a target count must be at least 1, got 0"),
        ([1, -3, "100%"], "waves[1]: a target count must be at least 1, got -3"),
        ([5, 3, "100%"], "waves[1]: waves are cumulative: 3 is below the earlier wave's 5"),
        ([1, "10%", "5%", "100%"], "waves[2]: waves are cumulative: 5% is below the earlier wave's 10%"),
        ([1, "0%", "100%"], "waves[1]: a percentage must be from 1% to 100%, got '0%'"),
        ([1, "101%", "100%"], "waves[1]: a percentage must be from 1% to 100%, got '101%'"),
        (["0.5%", "100%"], "waves[0]: must be a positive integer or a whole percentage like \"10%\", got '0.5%'"),
        ([1, "ten%", "100%"], "waves[1]: must be a positive integer or a whole percentage like \"10%\", got 'ten%'"),
        ([1, "10", "100%"], "waves[1]: must be a positive integer or a whole percentage like \"10%\", got '10'"),
        ([1, 2.5, "100%"], 'waves[1]: must be a positive integer or a percentage like "10%", got float'),
        ([True, "100%"], 'waves[0]: must be a positive integer or a percentage like "10%", got True'),
        ([1, None, "100%"], 'waves[1]: must be a positive integer or a percentage like "10%", got NoneType'),
        ([1, "10%", "50%"], "waves[2]: the last wave must be \"100%\" so every target is covered, got '50%'"),
        ([1, 10], 'waves[1]: the last wave must be "100%" so every target is covered, got 10'),
    ],
)
def test_it_refuses_bad_wave_lists_naming_the_entry(raw: object, message: str) -> None:
    with pytest.raises(WaveError) as info:
        parse_waves(raw)
    assert str(info.value) == message
    assert info.value.field == message.split(":", 1)[0]


# --- sizes and assignment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (0, (0, 0, 0, 0)),
        (1, (1, 1, 1, 1)),
        (3, (1, 1, 2, 3)),
        (10, (1, 1, 5, 10)),
        (11, (1, 2, 6, 11)),  # 10 % of 11 = 1.1 -> 2; 50 % of 11 = 5.5 -> 6
        (100, (1, 10, 50, 100)),
        (1001, (1, 101, 501, 1001)),
    ],
)
def test_it_computes_cumulative_sizes_rounding_percentages_up(targets: int, expected: tuple[int, ...]) -> None:
    assert wave_sizes(parse_waves(DEFAULT_WAVES), targets) == expected


def test_it_never_lets_a_wave_shrink_below_the_previous_one() -> None:
    assert wave_sizes(parse_waves([20, "10%", "100%"]), 50) == (20, 20, 50)  # 10 % of 50 = 5 < 20
    assert wave_sizes(parse_waves([20, "10%", "100%"]), 5) == (5, 5, 5)  # a count above the fleet is capped


def test_it_gives_a_one_percent_wave_at_least_one_target() -> None:
    assert wave_sizes(parse_waves(["1%", "100%"]), 7) == (1, 7)


def test_it_refuses_a_negative_target_count() -> None:
    with pytest.raises(ValueError, match="targets must be >= 0, got -1"):
        wave_sizes((Percent(100),), -1)


def test_it_assigns_waves_deterministically_and_by_size() -> None:
    nodes = [f"sensor-{i}" for i in range(20)]
    waves = parse_waves(DEFAULT_WAVES)
    first = assign_waves(nodes, waves, seed="rollout-7")
    assert assign_waves(reversed(nodes), waves, seed="rollout-7") == first  # input order does not matter
    assert set(first) == set(nodes)
    assert Counter(first.values()) == {0: 1, 1: 1, 2: 8, 3: 10}  # sizes 1, 2, 10, 20


def test_it_picks_different_canaries_for_different_seeds() -> None:
    nodes = [f"sensor-{i}" for i in range(50)]
    waves = parse_waves(DEFAULT_WAVES)
    canaries = {next(n for n, w in assign_waves(nodes, waves, seed=f"rollout-{r}").items() if w == 0) for r in range(10)}
    assert len(canaries) > 1


def test_it_counts_a_repeated_target_once() -> None:
    assert assign_waves(["sensor-1", "sensor-1", "sensor-2"], parse_waves(["50%", "100%"])).keys() == {"sensor-1", "sensor-2"}


def test_it_assigns_nothing_for_no_targets() -> None:
    assert assign_waves([], parse_waves(DEFAULT_WAVES)) == {}


def test_it_refuses_to_assign_with_waves_that_do_not_cover_everyone() -> None:
    with pytest.raises(ValueError, match="the waves do not cover every target"):
        assign_waves(["sensor-1", "sensor-2"], (1,))


# --- tally ---------------------------------------------------------------------------------


def test_it_tallies_outcomes() -> None:
    tally = Tally.of([Outcome.SUCCESS, Outcome.SUCCESS, Outcome.ERROR, Outcome.NEUTRAL, None, None, None])
    assert tally == Tally(succeeded=2, errors=1, neutral=1, in_progress=3)
    assert (tally.finished, tally.counted) == (3, 6)


# --- verdicts ------------------------------------------------------------------------------


def test_it_pauses_with_the_numbers_when_the_rollout_errors_pass_the_threshold() -> None:
    result = verdict(Tally(succeeded=2, in_progress=3), Tally(succeeded=2, errors=3, in_progress=3))
    assert result == Verdict(VerdictKind.PAUSE, "3 of 5 finished deployments failed (60% > error threshold 20%)")


def test_it_goes_on_when_the_errors_are_exactly_at_the_threshold() -> None:
    wave = Tally(succeeded=9, errors=1)
    result = verdict(wave, Tally(succeeded=16, errors=4), error=0.2)  # 4 of 20 = 20 %
    assert result == Verdict(VerdictKind.ADVANCE, "9 of 10 deployments succeeded (90% ≥ success threshold 90%)")


def test_it_pauses_one_error_above_the_threshold() -> None:
    result = verdict(Tally(succeeded=9, errors=1), Tally(succeeded=15, errors=5), error=0.2)
    assert result.kind is VerdictKind.PAUSE
    assert result.reason == "5 of 20 finished deployments failed (25% > error threshold 20%)"


def test_it_pauses_on_the_first_failure_of_the_canary() -> None:
    result = verdict(Tally(errors=1), min_sample=1)
    assert result == Verdict(VerdictKind.PAUSE, "1 of 1 finished deployments failed (100% > error threshold 20%)")


def test_it_waits_for_the_minimum_sample_before_judging_errors() -> None:
    wave = Tally(succeeded=1, errors=1, in_progress=18)
    result = verdict(wave, min_sample=5, success=0.5)
    assert result == Verdict(VerdictKind.WAIT, "2 of 20 deployments of this wave finished; the minimum sample is 5")


def test_it_judges_errors_once_the_minimum_sample_is_reached() -> None:
    wave = Tally(succeeded=3, errors=2, in_progress=15)
    assert verdict(wave, min_sample=5, success=0.5).reason == "2 of 5 finished deployments failed (40% > error threshold 20%)"


def test_it_waits_for_the_minimum_sample_even_when_the_success_threshold_is_met() -> None:
    wave = Tally(succeeded=2, in_progress=8)
    assert verdict(wave, min_sample=5, success=0.0).kind is VerdictKind.WAIT
    assert verdict(Tally(succeeded=5, in_progress=5), min_sample=5, success=0.0).kind is VerdictKind.ADVANCE


def test_it_judges_a_wave_smaller_than_the_minimum_sample_once_it_finished() -> None:
    assert verdict(Tally(succeeded=1), min_sample=5).kind is VerdictKind.ADVANCE


def test_it_waits_below_the_success_threshold_while_deployments_run() -> None:
    result = verdict(Tally(succeeded=8, in_progress=2))
    assert result == Verdict(VerdictKind.WAIT, "8 of 10 deployments succeeded (80% < success threshold 90%); 2 in progress")


def test_it_advances_exactly_at_the_success_threshold() -> None:
    assert verdict(Tally(succeeded=9, in_progress=1)).kind is VerdictKind.ADVANCE


@pytest.mark.parametrize(("succeeded", "total", "threshold"), [(57, 100, 0.57), (7, 10, 0.7), (29, 100, 0.29), (1, 3, 0.333)])
def test_it_compares_thresholds_exactly(succeeded: int, total: int, threshold: float) -> None:
    assert verdict(Tally(succeeded=succeeded, in_progress=total - succeeded), success=threshold, error=1).kind is VerdictKind.ADVANCE
    assert verdict(Tally(succeeded=succeeded - 1, in_progress=total - succeeded + 1), success=threshold, error=1).kind is VerdictKind.WAIT


def test_it_pauses_when_the_wave_can_no_longer_reach_the_success_threshold() -> None:
    wave = Tally(succeeded=3, errors=2, in_progress=5)
    result = verdict(wave, Tally(succeeded=30, errors=2, in_progress=5))  # 2 of 32 rollout-wide: under 20 %
    assert result == Verdict(
        VerdictKind.PAUSE,
        "this wave can no longer reach the success threshold: 2 of 10 failed, so at most 8 can succeed (80% < success threshold 90%)",
    )


def test_it_leaves_busy_rejections_and_aborts_out_of_the_wave() -> None:
    wave = Tally(succeeded=9, neutral=5, in_progress=1)
    assert verdict(wave).reason == "9 of 10 deployments succeeded (90% ≥ success threshold 90%)"


def test_it_advances_through_an_empty_wave() -> None:
    assert verdict(Tally(), Tally(succeeded=1)).kind is VerdictKind.ADVANCE
    assert verdict(Tally(neutral=2), Tally(succeeded=1, neutral=2)).kind is VerdictKind.ADVANCE


def test_it_pauses_on_rollout_errors_even_in_an_empty_wave() -> None:
    assert verdict(Tally(), Tally(succeeded=1, errors=1)).kind is VerdictKind.PAUSE


def test_it_shows_fractional_percentages() -> None:
    assert verdict(Tally(errors=1, succeeded=2)).reason == "1 of 3 finished deployments failed (33.3% > error threshold 20%)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"success_threshold": 1.5}, "success_threshold must be a number from 0 to 1, got 1.5"),
        ({"error_threshold": -0.1}, "error_threshold must be a number from 0 to 1, got -0.1"),
        ({"error_threshold": True}, "error_threshold must be a number from 0 to 1, got True"),
        ({"min_sample": 0}, "min_sample must be an integer >= 1, got 0"),
    ],
)
def test_it_refuses_impossible_thresholds(kwargs: dict, message: str) -> None:
    arguments = {"success_threshold": 0.9, "min_sample": 1, "error_threshold": 0.2} | kwargs
    with pytest.raises(ValueError, match=f"^{message}$"):
        wave_verdict(Tally(), Tally(), **arguments)


# --- offer budget ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_concurrent", "active", "waiting", "expected"),
    [(50, 0, None, 50), (50, 48, None, 2), (50, 50, None, 0), (50, 60, None, 0), (50, 10, 3, 3), (5, 2, 10, 3), (1, 0, 0, 0)],
)
def test_it_says_how_many_more_may_be_offered(max_concurrent: int, active: int, waiting: int | None, expected: int) -> None:
    assert offer_budget(max_concurrent, active, waiting) == expected


@pytest.mark.parametrize(("args", "message"), [((0, 0), "max_concurrent must be an integer >= 1, got 0"), ((5, -1), "active and waiting must be >= 0")])
def test_it_refuses_an_impossible_budget(args: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        offer_budget(*args)


# --- properties ----------------------------------------------------------------------------

wave_lists = st.tuples(
    st.lists(st.integers(min_value=1, max_value=500), max_size=4).map(sorted),
    st.lists(st.integers(min_value=1, max_value=100), max_size=4).map(sorted),
).map(lambda parts: [*parts[0], *(f"{p}%" for p in parts[1]), "100%"])


@settings(max_examples=300, deadline=None)
@given(wave_lists, st.integers(min_value=0, max_value=5000))
def test_it_sizes_any_valid_wave_list_up_to_every_target(raw: list, targets: int) -> None:
    sizes = wave_sizes(parse_waves(raw), targets)
    assert len(sizes) == len(raw)
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert sizes[-1] == targets
    assert all(size >= min(1, targets) for size in sizes)


@settings(max_examples=100, deadline=None)
@given(wave_lists, st.sets(st.text(min_size=1, max_size=8), max_size=60), st.text(max_size=8))
def test_it_assigns_every_target_to_exactly_one_wave_of_the_right_size(raw: list, targets: set[str], seed: str) -> None:
    waves = parse_waves(raw)
    assignment = assign_waves(targets, waves, seed=seed)
    assert set(assignment) == targets
    sizes = wave_sizes(waves, len(targets))
    counts = Counter(assignment.values())
    for index, size in enumerate(sizes):
        assert counts.get(index, 0) == size - (sizes[index - 1] if index else 0)
