"""REST API for the registry: devices, commands, groups. Thin: parse, check, call a service."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from audit.models import Decision
from devices import identity, services
from devices.details import details
from devices.identity_api import CertificateSerializer, FactoryResetTicketSerializer, ReasonSerializer, TokenSerializer
from devices.models import Capability, Command, CommandAction, CommandStatus, Device, DeviceStatus, Group
from devices.telemetry import TelemetryQuery
from hub import idempotency
from hub.actors import actor_for_request
from hub.filters import to_utc
from hub.permissions import audit_request, required_scope
from hub.scopes import Scope
from hub.serializers import ServiceCheckedField, StrictBodySerializer, first_error

MAX_BATCH = 500
TELEMETRY_MAX_RAW_DAYS = 366  # raw samples come RAW_LIMIT at a time anyway
TELEMETRY_MAX_BUCKETED_DAYS = 3660  # ten years of daily rollups
TELEMETRY_MAX_BUCKETS = 50_000  # per capability: beyond it, ask for wider buckets


class CapabilitySerializer(serializers.ModelSerializer):
    min = serializers.FloatField(source="min_value", allow_null=True, read_only=True)
    max = serializers.FloatField(source="max_value", allow_null=True, read_only=True)

    class Meta:
        model = Capability
        fields = ["name", "kind", "value_type", "unit", "min", "max", "enum_values", "writable", "aliases"]


class DeviceListSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["node_id", "name", "aliases", "device_type", "firmware_version", "status", "online", "last_seen", "reported", "desired"]


class DeviceSerializer(DeviceListSerializer):
    capabilities = CapabilitySerializer(many=True, read_only=True)
    groups: serializers.SlugRelatedField[Group] = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta(DeviceListSerializer.Meta):
        fields = [*DeviceListSerializer.Meta.fields, "metadata", "capabilities", "groups", "created_at", "updated_at"]

    def to_representation(self, instance: Device) -> dict[str, Any]:
        """Plus the sections apps registered (devices.details): `firmware` from the OTA app."""
        return {**super().to_representation(instance), **details.for_device(instance)}


class CommandSerializer(serializers.ModelSerializer):
    node_id = serializers.CharField(source="device.node_id", read_only=True)

    class Meta:
        model = Command
        fields = [
            "id", "node_id", "action", "capability", "value", "scope", "status", "requested_by",
            "created_at", "expires_at", "delivered_at", "completed_at", "result",
        ]  # fmt: skip


class CommandRequestSerializer(StrictBodySerializer):
    """A command body's shape (a JSON object with only these keys); the values go to
    send_command as sent, whose six levels answer for each with the failing level."""

    action = ServiceCheckedField(serializers.ChoiceField(choices=CommandAction.choices))
    capability = ServiceCheckedField(serializers.CharField())
    value = ServiceCheckedField(serializers.JSONField(allow_null=True), required=False, help_text='Any JSON value: true, 21.5, "auto". Omit for get/toggle.')
    ttl_s = ServiceCheckedField(
        serializers.IntegerField(min_value=1, max_value=settings.COMMAND_MAX_TTL_S),
        required=False,
        help_text=f"Seconds until the command expires (default {settings.COMMAND_DEFAULT_TTL_S}).",
    )


class NodeCommandRequestSerializer(CommandRequestSerializer):
    node_id = ServiceCheckedField(serializers.CharField())


class BatchRequestSerializer(StrictBodySerializer):
    """Up to 500 commands; each item's values are judged on their own (one result each)."""

    commands = serializers.ListField(child=NodeCommandRequestSerializer(), min_length=1, max_length=MAX_BATCH)

    def to_internal_value(self, data: Any) -> Any:
        self.check_shape(data)
        items = data.get("commands")
        if not isinstance(items, list) or not items:
            raise serializers.ValidationError({"commands": "commands must be a non-empty list"})
        if len(items) > MAX_BATCH:
            raise serializers.ValidationError({"commands": f"at most {MAX_BATCH} commands per batch, got {len(items)}"})
        known = set(NodeCommandRequestSerializer().fields)
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise serializers.ValidationError({f"commands[{index}]": "each command must be a JSON object"})
            unknown = sorted(set(item) - known)
            if unknown:
                raise serializers.ValidationError({f"commands[{index}].{unknown[0]}": f"unknown field '{unknown[0]}'"})
        return super().to_internal_value(data)


