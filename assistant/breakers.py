"""The routers' circuit breakers, one per provider, in this process's memory (like any HTTP
client's breaker: each hub process learns of a dead endpoint by itself within a few
requests). Opening and closing are audited (`assistant.breaker`) and logged; `snapshot()`
is what the API answer and /healthz-style views show."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings

from assistant import router
from audit.models import Decision
from audit.services import Actor, record

logger = logging.getLogger("meshhub.assistant")


class Breakers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.breakers: dict[str, router.Breaker] = {}

    def snapshot(self) -> dict[str, router.Breaker]:
        with self.lock:
            return dict(self.breakers)

    def states(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        now = time.monotonic() if now is None else now
        return {name: {"state": router.state(b, now, settings.LLM_BREAKER_OPEN_S), "failures": b.failures} for name, b in self.snapshot().items()}

    def before(self, provider: str, now: float) -> None:
        with self.lock:
            current = self.breakers.get(provider, router.Breaker())
            if router.state(current, now, settings.LLM_BREAKER_OPEN_S) == router.HALF_OPEN:
                self.breakers[provider] = router.probing(current)

    def success(self, provider: str) -> None:
        with self.lock:
            was = self.breakers.get(provider, router.Breaker())
            self.breakers[provider] = router.succeeded(was)
        if was.opened_at is not None:
            self._audit(provider, router.CLOSED, Decision.ALLOW, "a probe succeeded")

    def failure(self, provider: str, now: float, reason: str) -> None:
        with self.lock:
            was = self.breakers.get(provider, router.Breaker())
            now_state = router.failed(was, now, settings.LLM_BREAKER_FAILURES)
            self.breakers[provider] = now_state
        if now_state.opened_at is not None:
            what = "a half-open probe failed" if was.opened_at is not None else f"{now_state.failures} consecutive failures"
            self._audit(provider, router.OPEN, Decision.DENY, f"{what}; open for {settings.LLM_BREAKER_OPEN_S:g} s; last: {reason}")

    def reset(self) -> None:
        with self.lock:
            self.breakers.clear()

    def _audit(self, provider: str, state: str, decision: str, reason: str) -> None:
        logger.warning("%s model breaker %s: %s", provider, state, reason)
        record(
            Actor.system("assistant"), "assistant.breaker", decision, target_type="provider", target_id=provider, reason=reason[:500], details={"state": state}
        )


breakers = Breakers()
