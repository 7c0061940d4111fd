from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditChainHead, AuditEvent, AuditSnapshot


class AppendOnlyAdmin(admin.ModelAdmin):
    """Read-only: the chain is append-only, and the admin must not be a way around it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(AppendOnlyAdmin):
    list_display = ("seq", "ts", "decision", "action", "actor_type", "actor_id", "scope", "target_type", "target_id", "reason")
    list_filter = ("decision", "actor_type", "scope", "action", "ts")
    search_fields = ("actor_id", "action", "target_id", "reason")
    date_hierarchy = "ts"
    ordering = ("-seq",)


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(AppendOnlyAdmin):
    """Where the chain ends; shown so an operator can compare it with `audit verify`."""

    list_display = ("id", "seq", "hash")


@admin.register(AuditSnapshot)
class AuditSnapshotAdmin(AppendOnlyAdmin):
    """Signed days of the chain; checked by `audit verify` and on the snapshots page."""

    list_display = ("date", "count", "first_id", "last_id", "last_hash", "public_key", "created_at")
    date_hierarchy = "date"
    ordering = ("-date",)
