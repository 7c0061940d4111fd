"""One door for every surface (API, `manage.py ask`, the dashboard's Ask box):
`ask(actor, text)` → (HTTP status, body of ARCHITECTURE §9.3), audited.

Local intents first (`assistant.local`, no model). What they do not understand goes to the
models the router picks (`assistant.router`: text about the fleet stays local unless the
operator allowed the cloud; breakers skip a failing provider), through `assistant.llm` with
the asking actor's tools. Asking needs `read-status`; acting needs `command` (checked before
anything is sent, and again by each service called). Every request is audited with what was
understood, by whom it was handled and the router's reason."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from assistant import llm, local, names, router
from assistant.breakers import breakers
from assistant.scrub import scrubber_for
from audit.models import Decision
from audit.services import Actor, ScopeDenied, authorize, record
from hub.scopes import Scope

MAX_TEXT = 500


def ask(actor: Actor, text: Any) -> tuple[int, dict[str, Any]]:
    try:
        authorize(actor, Scope.READ_STATUS, "assistant.ask", target_type="assistant", target_id="local")
    except ScopeDenied as denied:
        return 403, {"field": "text", "reason": denied.reason}
    if not isinstance(text, str) or not text.strip():
        return _refused(actor, text, 400, 'send {"text": "…"}: a sentence, such as \'turn on the kitchen light\'')
    if len(text) > MAX_TEXT:
        return _refused(actor, text, 400, f"a sentence of at most {MAX_TEXT} characters, got {len(text)}")
    try:
        answer = local.handle(actor, text)
    except local.NotUnderstood as not_understood:
        return _ask_models(actor, text, not_understood)
    if answer.status != 200:
        return answer.status, answer.body()  # 403: already audited as a deny by the scope check
    _answered(actor, text, "local", {"intent": answer.intent, "understood": answer.understood[:200], "commands": len(answer.commands)})
    return 200, answer.body()


def _answered(actor: Actor, text: str, handled_by: str, details: dict[str, Any]) -> None:
    """The audit event of an answered sentence: who handled it (local, or the provider)."""
    record(
        actor,
        "assistant.ask",
        Decision.ALLOW,
        scope=Scope.READ_STATUS,
        target_type="assistant",
        target_id=handled_by,
        details={"text": text[:200], "handled_by": "local" if handled_by == "local" else "llm", **details},
    )


def _refused(actor: Actor, text: Any, status: int, reason: str, choices: list[dict[str, Any]] | None = None) -> tuple[int, dict[str, Any]]:
    shown = text[:200] if isinstance(text, str) else repr(text)[:200]
    record(
        actor, "assistant.ask", Decision.DENY, scope=Scope.READ_STATUS, target_type="assistant", target_id="local", reason=reason[:500], details={"text": shown}
    )
    return status, {"field": "text", "reason": reason, "choices": choices or []}


def _about_fleet(text: str) -> bool:
    known = names.index
    known.refresh()
    vocabulary = local.vocabulary()
    words = names.normalise(text)

    class Known:
        def __contains__(self, phrase: object) -> bool:
            return phrase in known.exact or phrase in vocabulary

    return router.about_fleet(words, Known())


def _ask_models(actor: Actor, text: str, not_understood: local.NotUnderstood) -> tuple[int, dict[str, Any]]:
    providers = llm.configured()
    if not providers:
        return _refused(actor, text, 400, not_understood.reason, not_understood.choices)
    now = time.monotonic()
    decision = router.route(
        _about_fleet(text),
        providers,
        breakers.snapshot(),
        now,
        cloud_for_devices=settings.LLM_CLOUD_FOR_DEVICES,
        open_s=settings.LLM_BREAKER_OPEN_S,
    )
    failures: list[str] = []

    def route(failed: list[str]) -> dict[str, Any]:
        return {"reason": decision.reason, "about_fleet": decision.about_fleet, "failed": failed}

    for name in decision.order:
        provider = providers[name]
        breakers.before(name, now)
        scrubber = scrubber_for(names.index, settings.SECRET_KEY) if provider.scrubbed else None
        try:
            conversation = llm.converse(provider, actor, text, scrubber)
        except llm.ProviderFailed as failed:
            breakers.failure(name, time.monotonic(), str(failed))
            failures.append(str(failed))
            continue
        breakers.success(name)
        _answered(actor, text, name, {"provider": name, "route": decision.reason[:300], "tool_calls": [c["name"] for c in conversation.tool_calls][:20]})
        answer = local.Answer(understood=f"asked the {name} model: {text[:100]}", commands=conversation.commands, answer=conversation.answer)
        return 200, {**answer.body("llm", name), "route": route(failures)}
    reason = f"{not_understood.reason}; no model answered: {decision.reason}" + (f"; {'; '.join(failures)}" if failures else "")
    status, body = _refused(actor, text, 400, reason, not_understood.choices)
    return status, {**body, "handled_by": "local", "route": route(failures)}
