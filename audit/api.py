"""Read access to the audit log for scripts (scope admin)."""

from __future__ import annotations

import django_filters
from rest_framework import serializers, viewsets

from audit.models import ActorType, AuditEvent, Decision
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
