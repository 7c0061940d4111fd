"""The firmware pages: releases and their upload (/firmware/, with the fleet's firmware:
versions, safe mode, boot loops, rollbacks), rollouts (/rollouts/) and one rollout with
its waves and controls (/rollouts/<id>/, refreshed live from the API).

Every action checks its scope in the service it calls (`ota`), the same one the API and
the admin use; a page that showed a button is not authority. The upload reads the body
through the bounded upload handler, so the view is csrf_exempt and checks the token
itself after setting the handlers (Django's documented pattern)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from hub.actors import actor_for_request
from hub.pages import require_scope
from hub.scopes import Scope
from ota import releases, rollouts, uploads
from ota.manifest import ManifestRefused
from ota.models import Deployment, DeploymentState, DeviceFirmware, FirmwareRelease, Rollout

RECENT_ROLLBACK_DAYS = 7


def _fleet() -> dict[str, Any]:
    firmware = DeviceFirmware.objects.select_related("device")
    since = timezone.now() - timedelta(days=RECENT_ROLLBACK_DAYS)
    return {
        "versions": list(firmware.values("version").annotate(devices=Count("pk"), safe=Count("pk", filter=Q(safe_mode=True))).order_by("-devices")),
        "safe_mode": list(firmware.filter(safe_mode=True).order_by("device__node_id")),
        "boot_loops": list(firmware.filter(safe_mode=False, consecutive_fails__gt=0).order_by("-consecutive_fails")),
        "rollbacks": list(firmware.filter(last_rollback_at__gte=since).order_by("-last_rollback_at")[:50]),
    }


def firmware_page(request: HttpRequest, context: dict[str, Any] | None = None, status: int = 200) -> HttpResponse:
    base = {"releases": FirmwareRelease.objects.order_by("-uploaded_at")[:100], "fleet": _fleet(), "refusal": None}
    return render(request, "ota/firmware.html", {**base, **(context or {})}, status=status)


@csrf_exempt
def release_upload(request: HttpRequest) -> HttpResponse:
    """POST: the signed manifest document and the image, checked like the API's upload."""
    if request.method != "POST":
        return HttpResponseRedirect(reverse("firmware-page"))
    uploads.limit_uploads(request)  # before anything reads the body, the CSRF check included
    return _upload(request)


@csrf_protect
def _upload(request: HttpRequest) -> HttpResponse:
    require_scope(request, Scope.OTA, "ota.release.upload", "release")
    too_large = getattr(request, "meshhub_upload_too_large", None)
    manifest_file = request.FILES.get("manifest")
    image = request.FILES.get("image")
    too_large = getattr(request, "meshhub_upload_too_large", too_large)
    try:
        if too_large is not None:
            raise ManifestRefused("too_large", "image", f"the upload is larger than this hub accepts ({too_large:,} bytes)")
        if manifest_file is None:
            raise ManifestRefused("malformed", "manifest", "choose the manifest file that `manage.py ota sign` wrote")
        if image is None:
            raise ManifestRefused("malformed", "image", "choose the image file")
        release = releases.store_release(actor_for_request(request), releases.Upload(manifest_file.read(64 * 1024 + 1), image, image.name or "image"))
    except ManifestRefused as refused:
        return firmware_page(request, {"refusal": refused}, status=400)
    messages.success(request, f"Release {release} stored ({release.size:,} bytes, sha256 {release.sha256[:12]}…).")
    return HttpResponseRedirect(reverse("firmware-page"))


def rollout_list(request: HttpRequest, context: dict[str, Any] | None = None, status: int = 200) -> HttpResponse:
    rows = Rollout.objects.select_related("release").annotate(
        total=Count("deployments"),
        done=Count("deployments", filter=Q(deployments__state=DeploymentState.SUCCEEDED)),
        errors=Count("deployments", filter=Q(deployments__state__in=[DeploymentState.FAILED, DeploymentState.ROLLED_BACK, DeploymentState.REJECTED])),
    )
    base = {
        "rollouts": rows.order_by("-created_at")[:100],
        "releases": FirmwareRelease.objects.filter(expires_at__gt=timezone.now()).order_by("-uploaded_at"),
        "form": {"waves": '[1, "10%", "50%", "100%"]', "targets": "all", "error_threshold": "0.2", "success_threshold": "0.9", "health_beacons": "3"},
        "refusal": None,
    }
    return render(request, "ota/rollout_list.html", {**base, **(context or {})}, status=status)


