"""Rollout wave math (pure: stdlib only, no Django): wave sizes, who is in which wave,
whether to advance, and how many more offers may go out.

A rollout's ``waves`` (ARCHITECTURE §9.1) are *cumulative* sizes: ``[1, "10%", "100%"]``
means one canary, then up to 10 % of the targets, then everyone. Percentages round up
and every wave is at least one target and at least the previous wave, so a small fleet
still goes through the canary first; waves that come out no larger than the one before
are empty and :func:`wave_verdict` lets the rollout through them at once.

The verdict, in this order:

1. **pause** when the finished deployments of the *whole rollout* so far (once there
   are at least ``min_sample`` of them) hold more errors than ``error_threshold``
   (strictly more: exactly at the threshold goes on);
2. **pause** when the current wave can no longer reach ``success_threshold`` because
   too many of its deployments already failed;
3. **advance** when at least ``success_threshold`` of the current wave's own targets
   succeeded and at least ``min_sample`` of them finished (a wave smaller than
   ``min_sample`` must finish entirely);
4. **wait** otherwise.

"Finished" means succeeded or error; neutral outcomes (a ``busy`` rejection, an abort,
see :func:`ota.statemachine.outcome`) leave the counts and the wave's size alike.
Ratios are compared exactly (as fractions), so 9 of 10 meets a threshold of 0.9.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Final

from ota.statemachine import Outcome

_PERCENT: Final = re.compile(r"(\d{1,3})%")


class WaveError(ValueError):
    """A wave list refused; ``field`` names the entry (``waves[2]``) and ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Percent:
    """A wave given as a share of the targets, 1..100."""

    value: int

    def __str__(self) -> str:
        return f"{self.value}%"


Wave = int | Percent


def parse_waves(raw: object) -> tuple[Wave, ...]:
    """Validate a wave list as it comes from the API (``[1, "10%", "100%"]``).

    Entries are positive integers (target counts) or whole percentages from 1% to
    100%; integers must not decrease, nor percentages; the last entry must be "100%"
    so every target is covered whatever the fleet's size.
    """
    if not isinstance(raw, list | tuple):
        raise WaveError("waves", f'must be a list like [1, "10%", "100%"], got {type(raw).__name__}')
    if not raw:
        raise WaveError("waves", "must hold at least one wave")
    waves: list[Wave] = []
    last_count: int | None = None
    last_percent: int | None = None
    for index, item in enumerate(raw):
        field = f"waves[{index}]"
        if isinstance(item, bool):
            raise WaveError(field, f'must be a positive integer or a percentage like "10%", got {item!r}')
        if isinstance(item, int):
            if item < 1:
                raise WaveError(field, f"a target count must be at least 1, got {item}")
            if last_count is not None and item < last_count:
                raise WaveError(field, f"waves are cumulative: {item} is below the earlier wave's {last_count}")
            last_count = item
            waves.append(item)
        elif isinstance(item, str):
            match = _PERCENT.fullmatch(item.strip())
            if match is None:
                raise WaveError(field, f'must be a positive integer or a whole percentage like "10%", got {item!r}')
            value = int(match.group(1))
            if not 1 <= value <= 100:
                raise WaveError(field, f"a percentage must be from 1% to 100%, got {item!r}")
            if last_percent is not None and value < last_percent:
                raise WaveError(field, f"waves are cumulative: {value}% is below the earlier wave's {last_percent}%")
            last_percent = value
            waves.append(Percent(value))
        else:
            raise WaveError(field, f'must be a positive integer or a percentage like "10%", got {type(item).__name__}')
    if waves[-1] != Percent(100):
        raise WaveError(f"waves[{len(waves) - 1}]", f'the last wave must be "100%" so every target is covered, got {raw[-1]!r}')
    return tuple(waves)


