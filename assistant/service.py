"""One door for every surface (API, `manage.py ask`, the dashboard's Ask box, later the
router): `ask(actor, text)` → (HTTP status, body of ARCHITECTURE §9.3), audited.

Asking needs `read-status`; acting needs `command` (checked by `assistant.local` before
anything is sent, and again by each service it calls). Every request is audited with what
was understood and by whom it was handled."""

from __future__ import annotations

from typing import Any

from assistant import local
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
        return _refused(actor, text, 400, not_understood.reason, not_understood.choices)
    if answer.status != 200:
        return answer.status, answer.body()  # 403: already audited as a deny by the scope check
    record(
        actor,
        "assistant.ask",
        Decision.ALLOW,
        scope=Scope.READ_STATUS,
        target_type="assistant",
        target_id="local",
        details={"text": text[:200], "intent": answer.intent, "handled_by": "local", "understood": answer.understood[:200], "commands": len(answer.commands)},
    )
    return 200, answer.body()


def _refused(actor: Actor, text: Any, status: int, reason: str, choices: list[dict[str, Any]] | None = None) -> tuple[int, dict[str, Any]]:
    shown = text[:200] if isinstance(text, str) else repr(text)[:200]
    record(
        actor, "assistant.ask", Decision.DENY, scope=Scope.READ_STATUS, target_type="assistant", target_id="local", reason=reason[:500], details={"text": shown}
    )
    return status, {"field": "text", "reason": reason, "choices": choices or []}