class RejectionSerializer(serializers.Serializer):
    field = serializers.CharField()
    reason = serializers.CharField()
    level = serializers.ChoiceField(choices=list(services.CommandRejected.LEVELS.values()), required=False, help_text="The failing level.")
    guard = serializers.CharField(required=False, help_text="At level interlock: the command guard that refused.")


class OutcomeSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    ok = serializers.BooleanField()
    id = serializers.UUIDField(required=False)
    status = serializers.CharField(required=False)
    field = serializers.CharField(required=False)
    reason = serializers.CharField(required=False)
    level = serializers.ChoiceField(choices=list(services.CommandRejected.LEVELS.values()), required=False, help_text="The failing level.")
    guard = serializers.CharField(required=False, help_text="At level interlock: the command guard that refused.")


class OutcomeListSerializer(serializers.Serializer):
    results = OutcomeSerializer(many=True)
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()


IDEMPOTENCY_KEY = OpenApiParameter(idempotency.HEADER, str, OpenApiParameter.HEADER, required=False, description=idempotency.HEADER_DESCRIPTION)
KEY_REFUSALS = {
    409: OpenApiResponse(RejectionSerializer, description=f"The {idempotency.HEADER} was already used for another request."),
}


def rejection(field: str, reason: str) -> Response:
    return Response({"field": field, "reason": reason}, status=status.HTTP_400_BAD_REQUEST)


def command_body(request: Request, serializer_class: type[StrictBodySerializer]) -> dict[str, Any] | Response:
    """The validated body, or the 400 to answer (naming the field)."""
    params = serializer_class(data=request.data)
    if not params.is_valid():
        return rejection(*first_error(params.errors))
    return dict(params.validated_data)


def audited_rejection(request: Request, view: Any, response: Response) -> Response:
    """A 400 built by hand (not raised) still lands in the audit log as a deny."""
    audit_request(request, view, Decision.DENY, required_scope(request, view), response.data["reason"])
    return response


def outcomes_response(outcomes: list[services.CommandOutcome]) -> Response:
    results = [o.as_dict() for o in outcomes]
    accepted = sum(1 for r in results if r["ok"])
    return Response({"results": results, "accepted": accepted, "rejected": len(results) - accepted})


class DeviceFilter(django_filters.FilterSet):
    group = django_filters.CharFilter(field_name="groups__name", label="Group name")
    status = django_filters.ChoiceFilter(choices=DeviceStatus.choices)

    class Meta:
        model = Device
        fields = ["device_type", "status", "online", "group", "firmware_version"]


class CSVRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None) -> bytes:
        if not isinstance(data, dict) or "columns" not in data:
            # Errors rendered for a CSV request: keep them readable as one row.
            data = {"columns": ["field", "reason"], "rows": [[data.get("field", ""), data.get("reason", data)]] if isinstance(data, dict) else [["", data]]}
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(data["columns"])
        writer.writerows(data["rows"])
        return out.getvalue().encode("utf-8")


