"""Read access to the audit log for scripts (scope admin)."""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound

from audit import snapshots
from audit.models import ActorType, AuditEvent, AuditSnapshot, Decision
from hub.filters import UtcIsoDateTimeFilter
from hub.scopes import Scope


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "seq",
            "ts",
            "actor_type",
            "actor_id",
            "action",
            "scope",
            "target_type",
            "target_id",
            "decision",
            "reason",
            "details",
            "prev_hash",
            "hash",
        ]


class AuditEventFilter(django_filters.FilterSet):
    decision = django_filters.ChoiceFilter(choices=Decision.choices)
    actor_type = django_filters.ChoiceFilter(choices=ActorType.choices)
    actor = django_filters.CharFilter(field_name="actor_id", lookup_expr="icontains", label="Actor id contains")
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith", label="Action starts with")
    target = django_filters.CharFilter(field_name="target_id", label="Target id")
    since = UtcIsoDateTimeFilter(field_name="ts", lookup_expr="gte", param="since")
    until = UtcIsoDateTimeFilter(field_name="ts", lookup_expr="lt", param="until")

    class Meta:
        model = AuditEvent
        fields = ["decision", "actor_type", "actor", "action", "scope", "target_type", "target", "since", "until"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = AuditEvent.objects.order_by("-seq")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    search_fields = ["reason", "actor_id", "target_id"]
    ordering_fields = ["seq", "ts"]
    scope_map = {"GET": Scope.ADMIN, "list": Scope.ADMIN, "retrieve": Scope.ADMIN}
    audit_target_type = "audit"


class AuditSnapshotSerializer(serializers.ModelSerializer):
    """What a verifier outside the hub keeps: the exact signed text, its signature and key
    (as the page's JSON download), plus the signed fields as columns for filtering."""

    algorithm = serializers.SerializerMethodField()
    public_key_pem = serializers.SerializerMethodField()

    class Meta:
        model = AuditSnapshot
        fields = ["date", "count", "first_id", "last_id", "last_hash", "algorithm", "payload", "signature", "public_key", "public_key_pem", "created_at"]

    def get_algorithm(self, snapshot: AuditSnapshot) -> str:
        return "Ed25519"

    def get_public_key_pem(self, snapshot: AuditSnapshot) -> str | None:
        try:
            return snapshots.public_key_pem(snapshot.public_key)
        except ValueError:  # a mangled row: the verifier will say so, the download still works
            return None


class AuditSnapshotFilter(django_filters.FilterSet):
    since = django_filters.DateFilter(field_name="date", lookup_expr="gte", label="From this UTC day on")
    until = django_filters.DateFilter(field_name="date", lookup_expr="lte", label="Up to this UTC day")

    class Meta:
        model = AuditSnapshot
        fields = ["since", "until"]


class AuditSnapshotViewSet(viewsets.ReadOnlyModelViewSet):
    """The signed daily snapshots, newest first, for a machine that keeps copies outside the
    hub (the only defence against someone who can rewrite the database and wait for the hub
    to sign again; docs/security.md)."""

    queryset = AuditSnapshot.objects.order_by("-date")
    serializer_class = AuditSnapshotSerializer
    filterset_class = AuditSnapshotFilter
    lookup_field = "date"
    lookup_value_regex = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    scope_map = {"GET": Scope.ADMIN, "list": Scope.ADMIN, "retrieve": Scope.ADMIN}
    audit_target_type = "audit_snapshot"

    def get_object(self) -> AuditSnapshot:
        day = snapshots.parse_day(self.kwargs["date"])
        if day is None:
            raise NotFound("not a date")
        snapshot = get_object_or_404(self.get_queryset(), date=day)
        self.check_object_permissions(self.request, snapshot)
        return snapshot
