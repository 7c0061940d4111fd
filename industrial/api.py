"""REST: `GET /api/v1/modbus/bridges/` (read-status; config lives in the admin scope),
`POST /api/v1/modbus/import/` and `GET /api/v1/modbus/export/` (scope admin)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.actors import actor_for_request
from hub.scopes import Scope
from industrial import config
from industrial.models import ModbusBridge, ModbusPoint


class PointSerializer(serializers.ModelSerializer[ModbusPoint]):
    last_value = serializers.SerializerMethodField()

    class Meta:
        model = ModbusPoint
        fields = [
            "capability",
            "register",
            "address",
            "data_type",
            "byte_order",
            "word_order",
            "scale",
            "offset",
            "unit",
            "min_value",
            "max_value",
            "writable",
            "deadband",
            "quality",
            "quality_reason",
            "last_value",
        ]

    @extend_schema_field(OpenApiTypes.ANY)
    def get_last_value(self, point: ModbusPoint) -> Any:
        """The last good read (also within the deadband), kept on the bridge."""
        return point.bridge.live.get(point.capability)


class BridgeSerializer(serializers.ModelSerializer[ModbusBridge]):
    node_id = serializers.CharField(source="device.node_id", read_only=True)
    online = serializers.BooleanField(source="device.online", read_only=True)
    points = PointSerializer(many=True, read_only=True)

    class Meta:
        model = ModbusBridge
        fields = [
            "node_id",
            "name",
            "host",
            "port",
            "unit_id",
            "poll_interval_s",
            "timeout_s",
            "retries",
            "enabled",
            "byte_order",
            "word_order",
            "online",
            "last_poll_at",
            "last_ok_at",
            "last_error",
            "consecutive_failures",
            "points",
        ]


ImportResult = inline_serializer(
    "ModbusImportResult",
    {
        "bridges_created": serializers.IntegerField(),
        "bridges_updated": serializers.IntegerField(),
        "points": serializers.IntegerField(),
        "points_removed": serializers.IntegerField(),
    },
)
ImportErrors = inline_serializer(
    "ModbusImportErrors", {"field": serializers.CharField(), "reason": serializers.CharField(), "errors": serializers.ListField(child=serializers.CharField())}
)


class ModbusViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """PLC bridges with their points, live values and quality."""

    queryset = ModbusBridge.objects.select_related("device").prefetch_related("points").order_by("device__node_id")
    serializer_class = BridgeSerializer
    lookup_field = "device__node_id"
    lookup_url_kwarg = "node_id"
    lookup_value_regex = r"[a-z0-9-]{1,64}"
    scope_map = {"list": Scope.READ_STATUS, "retrieve": Scope.READ_STATUS}
    audit_target_type = "modbus"


class ModbusImportView(APIView):
    """`POST /api/v1/modbus/import/`: the PLC configuration JSON; nothing is written unless all of it is valid."""

    scope_map = {"POST": Scope.ADMIN}
    audit_target_type = "modbus"

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: ImportResult, 400: ImportErrors})
    def post(self, request: Request) -> Response:
        try:
            counts = config.import_document(actor_for_request(request), request.data)
        except config.ConfigError as exc:
            first = exc.errors[0]
            return Response({"field": first.split(":", 1)[0], "reason": first, "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        return Response(counts)


class ModbusExportView(APIView):
    """`GET /api/v1/modbus/export/`: every bridge in the import shape."""

    scope_map = {"GET": Scope.ADMIN}
    audit_target_type = "modbus"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(config.export())
