"""Firmware in the admin: releases (read-only: they come in signed, through the upload
checks), rollouts with their controls, and each device's firmware with the per-device
controls (force a rollback, clear a pending image, clear the boot guard). The actions call
the same services as the API and the pages, which check the admin's scopes and audit."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from devices.admin import ReasonForm, admin_actor, confirm_page
from ota import rollouts
from ota.models import Deployment, DeviceFirmware, FirmwareRelease, Rollout


def _each(request: HttpRequest, items: QuerySet[Any], operation: Any, done: str) -> None:
    ok = 0
    for item in items:
        try:
            operation(item)
            ok += 1
        except rollouts.RolloutRefused as exc:
            messages.error(request, f"{item}: {exc.reason}")
    if ok:
        messages.success(request, f"{done}: {ok}")


@admin.register(FirmwareRelease)
class FirmwareReleaseAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "security_counter", "size", "key_id", "expires_at", "uploaded_by", "uploaded_at"]
    search_fields = ["name", "version", "sha256", "build_id"]
    readonly_fields = [f.name for f in FirmwareRelease._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # releases come in through the upload checks (API, page, manage.py ota upload)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeploymentInline(admin.TabularInline):
    model = Deployment
    fields = ["device", "wave", "state", "reason", "offset", "beacons", "state_changed_at"]
    readonly_fields = ["device", "wave", "state", "reason", "offset", "beacons", "state_changed_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["id", "release", "state", "wave", "awaiting_approval", "reason", "created_by", "created_at"]
    list_filter = ["state"]
    readonly_fields = [f.name for f in Rollout._meta.fields]
    inlines = [DeploymentInline]
    actions = ["pause", "resume", "abort", "approve"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created through the API or the rollout page, with their checks

    def _control(self, request: HttpRequest, queryset: QuerySet[Rollout], action: str, done: str) -> None:
        _each(request, queryset, lambda r: rollouts.control(admin_actor(request), r.pk, action), done)

    @admin.action(description="Pause selected rollouts", permissions=["view"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        self._control(request, queryset, "pause", "Paused")

    @admin.action(description="Resume selected rollouts", permissions=["view"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        self._control(request, queryset, "resume", "Resumed")

    @admin.action(description="Abort selected rollouts", permissions=["view"])
    def abort(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        self._control(request, queryset, "abort", "Aborted")

    @admin.action(description="Approve the next wave", permissions=["view"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> None:
        self._control(request, queryset, "approve", "Approved")


@admin.register(DeviceFirmware)
class DeviceFirmwareAdmin(admin.ModelAdmin):
    list_display = ["device", "version", "slot", "previous_version", "safe_mode", "consecutive_fails", "last_boot_reason", "last_rollback_at"]
    list_filter = ["safe_mode", "version"]
    search_fields = ["device__node_id", "version"]
    readonly_fields = [f.name for f in DeviceFirmware._meta.fields]
    actions = ["force_rollback", "clear_pending", "clear_bootguard"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written from the devices' boot frames

    def _device_control(self, request: HttpRequest, queryset: QuerySet[DeviceFirmware], control: str, title: str, explanation: str) -> HttpResponse | None:
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            _each(request, queryset, lambda f: rollouts.device_control(admin_actor(request), f.device.node_id, control, reason), "Sent")
            return None
        return confirm_page(self, request, queryset, title=title, button="Send", explanation=explanation, form=form if form.is_bound else ReasonForm())

    @admin.action(description="Force a rollback to the previous slot", permissions=["view"])
    def force_rollback(self, request: HttpRequest, queryset: QuerySet[DeviceFirmware]) -> HttpResponse | None:
        return self._device_control(
            request,
            queryset,
            "rollback",
            "Force rollback",
            "Each device is sent a signed ota.rollback: it reverts to its other slot, if that holds a valid image, and reboots.",
        )

    @admin.action(description="Clear a pending image", permissions=["view"])
    def clear_pending(self, request: HttpRequest, queryset: QuerySet[DeviceFirmware]) -> HttpResponse | None:
        return self._device_control(request, queryset, "clear", "Clear pending image", "Each device drops a staged or pending image and its transfer state.")

    @admin.action(description="Clear the boot guard (leave safe mode)", permissions=["view"])
    def clear_bootguard(self, request: HttpRequest, queryset: QuerySet[DeviceFirmware]) -> HttpResponse | None:
        return self._device_control(
            request, queryset, "bootguard.clear", "Clear boot guard", "Each device clears its failure counters and leaves safe mode after its next good boot."
        )
