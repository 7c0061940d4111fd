"""REST for rules (ARCHITECTURE §9.2): `POST /api/v1/rules/` (scope `command`), `GET/PUT/
PATCH/DELETE /api/v1/rules/{id}/`, `GET /api/v1/rules/{id}/runs/`. The services in
`automation.rules` check the scope and validate; a refused rule is 400 `{field, reason}`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import Http404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from automation import dryrun, rules, scenes
from automation.disclosure import masked_actions
from automation.models import Rule, RuleRun, Scene
from automation.validation import RuleInvalid
from hub.actors import actor_for_request
from hub.scopes import Scope

Refusal = inline_serializer("RuleRefusal", {"field": serializers.CharField(), "reason": serializers.CharField()})
DryRunRange = inline_serializer("DryRunRange", {"from": serializers.DateTimeField(), "to": serializers.DateTimeField()})
DryRunUnsaved = inline_serializer("DryRunUnsaved", {"rule": serializers.JSONField(), "from": serializers.DateTimeField(), "to": serializers.DateTimeField()})


class RuleSerializer(serializers.ModelSerializer[Rule]):
    """The rule as stored for a reader who may change it (context `full`), else with each
    webhook's address masked (automation.disclosure)."""

    when = serializers.JSONField(source="document.when", read_only=True)
    then = serializers.JSONField(source="document.then", read_only=True)

    def to_representation(self, instance: Rule) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not self.context.get("full"):
            data["then"] = masked_actions(data.get("then"))
        return data

    class Meta:
        model = Rule
        fields = [
            "id", "name", "enabled", "mode", "cooldown_s", "when", "then", "disabled_reason", "last_fired_at", "last_outcome",
            "created_by", "created_at", "updated_at",
        ]  # fmt: skip


class RuleRunSerializer(serializers.ModelSerializer[RuleRun]):
    class Meta:
        model = RuleRun
        fields = ["id", "started_at", "trigger", "outcome", "reason", "actions", "depth"]

    def to_representation(self, instance: RuleRun) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not self.context.get("full"):
            data["actions"] = masked_actions(data.get("actions"))
        return data


class RuleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Automation rules: conditions on what devices report, actions through the same
    command checks as every other door (docs/automation.md)."""

    queryset = Rule.objects.order_by("name")
    serializer_class = RuleSerializer
    scope_map = {
        "list": Scope.READ_STATUS,
        "retrieve": Scope.READ_STATUS,
        "runs": Scope.READ_STATUS,
        "dry_run": Scope.READ_STATUS,
        "dry_run_saved": Scope.READ_STATUS,
    }
    service_decides = ("create", "update", "partial_update", "destroy")
    audit_target_type = "rule"
    lookup_value_regex = r"[0-9]+"
    filter_backends: list[Any] = []

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "full": actor_for_request(self.request).allows(Scope.COMMAND)}

    def _answer(self, call: Any, *args: Any, created: bool = False) -> Response:
        try:
            rule = call(actor_for_request(self.request), *args)
        except RuleInvalid as invalid:
            return Response(invalid.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        except Rule.DoesNotExist:
            raise Http404("no such rule") from None
        return Response(RuleSerializer(rule, context={"full": True}).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: RuleSerializer, 400: Refusal})
    def create(self, request: Request) -> Response:
        return self._answer(rules.create, request.data, created=True)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: RuleSerializer, 400: Refusal})
    def update(self, request: Request, pk: str) -> Response:
        return self._answer(rules.replace, int(pk), request.data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: RuleSerializer, 400: Refusal})
    def partial_update(self, request: Request, pk: str) -> Response:
        return self._answer(rules.change, int(pk), request.data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        try:
            rules.delete(actor_for_request(request), int(pk))
        except Rule.DoesNotExist:
            raise Http404("no such rule") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={200: RuleRunSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def runs(self, request: Request, pk: str) -> Response:
        rule = self.get_object()
        page = self.paginate_queryset(rule.runs.all())
        data = RuleRunSerializer(page if page is not None else rule.runs.all()[:100], many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def _dry_run(self, document: Any, body: Any) -> Response:
        body = body if isinstance(body, dict) else {}
        try:
            result = dryrun.dry_run(document, _when(body, "from"), _when(body, "to"))
        except RuleInvalid as refused:  # a DryRunRefused too
            return Response(refused.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        return Response(result)

    @extend_schema(request=DryRunRange, responses={200: OpenApiTypes.OBJECT, 400: Refusal}, operation_id="v1_rules_dry_run_saved")
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run_saved(self, request: Request, pk: str) -> Response:
        """What the saved rule would have done over [from, to] of recorded telemetry."""
        return self._dry_run(self.get_object().document, request.data)

    @extend_schema(request=DryRunUnsaved, responses={200: OpenApiTypes.OBJECT, 400: Refusal}, operation_id="v1_rules_dry_run")
    @action(detail=False, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request) -> Response:
        """What a rule not saved yet would have done over [from, to] of recorded telemetry."""
        body = request.data if isinstance(request.data, dict) else {}
        return self._dry_run(body.get("rule"), body)


def _when(body: dict[str, Any], name: str) -> datetime:
    text = body.get(name)
    try:
        moment = parse_datetime(text) if isinstance(text, str) else None
    except ValueError:  # well-formed but not a date (month 13)
        moment = None
    if moment is None:
        raise dryrun.DryRunRefused(name, f"'{name}' must be an ISO 8601 time, got {text!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SceneSerializer(serializers.ModelSerializer[Scene]):
    class Meta:
        model = Scene
        fields = ["id", "name", "members", "created_by", "created_at", "updated_at"]


Activation = inline_serializer(
    "SceneActivation",
    {"results": inline_serializer("SceneMemberResult", {"device": serializers.CharField(), "capability": serializers.CharField(),
     "command_id": serializers.CharField(allow_null=True), "status": serializers.CharField(), "reason": serializers.CharField()}, many=True)},
)  # fmt: skip


class SceneViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Scenes: named values for devices and groups, activated as one command per member."""

    queryset = Scene.objects.order_by("name")
    serializer_class = SceneSerializer
    scope_map = {"list": Scope.READ_STATUS, "retrieve": Scope.READ_STATUS}
    service_decides = ("create", "destroy", "snapshot", "activate")
    audit_target_type = "scene"
    lookup_value_regex = r"[0-9]+"
    filter_backends: list[Any] = []

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: SceneSerializer, 400: Refusal})
    def create(self, request: Request) -> Response:
        try:
            scene = scenes.create(actor_for_request(request), request.data)
        except RuleInvalid as invalid:
            return Response(invalid.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        return Response(SceneSerializer(scene).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: SceneSerializer, 400: Refusal})
    @action(detail=False, methods=["post"])
    def snapshot(self, request: Request) -> Response:
        """A scene of what the named devices report now (`{name, devices: [...]}`)."""
        body = request.data if isinstance(request.data, dict) else {}
        try:
            scene = scenes.snapshot(actor_for_request(request), body.get("name"), body.get("devices"))
        except RuleInvalid as invalid:
            return Response(invalid.as_dict(), status=status.HTTP_400_BAD_REQUEST)
        return Response(SceneSerializer(scene).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: Activation})
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str) -> Response:
        try:
            results = scenes.activate(actor_for_request(request), int(pk))
        except Scene.DoesNotExist:
            raise Http404("no such scene") from None
        return Response({"results": [r.as_dict() for r in results]})

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        try:
            scenes.delete(actor_for_request(request), int(pk))
        except Scene.DoesNotExist:
            raise Http404("no such scene") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