def parse_when(value: str | None, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise serializers.ValidationError({field: f"'{value}' is not an ISO-8601 date-time"})
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
    return to_utc(parsed, field)


class DeviceViewSet(viewsets.ReadOnlyModelViewSet):
    """Devices and their state. Devices join through enrollment, not through this API."""

    lookup_field = "node_id"
    lookup_value_regex = r"[a-z0-9-]{1,64}"
    filterset_class = DeviceFilter
    search_fields = ["node_id", "name"]
    ordering_fields = ["node_id", "name", "last_seen", "created_at"]
    scope_map = {
        "partial_update": Scope.ADMIN,
        "PATCH": Scope.COMMAND,
        "POST": Scope.COMMAND,
        "revoke": Scope.RESET,
        "provision_reset": Scope.RESET,
        "factory_reset": Scope.RESET,
        "factory_reset_confirm": Scope.RESET,
    }
    # hub.permissions.decided_by_service: these services check the scope and audit it
    service_decides = ("partial_update", "commands", "desired", "revoke", "provision_reset", "factory_reset", "factory_reset_confirm")
    audit_target_type = "device"

    def get_queryset(self) -> QuerySet[Device]:
        qs = Device.objects.all()
        if self.action == "retrieve":
            qs = qs.prefetch_related("capabilities", "groups")
        return qs

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return DeviceListSerializer if self.action == "list" else DeviceSerializer

    @extend_schema(
        request=inline_serializer(
            "DeviceRename",
            fields={"name": serializers.CharField(required=False), "aliases": serializers.ListField(child=serializers.CharField(), required=False)},
        ),
        responses={200: DeviceSerializer, 400: RejectionSerializer},
        description="How people call the device (scope admin): its name and aliases, which the assistant matches.",
    )
    def partial_update(self, request: Request, node_id: str) -> Response:
        try:
            device = services.rename_device(actor_for_request(request), node_id, request.data)
        except services.RenameRejected as rejected:
            code = status.HTTP_404_NOT_FOUND if rejected.field == "node_id" else status.HTTP_400_BAD_REQUEST
            return Response(rejected.as_dict(), status=code)
        return Response(DeviceSerializer(Device.objects.prefetch_related("capabilities", "groups").get(pk=device.pk)).data)

    @extend_schema(responses=CapabilitySerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def capabilities(self, request: Request, node_id: str) -> Response:
        device = self.get_object()
        return Response(CapabilitySerializer(device.capabilities.all(), many=True).data)

    @extend_schema(
        methods=["GET"],
        responses=inline_serializer("DeviceState", fields={"reported": serializers.JSONField(), "desired": serializers.JSONField()}),
    )
    @extend_schema(
        methods=["PATCH"],
        request=OpenApiTypes.OBJECT,
        description="Merge capability values into desired state (null clears one) and command the delta from reported.",
        responses={
            200: inline_serializer("DesiredResult", fields={"desired": serializers.JSONField(), "commands": CommandSerializer(many=True)}),
            400: OpenApiTypes.OBJECT,
        },
    )
    @action(detail=True, methods=["get", "patch"], filter_backends=[], pagination_class=None)
    def desired(self, request: Request, node_id: str) -> Response:
        device = self.get_object()
        if request.method == "GET":
            return Response({"reported": device.reported, "desired": device.desired})
        try:
            device, commands = services.set_desired(actor_for_request(request), device.node_id, request.data)
        except services.DesiredRejected as rejected:
            return Response(rejected.errors, status=status.HTTP_400_BAD_REQUEST)
        return Response({"desired": device.desired, "commands": CommandSerializer(commands, many=True).data})

    @extend_schema(
        methods=["POST"],
        request=CommandRequestSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: CommandSerializer, 400: RejectionSerializer, **KEY_REFUSALS},
    )
    @extend_schema(methods=["GET"], responses=CommandSerializer(many=True))
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def commands(self, request: Request, node_id: str) -> Response:
        if request.method == "GET":
            device = self.get_object()
            page = self.paginate_queryset(device.commands.select_related("device").order_by("-created_at"))
            return self.get_paginated_response(CommandSerializer(page, many=True).data)
        return idempotency.respond(request, self, lambda: self._send(request, node_id), scope=Scope.COMMAND)

    def _send(self, request: Request, node_id: str) -> Response:
        body = command_body(request, CommandRequestSerializer)
        if isinstance(body, Response):
            return audited_rejection(request, self, body)
        try:
            command = services.send_command(
                actor_for_request(request), node_id, body.get("action"), body.get("capability"), body.get("value", services.MISSING), ttl_s=body.get("ttl_s")
            )
        except services.CommandRejected as rejected:
            return Response(rejected.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        return Response(CommandSerializer(command).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("capability", str, description="Only this capability"),
            OpenApiParameter("start", OpenApiTypes.DATETIME, description="Inclusive; default end − 24 h"),
            OpenApiParameter("end", OpenApiTypes.DATETIME, description="Exclusive; default now"),
            OpenApiParameter(
                "bucket",
                int,
                description="Bucket width in seconds (60–86400); omitted = raw samples. A range reaching back past the raw window "
                "is answered in whole hours (past the hourly window, whole days): the response's bucket_s says which.",
            ),
            OpenApiParameter("format", str, enum=["json", "csv"]),
        ],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "text/csv"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, CSVRenderer], filter_backends=[], pagination_class=None)
    def telemetry(self, request: Request, node_id: str) -> Response:
        device = self.get_object()
        params = request.query_params
        end = parse_when(params.get("end"), "end") or timezone.now()
        start = parse_when(params.get("start"), "start") or end - timedelta(hours=24)
        if start >= end:
            raise serializers.ValidationError({"start": "start must be before end"})
        capability = params.get("capability") or None
        if capability and not device.capabilities.filter(name=capability).exists():
            raise serializers.ValidationError({"capability": f"device '{device.node_id}' has no capability '{capability}'"})
        bucket_s: int | None = None
        if params.get("bucket"):
            try:
                bucket_s = int(params["bucket"])
            except ValueError:
                raise serializers.ValidationError({"bucket": "bucket must be a whole number of seconds"}) from None
            if not 60 <= bucket_s <= 86400:
                raise serializers.ValidationError({"bucket": "bucket must be between 60 and 86400 seconds"})
        longest = TELEMETRY_MAX_BUCKETED_DAYS if bucket_s else TELEMETRY_MAX_RAW_DAYS
        if end - start > timedelta(days=longest):
            why = "in buckets" if bucket_s else "of raw samples; ask with bucket for longer ranges"
            raise serializers.ValidationError({"start": f"range is limited to {longest} days {why}"})
        query = TelemetryQuery(device, start, end, capability, bucket_s)
        if bucket_s and (end - start).total_seconds() / query.effective_bucket_s() > TELEMETRY_MAX_BUCKETS:
            raise serializers.ValidationError(
                {"bucket": f"this range in {bucket_s} s buckets is more than {TELEMETRY_MAX_BUCKETS:,} buckets: ask for wider ones"}
            )
        retention = query.retention()
        as_csv = request.accepted_renderer.format == "csv"
        if bucket_s:
            buckets = query.buckets()
            if as_csv:
                rows = [[b["ts"].isoformat(), b["capability"], b["avg"], b["min"], b["max"], b["count"], b["resolution"]] for b in buckets]
                return Response(
                    {"columns": ["bucket_start", "capability", "avg", "min", "max", "count", "resolution"], "rows": rows}, headers=self._csv_headers(device)
                )
            return Response(
                {
                    "node_id": device.node_id,
                    "start": start,
                    "end": end,
                    "bucket_s": query.effective_bucket_s(),
                    "requested_bucket_s": bucket_s,
                    "retention": retention,
                    "buckets": buckets,
                }
            )
        samples, truncated = query.raw()
        if as_csv:
            rows = [[s["ts"].isoformat(), s["capability"], s["value"]] for s in samples]
            return Response({"columns": ["ts", "capability", "value"], "rows": rows}, headers=self._csv_headers(device))
        body = {"node_id": device.node_id, "start": start, "end": end, "samples": samples, "truncated": truncated, "retention": retention}
        raw_from = retention["raw_from"]
        if raw_from is not None and start < raw_from:
            body["note"] = f"raw samples are kept from {raw_from.isoformat()} on; older telemetry is in hourly and daily rollups: ask with bucket"
        return Response(body)

    def _identity_call(self, request: Request, operation: Any) -> Response:
        try:
            return Response(operation())
        except identity.IdentityError as exc:
            return Response({"field": "node_id", "reason": exc.reason}, status=status.HTTP_400_BAD_REQUEST)

    @extend_schema(request=ReasonSerializer, responses={200: CertificateSerializer(many=True)})
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def revoke(self, request: Request, node_id: str) -> Response:
        """Revoke every active certificate; the live session is closed within a second."""
        device = self.get_object()
        params = ReasonSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        actor = actor_for_request(request)
        return self._identity_call(
            request, lambda: CertificateSerializer(identity.revoke_device(actor, device.node_id, params.validated_data["reason"]), many=True).data
        )

    @extend_schema(request=None, responses={200: DeviceSerializer})
    @action(detail=True, methods=["post"], url_path="provision-reset", filter_backends=[], pagination_class=None)
    def provision_reset(self, request: Request, node_id: str) -> Response:
        """Revoke, cancel pending commands, clear desired state; the device may enroll again."""
        device = self.get_object()
        actor = actor_for_request(request)
        return self._identity_call(request, lambda: DeviceSerializer(identity.provision_reset(actor, device.node_id)).data)

    @extend_schema(request=None, responses={200: FactoryResetTicketSerializer})
    @action(detail=True, methods=["post"], url_path="factory-reset", filter_backends=[], pagination_class=None)
    def factory_reset(self, request: Request, node_id: str) -> Response:
        """Step one of two: returns a token to confirm with within 60 seconds."""
        device = self.get_object()
        reset, token = identity.request_factory_reset(actor_for_request(request), device.node_id)
        return Response({"token": token, "expires_at": reset.expires_at})

    @extend_schema(request=TokenSerializer, responses={200: DeviceSerializer})
    @action(detail=True, methods=["post"], url_path="factory-reset/confirm", filter_backends=[], pagination_class=None)
    def factory_reset_confirm(self, request: Request, node_id: str) -> Response:
        device = self.get_object()
        params = TokenSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        actor = actor_for_request(request)
        try:
            return Response(DeviceSerializer(identity.confirm_factory_reset(actor, device.node_id, params.validated_data["token"])).data)
        except identity.IdentityError as exc:
            return Response({"field": "token", "reason": exc.reason}, status=status.HTTP_400_BAD_REQUEST)

    @staticmethod
    def _csv_headers(device: Device) -> dict[str, str]:
        return {"Content-Disposition": f'attachment; filename="{device.node_id}-telemetry.csv"'}


