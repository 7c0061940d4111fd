from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from devices.models import Capability, Command, Device, Group, TelemetrySample


class CapabilityInline(admin.TabularInline):
    model = Capability
    extra = 0
    fields = ("name", "kind", "value_type", "unit", "min_value", "max_value", "enum_values", "writable")


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("node_id", "name", "device_type", "status", "online", "last_seen", "firmware_version")
    list_filter = ("status", "online", "device_type", "groups")
    search_fields = ("node_id", "name", "firmware_version")
    inlines = [CapabilityInline]
    # Status, presence and reported state belong to enrollment, revocation and the gateway.
    readonly_fields = ("status", "online", "last_seen", "reported", "firmware_version", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(self.readonly_fields)
        return ("node_id", *fields) if obj is not None else fields


@admin.register(Capability)
class CapabilityAdmin(admin.ModelAdmin):
    list_display = ("device", "name", "kind", "value_type", "unit", "min_value", "max_value", "writable")
    list_filter = ("kind", "value_type", "writable")
    search_fields = ("device__node_id", "name")
    list_select_related = ("device",)
    autocomplete_fields = ("device",)


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "member_count")
    search_fields = ("name",)
    filter_horizontal = ("members",)

    @admin.display(description="members")
    def member_count(self, obj: Group) -> int:
        return obj.members.count()


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: viewing yes, hand-editing no."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Command)
class CommandAdmin(ReadOnlyAdmin):
    list_display = ("id", "device", "action", "capability", "value", "status", "requested_by", "created_at", "expires_at")
    list_filter = ("status", "action", "scope", "created_at")
    search_fields = ("id", "device__node_id", "capability", "requested_by")
    list_select_related = ("device",)
    date_hierarchy = "created_at"


@admin.register(TelemetrySample)
class TelemetrySampleAdmin(ReadOnlyAdmin):
    list_display = ("device", "capability", "ts", "value", "text")
    list_filter = ("capability",)
    search_fields = ("device__node_id", "capability")
    list_select_related = ("device",)
    date_hierarchy = "ts"
    show_full_result_count = False