def wave_sizes(waves: Sequence[Wave], targets: int) -> tuple[int, ...]:
    """Cumulative wave sizes for ``targets`` targets: percentages round up, each wave at least 1
    (with any targets at all) and at least the previous one, never more than ``targets``."""
    if targets < 0:
        raise ValueError(f"targets must be >= 0, got {targets}")
    sizes: list[int] = []
    previous = 0
    for wave in waves:
        raw = -(-wave.value * targets // 100) if isinstance(wave, Percent) else wave
        size = min(targets, max(raw, 1, previous))
        sizes.append(size)
        previous = size
    return tuple(sizes)


def assign_waves(targets: Iterable[str], waves: Sequence[Wave], *, seed: str = "") -> dict[str, int]:
    """Each target's wave index (0-based), the same for the same targets, waves and seed.

    Targets are ordered by a hash of ``seed`` and their id rather than by name, so
    rollouts seeded differently (the rollout id) do not always pick the same canary.
    """
    unique = sorted(set(targets), key=lambda t: (hashlib.sha256(f"{seed}\x00{t}".encode()).digest(), t))
    sizes = wave_sizes(waves, len(unique))
    if unique and (not sizes or sizes[-1] < len(unique)):
        raise ValueError('the waves do not cover every target: the last wave must be "100%" (use parse_waves)')
    assignment: dict[str, int] = {}
    wave = 0
    for position, target in enumerate(unique):
        while position >= sizes[wave]:
            wave += 1
        assignment[target] = wave
    return assignment


@dataclass(frozen=True)
class Tally:
    """Deployments counted by outcome; ``in_progress`` holds queued and active ones."""

    succeeded: int = 0
    errors: int = 0
    neutral: int = 0
    in_progress: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Outcome | None]) -> Tally:
        """Count :func:`ota.statemachine.outcome` results (None: not finished)."""
        counts = dict.fromkeys((Outcome.SUCCESS, Outcome.ERROR, Outcome.NEUTRAL, None), 0)
        for item in outcomes:
            counts[item] += 1
        return cls(counts[Outcome.SUCCESS], counts[Outcome.ERROR], counts[Outcome.NEUTRAL], counts[None])

    @property
    def finished(self) -> int:
        """Succeeded or error: what the thresholds are computed over."""
        return self.succeeded + self.errors

    @property
    def counted(self) -> int:
        """Targets that count towards the success threshold (all but the neutral ones)."""
        return self.succeeded + self.errors + self.in_progress


class VerdictKind(StrEnum):
    ADVANCE = "advance"
    WAIT = "wait"
    PAUSE = "pause"


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str


def _ratio(value: float, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return Fraction(repr(float(value)))  # the decimal the operator wrote, not its binary neighbour


def _pct(value: Fraction) -> str:
    text = f"{float(value) * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def wave_verdict(wave: Tally, rollout: Tally, *, success_threshold: float, min_sample: int, error_threshold: float) -> Verdict:
    """Advance, wait or pause, given the current wave's own tally and the whole rollout's so far."""
    success = _ratio(success_threshold, "success_threshold")
    error = _ratio(error_threshold, "error_threshold")
    if isinstance(min_sample, bool) or not isinstance(min_sample, int) or min_sample < 1:
        raise ValueError(f"min_sample must be an integer >= 1, got {min_sample!r}")

    if rollout.finished and rollout.finished >= min_sample:
        rate = Fraction(rollout.errors, rollout.finished)
        if rate > error:
            return Verdict(
                VerdictKind.PAUSE,
                f"{rollout.errors} of {rollout.finished} finished deployments failed ({_pct(rate)} > error threshold {_pct(error)})",
            )

    counted = wave.counted
    if counted == 0:
        return Verdict(VerdictKind.ADVANCE, "no deployment of this wave counts (empty, or only busy rejections and aborts)")
    best = Fraction(counted - wave.errors, counted)
    if best < success:
        return Verdict(
            VerdictKind.PAUSE,
            f"this wave can no longer reach the success threshold: {wave.errors} of {counted} failed, "
            f"so at most {counted - wave.errors} can succeed ({_pct(best)} < success threshold {_pct(success)})",
        )
    rate = Fraction(wave.succeeded, counted)
    needed = min(min_sample, counted)
    if wave.finished < needed:
        return Verdict(VerdictKind.WAIT, f"{wave.finished} of {counted} deployments of this wave finished; the minimum sample is {needed}")
    if rate >= success:
        return Verdict(VerdictKind.ADVANCE, f"{wave.succeeded} of {counted} deployments succeeded ({_pct(rate)} ≥ success threshold {_pct(success)})")
    return Verdict(
        VerdictKind.WAIT,
        f"{wave.succeeded} of {counted} deployments succeeded ({_pct(rate)} < success threshold {_pct(success)}); {wave.in_progress} in progress",
    )


def offer_budget(max_concurrent: int, active: int, waiting: int | None = None) -> int:
    """How many more deployments may be offered now: ``max_concurrent`` minus the active ones
    (offered through health check, :data:`ota.statemachine.ACTIVE_STATES`), at most ``waiting``."""
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise ValueError(f"max_concurrent must be an integer >= 1, got {max_concurrent!r}")
    if active < 0 or (waiting is not None and waiting < 0):
        raise ValueError("active and waiting must be >= 0")
    budget = max(0, max_concurrent - active)
    return budget if waiting is None else min(budget, waiting)
