"""Admin for PLC bridges: connection settings are editable (rescheduled on save); points
come from the validated JSON import (`modbus import`, `POST /api/v1/modbus/import/`), so
here they are shown with their live value and quality, not edited one by one."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.models import Decision
from audit.services import record
from devices.admin import admin_actor
from hub.admin import ScopedChangesAdmin
from industrial import scheduling
from industrial.client import Endpoint, PlcClient, PlcError
from industrial.models import ModbusBridge, ModbusPoint
from industrial.polling import plan_reads

POINT_FIELDS: tuple[str, ...] = (
    "capability", "register", "address", "data_type", "scale", "offset", "unit", "writable", "quality", "quality_reason",
)  # fmt: skip


class PointInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ModbusPoint
    extra = 0
    can_delete = False
    fields = POINT_FIELDS
    readonly_fields = POINT_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModbusBridge)
class ModbusBridgeAdmin(ScopedChangesAdmin):
    """Connection settings need scope `admin` from the user's roles, like the import."""

    audit_name = "modbus.bridge"
    list_display = ["device", "name", "host", "port", "unit_id", "poll_interval_s", "enabled", "last_ok_at", "last_error"]
    list_filter = ["enabled"]
    search_fields = ["device__node_id", "name", "host"]
    readonly_fields = ["device", "live", "last_poll_at", "last_ok_at", "last_error", "consecutive_failures", "next_attempt_at", "lease_until"]
    inlines = [PointInline]
    actions = ["test_connection"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # bridges are created by the validated import

    def save_model(self, request: HttpRequest, obj: ModbusBridge, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        scheduling.schedule(obj)
        record(
            admin_actor(request),
            "modbus.bridge.change",
            Decision.ALLOW,
            scope="admin",
            target_type="device",
            target_id=obj.device.node_id,
            details={"fields": list(form.changed_data)},
        )

    @admin.action(description="Test connection (connect and read the first block of points)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ModbusBridge]) -> None:
        for bridge in queryset.select_related("device"):
            client = PlcClient(Endpoint.of(bridge))  # a fresh connection: the test must not ride on an old one
            try:
                client.connect()
                blocks = plan_reads(bridge.points.all())
                detail = "connected"
                if blocks:
                    words = client.read(blocks[0].register, blocks[0].start, blocks[0].count)
                    detail = f"connected; read {len(words)} {blocks[0].register} from {blocks[0].start}"
            except PlcError as error:
                record(
                    admin_actor(request),
                    "modbus.test",
                    Decision.DENY,
                    scope="admin",
                    target_type="device",
                    target_id=bridge.device.node_id,
                    reason=error.reason,
                )
                self.message_user(request, f"{bridge.device.node_id}: {error.reason}", messages.ERROR)
            else:
                record(
                    admin_actor(request),
                    "modbus.test",
                    Decision.ALLOW,
                    scope="admin",
                    target_type="device",
                    target_id=bridge.device.node_id,
                    details={"detail": detail},
                )
                self.message_user(request, f"{bridge.device.node_id}: {detail}", messages.SUCCESS)
            finally:
                client.close()
