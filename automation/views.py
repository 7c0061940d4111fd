"""The automation pages: `/automation/` (rules: enabled, last fired, last outcome, why the hub
disabled one), `/automation/new/` and `/automation/<id>/` (the rule editor: the document,
validation refusals shown inline with their field, a dry-run over recorded telemetry shown as
a timeline, the run history), `/scenes/` (scenes, snapshot, activate with each member's
result). Every action goes through the same services as the API, which check the scope
(`command`) and audit; a page that showed a button is not authority."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from audit.services import ScopeDenied
from automation import dryrun, rules, scenes
from automation.disclosure import masked_document
from automation.models import Rule, Scene
from automation.validation import RuleInvalid
from hub.actors import actor_for_request
from hub.pages import scopes
from hub.scopes import Scope

EXAMPLE = {
    "name": "cool the room",
    "enabled": True,
    "mode": "single",
    "cooldown_s": 60,
    "when": {"all": [{"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10}]},
    "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}],
}
DRY_RUN_HOURS = (1, 6, 24, 24 * 7)


def rule_list(request: HttpRequest) -> HttpResponse:
    rendered_at = timezone.now()  # before the rows are read: the page's socket asks for runs since then
    return render(request, "automation/rule_list.html", {"rules": Rule.objects.order_by("name"), "rendered_at": rendered_at})


def _editor(
    request: HttpRequest, rule: Rule | None, text: str, *, refusal: Any = None, firings: Any = None, hours: int = 24, status: int = 200
) -> HttpResponse:
    context = {
        "rendered_at": timezone.now(),  # before the runs are read: the page's socket asks for runs since then
        "rule": rule,
        "text": text,
        "refusal": refusal,
        "firings": firings,
        "hours": hours,
        "hour_choices": DRY_RUN_HOURS,
        "runs": rule.runs.all()[:50] if rule else [],
    }
    return render(request, "automation/rule_editor.html", context, status=status)


def rule_new(request: HttpRequest) -> HttpResponse:
    return _editor(request, None, json.dumps(EXAMPLE, indent=2))


def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(Rule, pk=pk)
    document = rule.document if Scope.COMMAND in scopes(request) else masked_document(rule.document)  # a reader: no webhook secrets
    return _editor(request, rule, json.dumps(document, indent=2))


def _document(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleInvalid("", f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


@require_POST
def rule_save(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    rule = get_object_or_404(Rule, pk=pk) if pk is not None else None
    text = request.POST.get("document", "")
    actor = actor_for_request(request)
    try:
        document = _document(text)
        if request.POST.get("intent") == "dry-run":
            hours = int(request.POST.get("hours") or 24)
            end = timezone.now()
            firings = dryrun.dry_run(document, end - timedelta(hours=hours), end)["firings"]
            return _editor(request, rule, text, firings=firings, hours=hours)
        saved = rules.replace(actor, rule.pk, document) if rule else rules.create(actor, document)
    except ScopeDenied as denied:
        raise PermissionDenied(denied.reason) from None  # the service audited the deny
    except RuleInvalid as refused:  # a DryRunRefused too
        return _editor(request, rule, text, refusal=refused, status=400)
    messages.success(request, f"Rule '{saved.name}' saved.")
    return HttpResponseRedirect(reverse("automation-rule-page", args=[saved.pk]))


@require_POST
def rule_control(request: HttpRequest, pk: int, control: str) -> HttpResponse:
    rule = get_object_or_404(Rule, pk=pk)
    actor = actor_for_request(request)
    try:
        if control == "delete":
            rules.delete(actor, rule.pk)
            messages.success(request, f"Rule '{rule.name}' deleted.")
            return HttpResponseRedirect(reverse("automation-page"))
        if control not in ("enable", "disable"):
            raise PermissionDenied(f"no control {control!r}")
        rules.change(actor, rule.pk, {"enabled": control == "enable"})
    except ScopeDenied as denied:
        raise PermissionDenied(denied.reason) from None
    except RuleInvalid as invalid:
        messages.error(request, f"{invalid.field}: {invalid.reason}")
    return HttpResponseRedirect(reverse("automation-page"))


def scene_list(request: HttpRequest, context: dict[str, Any] | None = None, status: int = 200) -> HttpResponse:
    base: dict[str, Any] = {"scenes": Scene.objects.order_by("name"), "refusal": None, "results": None, "form": {}}
    return render(request, "automation/scene_list.html", {**base, **(context or {})}, status=status)


@require_POST
def scene_snapshot(request: HttpRequest) -> HttpResponse:
    form = {"name": request.POST.get("name", ""), "devices": request.POST.get("devices", "")}
    devices = [d.strip() for d in form["devices"].replace("\n", ",").split(",") if d.strip()]
    try:
        scene = scenes.snapshot(actor_for_request(request), form["name"], devices)
    except ScopeDenied as denied:
        raise PermissionDenied(denied.reason) from None
    except RuleInvalid as invalid:
        return scene_list(request, {"refusal": invalid, "form": form}, status=400)
    messages.success(request, f"Scene '{scene.name}' saved with {len(scene.members)} members.")
    return HttpResponseRedirect(reverse("scenes-page"))


@require_POST
def scene_activate(request: HttpRequest, pk: int) -> HttpResponse:
    scene = get_object_or_404(Scene, pk=pk)
    try:
        results = scenes.activate(actor_for_request(request), scene.pk)
    except ScopeDenied as denied:
        raise PermissionDenied(denied.reason) from None
    return scene_list(request, {"results": results, "activated": scene})
