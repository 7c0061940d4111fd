"""Rules in the admin: read, enable and disable (through `automation.rules`, which checks
the admin's scope, validates and audits), delete; their runs read-only. Rules are written
through the API or `/automation/` (the editor validates the whole document)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from automation import rules
from automation.models import Rule, RuleRun
from automation.validation import RuleInvalid
from devices.admin import admin_actor


class RuleRunInline(admin.TabularInline):
    model = RuleRun
    fields = ["started_at", "outcome", "reason", "trigger", "actions"]
    readonly_fields = ["started_at", "outcome", "reason", "trigger", "actions"]
    extra = 0
    max_num = 0
    ordering = ["-started_at"]
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "mode", "cooldown_s", "last_fired_at", "last_outcome", "disabled_reason"]
    list_filter = ["enabled", "mode", "last_outcome"]
    search_fields = ["name"]
    readonly_fields = [f.name for f in Rule._meta.fields]
    inlines = [RuleRunInline]
    actions = ["enable", "disable"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the API and the rule editor validate the whole document

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleted through the service (audited): the API or the page

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Rule], enabled: bool) -> None:
        done = 0
        for rule in queryset:
            try:
                rules.change(admin_actor(request), rule.pk, {"enabled": enabled})
                done += 1
            except RuleInvalid as invalid:
                messages.error(request, f"{rule}: {invalid.field}: {invalid.reason}")
        if done:
            messages.success(request, f"{'Enabled' if enabled else 'Disabled'}: {done}")

    @admin.action(description="Enable the selected rules")
    def enable(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected rules")
    def disable(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        self._set_enabled(request, queryset, False)
