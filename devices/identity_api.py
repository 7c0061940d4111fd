"""REST API for device identity: enrollments, certificates, revocation and resets."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from devices import identity
from devices.models import Certificate, CertificateStatus, Enrollment
from hub.actors import actor_for_request
from hub.scopes import Scope
from hub.serializers import RefusesUnknownFields


class StrictSerializer(RefusesUnknownFields, serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error, not a silent default."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({unknown[0]: f"unknown field '{unknown[0]}'"})
        return attrs


class EnrollmentRequestSerializer(StrictSerializer):
    node_id = serializers.CharField(max_length=64)
    device_type = serializers.CharField(max_length=50, required=False, default="generic")
    pin = serializers.BooleanField(required=False, default=False, help_text="Also require a 6-digit PIN.")
    ttl_s = serializers.IntegerField(required=False, min_value=60, max_value=7 * 24 * 3600, help_text="Default 900.")


class EnrollmentTicketSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    device_type = serializers.CharField()
    code = serializers.CharField(help_text="Shown once; stored only as a PBKDF2 hash.")
    pin = serializers.CharField(allow_null=True)
    ca_fingerprint = serializers.CharField()
    enroll_host = serializers.CharField()
    enroll_port = serializers.IntegerField()
    mesh_host = serializers.CharField()
    mesh_port = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    uri = serializers.CharField()
    qr_svg = serializers.CharField()


class EnrollmentSerializer(serializers.ModelSerializer):
    has_pin = serializers.BooleanField(read_only=True)

    class Meta:
        model = Enrollment
        fields = [
            "id",
            "node_id",
            "device_type",
            "status",
            "has_pin",
            "failed_attempts",
            "expires_at",
            "created_by",
            "created_at",
            "used_at",
            "last_attempt_at",
        ]


class EnrollmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One-time enrollment codes. The code and PIN appear only in the create response."""

    queryset = Enrollment.objects.order_by("-created_at")
    serializer_class = EnrollmentSerializer
    filterset_fields = ["node_id", "status"]
    scope_map = {"GET": Scope.RESET, "list": Scope.RESET, "retrieve": Scope.RESET, "create": Scope.RESET, "cancel": Scope.RESET}
    service_decides = ("create", "cancel")
    audit_target_type = "enrollment"
    lookup_value_regex = r"[0-9]+"

    @extend_schema(request=EnrollmentRequestSerializer, responses={201: EnrollmentTicketSerializer})
    def create(self, request: Request) -> Response:
        params = EnrollmentRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            ticket = identity.create_enrollment(
                actor_for_request(request), data["node_id"], device_type=data["device_type"], with_pin=data["pin"], ttl_s=data.get("ttl_s")
            )
        except identity.IdentityError as exc:
            return Response(
                {"field": "node_id" if exc.code in ("bad_node_id", "already_provisioned") else "body", "reason": exc.reason}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response({**ticket.as_dict(), "qr_svg": ticket.qr_svg()}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: EnrollmentSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        enrollment = self.get_object()
        identity.cancel_enrollment(actor_for_request(request), enrollment)
        enrollment.refresh_from_db()
        return Response(EnrollmentSerializer(enrollment).data)


class CertificateSerializer(serializers.ModelSerializer):
    node_id = serializers.CharField(source="device.node_id", read_only=True)
    ca_fingerprint = serializers.CharField(source="ca.fingerprint", read_only=True)

    class Meta:
        model = Certificate
        fields = [
            "serial", "node_id", "fingerprint", "ca_fingerprint", "status", "not_before", "not_after",
            "issued_at", "first_used_at", "revoked_at", "revocation_kind", "revocation_reason", "pem",
        ]  # fmt: skip


class ReasonSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=200, help_text="Why; kept in the certificate row and the audit log.")


class CertificateFilter(django_filters.FilterSet):
    node_id = django_filters.CharFilter(field_name="device__node_id")
    status = django_filters.ChoiceFilter(choices=CertificateStatus.choices)

    class Meta:
        model = Certificate
        fields = ["node_id", "status"]


class CertificateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Device certificates the hub issued, by serial (lowercase hex)."""

    serializer_class = CertificateSerializer
    filterset_class = CertificateFilter
    ordering_fields = ["issued_at", "not_after"]
    lookup_field = "serial"
    lookup_value_regex = r"[0-9a-f]{1,40}"
    scope_map = {"revoke": Scope.RESET}
    service_decides = ("revoke",)
    audit_target_type = "certificate"

    def get_queryset(self) -> QuerySet[Certificate]:
        return Certificate.objects.select_related("device", "ca").order_by("-issued_at")

    @extend_schema(request=ReasonSerializer, responses={200: CertificateSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, serial: str) -> Response:
        params = ReasonSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            cert = identity.revoke_certificate(actor_for_request(request), self.get_object(), params.validated_data["reason"])
        except identity.IdentityError as exc:
            return Response({"field": "serial", "reason": exc.reason}, status=status.HTTP_400_BAD_REQUEST)
        return Response(CertificateSerializer(cert).data)


class FactoryResetTicketSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Confirm with this within 60 seconds; shown once.")
    expires_at = serializers.DateTimeField()


class TokenSerializer(StrictSerializer):
    token = serializers.CharField(max_length=100)