def _parse_targets(kind: str, value: str) -> dict[str, Any]:
    items = [v.strip() for v in value.replace("\n", ",").split(",") if v.strip()]
    if kind == "all":
        return {"all": True}
    if kind == "device_type":
        return {"device_type": value.strip()}
    return {kind: items}


@require_POST
def rollout_create(request: HttpRequest) -> HttpResponse:
    form = {
        k: request.POST.get(k, "")
        for k in ("release", "targets", "target_value", "waves", "error_threshold", "success_threshold", "health_beacons", "approval")
    }
    try:
        spec = rollouts.RolloutSpec(
            release=int(form["release"] or 0),
            targets=_parse_targets(form["targets"], form["target_value"]),
            waves=json.loads(form["waves"] or "[]"),
            error_threshold=float(form["error_threshold"]),
            success_threshold=float(form["success_threshold"]),
            health_beacons=int(form["health_beacons"]),
            approval=bool(form["approval"]),
        )
        rollout = rollouts.create(actor_for_request(request), spec)
    except (ValueError, json.JSONDecodeError) as exc:
        return rollout_list(request, {"form": form, "refusal": {"field": "form", "reason": str(exc)}}, status=400)
    except rollouts.RolloutRefused as refused:
        if refused.status == 403:
            raise PermissionDenied(refused.reason) from None  # the service audited the deny
        return rollout_list(request, {"form": form, "refusal": refused.as_dict()}, status=refused.status)
    messages.success(request, f"Rollout {rollout.pk} of {rollout.release} started.")
    return HttpResponseRedirect(reverse("rollout-page", args=[rollout.pk]))


def rollout_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rollout = get_object_or_404(Rollout.objects.select_related("release"), pk=pk)
    rows = list(Deployment.objects.filter(rollout=rollout).select_related("device").order_by("wave", "device__node_id"))
    return render(request, "ota/rollout_detail.html", {"rollout": rollout, "deployments": rows, "waves": _waves(rows), "states": DeploymentState.values})


def _waves(rows: list[Deployment]) -> list[dict[str, Any]]:
    found: dict[int, dict[str, int]] = {}
    for d in rows:
        found.setdefault(d.wave, {}).setdefault(d.state, 0)
        found[d.wave][d.state] += 1
    return [{"wave": wave, "total": sum(counts.values()), "counts": counts} for wave, counts in sorted(found.items())]


@require_POST
def rollout_control(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    try:
        rollout = rollouts.control(actor_for_request(request), pk, action)
    except rollouts.RolloutRefused as refused:
        if refused.status == 403:
            raise PermissionDenied(refused.reason) from None
        messages.error(request, refused.reason)
        return HttpResponseRedirect(reverse("rollout-page", args=[pk]))
    messages.success(request, f"Rollout {rollout.pk}: {action} done; it is {rollout.state}.")
    return HttpResponseRedirect(reverse("rollout-page", args=[pk]))


PAGE_CONTROLS = {"rollback": "rollback", "clear-pending": "clear", "clear-bootguard": "bootguard.clear"}


@require_POST
def device_firmware_control(request: HttpRequest, node_id: str, control: str) -> HttpResponse:
    """The device page's firmware card: a forced rollback, clearing an image on trial, or
    the boot guard; the service checks the scope (ota, or reset for the boot guard)."""
    if control not in PAGE_CONTROLS:
        raise Http404(f"no firmware control {control!r}")
    try:
        rollouts.device_control(actor_for_request(request), node_id, PAGE_CONTROLS[control], request.POST.get("reason", "").strip()[:200])
    except rollouts.RolloutRefused as refused:
        if refused.status == 403:
            raise PermissionDenied(refused.reason) from None
        if refused.status == 404:
            raise Http404(refused.reason) from None
        messages.error(request, refused.reason)
    else:
        messages.success(request, f"Sent to {node_id}: {control.replace('-', ' ')}. The firmware card shows the device's next boot.")
    return HttpResponseRedirect(reverse("device-page", args=[node_id]))