class CommandFilter(django_filters.FilterSet):
    node_id = django_filters.CharFilter(field_name="device__node_id")
    status = django_filters.ChoiceFilter(choices=CommandStatus.choices)
    action = django_filters.ChoiceFilter(choices=CommandAction.choices)

    class Meta:
        model = Command
        fields = ["node_id", "status", "action", "capability"]


class CommandViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The command outbox: create one, many, and follow their status."""

    queryset = Command.objects.select_related("device").order_by("-created_at")
    serializer_class = CommandSerializer
    filterset_class = CommandFilter
    ordering_fields = ["created_at", "expires_at", "status"]
    scope_map = {"create": Scope.COMMAND, "batch": Scope.COMMAND}
    service_decides = ("create", "batch")
    audit_target_type = "command"

    @extend_schema(
        request=NodeCommandRequestSerializer, parameters=[IDEMPOTENCY_KEY], responses={201: CommandSerializer, 400: RejectionSerializer, **KEY_REFUSALS}
    )
    def create(self, request: Request) -> Response:
        return idempotency.respond(request, self, lambda: self._create(request), scope=Scope.COMMAND)

    def _create(self, request: Request) -> Response:
        body = command_body(request, NodeCommandRequestSerializer)
        if isinstance(body, Response):
            return audited_rejection(request, self, body)
        try:
            command = services.send_command(
                actor_for_request(request),
                body.get("node_id"),
                body.get("action"),
                body.get("capability"),
                body.get("value", services.MISSING),
                ttl_s=body.get("ttl_s"),
            )
        except services.CommandRejected as rejected:
            return Response(rejected.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        return Response(CommandSerializer(command).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=BatchRequestSerializer, parameters=[IDEMPOTENCY_KEY], responses={200: OutcomeListSerializer, 400: RejectionSerializer, **KEY_REFUSALS}
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        """Up to 500 commands, each validated and created on its own; one result per item."""
        return idempotency.respond(request, self, lambda: self._batch(request), scope=Scope.COMMAND)

    def _batch(self, request: Request) -> Response:
        body = command_body(request, BatchRequestSerializer)
        if isinstance(body, Response):
            return audited_rejection(request, self, body)
        items = [dict(item) for item in body["commands"]]
        return outcomes_response(services.send_many(actor_for_request(request), items))


class NodeIdField(serializers.SlugRelatedField):
    """A device by node_id; refuses what could never be one before asking the database."""

    def to_internal_value(self, data: Any) -> Device:
        if not isinstance(data, str) or "\x00" in data:
            self.fail("invalid")
        return super().to_internal_value(data)


class GroupSerializer(serializers.ModelSerializer):
    members = NodeIdField(many=True, slug_field="node_id", queryset=Device.objects.all(), required=False)

    class Meta:
        model = Group
        fields = ["id", "name", "description", "members", "created_at", "updated_at"]


class GroupViewSet(viewsets.ModelViewSet):
    """Groups of devices; a group command fans out to every member."""

    queryset = Group.objects.prefetch_related("members").order_by("name")
    serializer_class = GroupSerializer
    search_fields = ["name"]
    filterset_fields = ["name"]
    scope_map = {"command": Scope.COMMAND}
    service_decides = ("command",)
    audit_target_type = "group"
    lookup_value_regex = r"[0-9]+"

    @extend_schema(
        request=CommandRequestSerializer, parameters=[IDEMPOTENCY_KEY], responses={200: OutcomeListSerializer, 400: RejectionSerializer, **KEY_REFUSALS}
    )
    @action(detail=True, methods=["post"])
    def command(self, request: Request, pk: str) -> Response:
        group = self.get_object()
        return idempotency.respond(request, self, lambda: self._fan_out(request, group), scope=Scope.COMMAND)

    def _fan_out(self, request: Request, group: Group) -> Response:
        body = command_body(request, CommandRequestSerializer)
        if isinstance(body, Response):
            return audited_rejection(request, self, body)
        outcomes = services.send_to_group(
            actor_for_request(request), group, body.get("action"), body.get("capability"), body.get("value", services.MISSING), ttl_s=body.get("ttl_s")
        )
        return outcomes_response(outcomes)
