"""Where a sentence goes when the local intents did not understand it: pure policy, no Django.

- Local intents always come first (`assistant.service`); this decides among the models.
- Text about the fleet (it names a device, group, scene or capability the hub knows, or
  asks to switch or set something) stays on the premises: the local model; the cloud model
  only when the operator allowed it (MESHHUB_LLM_CLOUD_FOR_DEVICES), after the local one.
- Other text: the cloud model first when there is one (it knows more of the world), the
  local one after it.
- A circuit breaker per provider: `failures` consecutive failures open it for `open_s`;
  then one request may probe it (half-open): a success closes it, a failure opens it again.
  An open provider is skipped, and the decision says so.

Every decision carries its reason, which the API answer and the audit log show.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace

LOCAL, CLOUD = "local", "cloud"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
FLEET_VERBS = re.compile(r"\b(turn|switch|set|dim|toggle|activate|open|close|start|stop|power|heat|cool|lock|unlock)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Breaker:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False  # a half-open probe is out


def state(breaker: Breaker, now: float, open_s: float) -> str:
    if breaker.opened_at is None:
        return CLOSED
    return OPEN if now - breaker.opened_at < open_s or breaker.probing else HALF_OPEN


def succeeded(breaker: Breaker) -> Breaker:
    return Breaker()


def failed(breaker: Breaker, now: float, threshold: int) -> Breaker:
    failures = breaker.failures + 1
    if breaker.opened_at is not None or failures >= threshold:  # a failed probe opens it again
        return Breaker(failures, now, False)
    return Breaker(failures, None, False)


def probing(breaker: Breaker) -> Breaker:
    return replace(breaker, probing=True)


@dataclass(frozen=True)
class Decision:
    order: tuple[str, ...]  # providers to try, in order
    reason: str
    about_fleet: bool


def about_fleet(text: str, known: Container[str], longest: int = 4) -> bool:
    """Does `text` (normalised) ask to act on something, or name something the hub knows
    (any run of up to `longest` words of it is in `known`: names, aliases, capability words)?"""
    if FLEET_VERBS.search(text):
        return True
    words = text.split()
    return any(" ".join(words[i : i + n]) in known for n in range(1, longest + 1) for i in range(len(words) - n + 1))


def route(
    text_about_fleet: bool,
    configured: Iterable[str],
    breakers: Mapping[str, Breaker],
    now: float,
    *,
    cloud_for_devices: bool,
    open_s: float,
) -> Decision:
    configured = set(configured)
    if text_about_fleet:
        wanted = [LOCAL, CLOUD] if cloud_for_devices else [LOCAL]
        why = "about the fleet: " + ("local model, then cloud (allowed)" if cloud_for_devices else "stays local (MESHHUB_LLM_CLOUD_FOR_DEVICES is off)")
    else:
        wanted = [CLOUD, LOCAL]
        why = "not about the fleet: cloud model, then local"
    order: list[str] = []
    notes: list[str] = []
    for provider in wanted:
        if provider not in configured:
            notes.append(f"no {provider} model configured")
            continue
        current = state(breakers.get(provider, Breaker()), now, open_s)
        if current == OPEN:
            notes.append(f"{provider} breaker open")
            continue
        if current == HALF_OPEN:
            notes.append(f"{provider} breaker half-open: this request probes it")
        order.append(provider)
    reason = why + ("; " + "; ".join(notes) if notes else "")
    return Decision(tuple(order), reason, text_about_fleet)
