"""Outbound webhooks of rule runs: an HTTP POST with a timeout and retries, from a Celery task.

A run's webhook action is queued in the run (`queue`: an entry with status `queued`) and
handed to `automation.tasks.post_webhook` after the run commits, so a run that rolls back
posts nothing. The task (`deliver`) POSTs JSON, the action's `body` or, without one, what
fired (`rule`, `run`, `fired_at`, `trigger`), with `Idempotency-Key: meshhub-run-<run>-<n>`
so that a receiver can drop a retry it already took. Outcomes, recorded in the run's entry:

- a 2xx answer: `sent` with the status code;
- a 5xx, 408 or 429 answer, a timeout or a connection failure: retried with exponential
  backoff (MESHHUB_AUTOMATION_WEBHOOK_RETRIES times), then `failed` with the last reason;
- any other answer: `failed` at once (the receiver refused the request itself);
- an address the hub may not call: `refused`, audited as a deny.

The URL was checked at save (automation.validation); here the host name is resolved and
every address checked again (loopback, link-local, unspecified and multicast are refused
unless MESHHUB_AUTOMATION_WEBHOOK_PRIVATE), and the connection goes to the address that
was checked, with the URL's host name for `Host` and TLS verification: a DNS answer that
changes between the check and the connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import ActorType
from audit.services import Actor, Decision, record
from automation.models import Rule, RuleRun
from automation.validation import forbidden_address

logger = logging.getLogger("meshhub.automation")
RETRY_STATUS = frozenset({408, 429})
FINAL = frozenset({"sent", "failed", "refused"})
USER_AGENT = "meshhub-automation/1"


def queue(run: RuleRun, position: int, index: int, action: dict[str, Any]) -> dict[str, Any]:
    """The run's entry for a webhook action; the POST itself goes after the commit."""
    from automation import tasks

    run_id = run.pk
    transaction.on_commit(lambda: tasks.post_webhook.delay(run_id, position))
    entry: dict[str, Any] = {"action": index, "webhook": action["webhook"], "status": "queued", "attempts": 0}
    if "body" in action:
        entry["body"] = action["body"]
    return entry


@dataclass(frozen=True)
class Attempt:
    status: str  # sent | retry | failed | refused
    reason: str
    code: int | None = None


class Refused(Exception):
    """An address this hub may not call."""


def resolve(host: str, port: int) -> str:
    """The address to connect to: every address the name has is checked, the first is used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConnectionError(f"cannot resolve {host}: {error.strerror or error}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not settings.AUTOMATION_WEBHOOK_PRIVATE:
        for address in addresses:
            kind = forbidden_address(ipaddress.ip_address(address.split("%", 1)[0]))
            if kind:
                raise Refused(f"{host} resolves to {address}, a {kind} address: webhooks there are refused (MESHHUB_AUTOMATION_WEBHOOK_PRIVATE)")
    return addresses[0]


def post(url: str, payload: dict[str, Any], headers: dict[str, str], timeout_s: float) -> Attempt:
    """One POST of `payload` to `url`, connected to the checked address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        address = resolve(host, port)
    except Refused as refused:
        return Attempt("refused", str(refused))
    except ConnectionError as error:
        return Attempt("retry", str(error))
    connection: http.client.HTTPConnection | None = None
    try:
        sock = socket.create_connection((address, port), timeout=timeout_s)
        if https:
            context = ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=host)
            connection = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        connection.sock = sock  # the checked address; Host and TLS verification keep the name
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = json.dumps(payload, separators=(",", ":")).encode()
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
        answer = connection.getresponse()
        answer.read(64 * 1024)
        code = answer.status
    except ssl.SSLCertVerificationError as error:
        return Attempt("failed", f"TLS: {error.verify_message or error}")
    except (OSError, http.client.HTTPException) as error:
        return Attempt("retry", f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    finally:
        if connection is not None:
            connection.close()
    if 200 <= code < 300:
        return Attempt("sent", f"HTTP {code}", code)
    if code >= 500 or code in RETRY_STATUS:
        return Attempt("retry", f"HTTP {code}", code)
    return Attempt("failed", f"HTTP {code}", code)


def payload_of(run: RuleRun, entry: dict[str, Any]) -> dict[str, Any]:
    if isinstance(entry.get("body"), dict):
        return dict(entry["body"])
    return {"rule": run.rule.name, "run": run.pk, "fired_at": run.started_at.isoformat(), "trigger": run.trigger}


def deliver(run_id: int, position: int, attempt: int, last: bool) -> str:
    """One attempt at the run's webhook entry `position`: `sent`, `failed`, `refused`, `retry`
    (the task tries again later) or `gone` (the run or the entry no longer exists, or it was
    settled already: a task delivered twice posts once)."""
    run = RuleRun.objects.select_related("rule").filter(pk=run_id).first()
    if run is None or position >= len(run.actions) or "webhook" not in run.actions[position]:
        return "gone"
    entry = run.actions[position]
    if entry.get("status") in FINAL:
        return "gone"
    headers = {"Idempotency-Key": f"meshhub-run-{run_id}-{position}", "X-Meshhub-Rule": run.rule.name[:100]}
    result = post(entry["webhook"], payload_of(run, entry), headers, settings.AUTOMATION_WEBHOOK_TIMEOUT_S)
    status = "failed" if result.status == "retry" and last else result.status
    with transaction.atomic():
        # The rule, then its run, then (recording) the audit head: the order of the evaluator
        # and of runs.resume_due, which cancel or advance this rule's runs after recording.
        Rule.objects.select_for_update().filter(pk=run.rule_id).first()
        run = RuleRun.objects.select_for_update().get(pk=run_id)
        entry = dict(run.actions[position])
        entry.update({"status": "retrying" if status == "retry" else status, "attempts": attempt, "reason": result.reason, "at": timezone.now().isoformat()})
        if result.code is not None:
            entry["code"] = result.code
        run.actions = [*run.actions[:position], entry, *run.actions[position + 1 :]]
        run.save(update_fields=["actions"])
        actor = Actor(ActorType.RULE, str(run.rule_id), frozenset())
        if status == "refused":
            record(
                actor, "automation.webhook", Decision.DENY, target_type="rule", target_id=str(run.rule_id), reason=result.reason[:500], details={"run": run_id}
            )
        elif status == "sent":
            record(actor, "automation.webhook", Decision.ALLOW, target_type="rule", target_id=str(run.rule_id), details={"run": run_id, "code": result.code})
        from automation import runs

        runs.published(run)
    if status in ("failed", "refused"):
        logger.warning("webhook of rule run %s (then[%s]) %s: %s", run_id, entry.get("action"), status, result.reason)
    return status
