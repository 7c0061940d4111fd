"""REST for firmware: `GET /api/v1/ota/releases/` and `POST` (multipart `manifest`,
`image`; scope `ota`), ARCHITECTURE §9.1."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.actors import actor_for_request
from hub.permissions import audit_request
from hub.scopes import Scope
from ota import releases, rollouts, uploads
from ota.manifest import ManifestRefused
from ota.models import Deployment, DeploymentState, FirmwareRelease, Rollout


class ReleaseSerializer(serializers.ModelSerializer[FirmwareRelease]):
    created_at = serializers.DateTimeField(source="uploaded_at", read_only=True)

    class Meta:
        model = FirmwareRelease
        fields = [
            "id",
            "name",
            "version",
            "build_id",
            "device_types",
            "security_counter",
            "min_agent_version",
            "sha256",
            "size",
            "expires_at",
            "key_id",
            "created_at",
        ]


UploadForm = inline_serializer("ReleaseUpload", {"manifest": serializers.FileField(), "image": serializers.FileField()})
Refusal = inline_serializer("ReleaseRefusal", {"field": serializers.CharField(), "reason": serializers.CharField(), "code": serializers.CharField()})


class ReleaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Firmware releases the hub accepted (signed manifest checked, image hashed)."""

    queryset = FirmwareRelease.objects.order_by("-uploaded_at")
    serializer_class = ReleaseSerializer
    scope_map = {"list": Scope.READ_STATUS, "retrieve": Scope.READ_STATUS, "create": Scope.OTA}
    audit_target_type = "release"
    lookup_value_regex = r"[0-9]+"
    filter_backends: list[Any] = []

    def initialize_request(self, request: Any, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST":
            uploads.limit_uploads(request)
        return super().initialize_request(request, *args, **kwargs)

    def get_parsers(self) -> list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [parsers.MultiPartParser()]
        return super().get_parsers()

    @extend_schema(request={"multipart/form-data": UploadForm}, responses={201: ReleaseSerializer, 400: Refusal, 507: Refusal})
    def create(self, request: Request) -> Response:
        actor = actor_for_request(request)
        form = cast(dict[str, Any], request.data)  # the body is parsed here, through the limited handler
        document = form.get("manifest")
        image = request.FILES.get("image")
        too_large = getattr(request._request, "meshhub_upload_too_large", None)
        if too_large is not None:
            return self._refused(
                request, ManifestRefused("too_large", "image", f"the upload is larger than this hub accepts ({too_large:,} bytes, MESHHUB_OTA_MAX_IMAGE_BYTES)")
            )
        if document is None:
            return self._refused(request, ManifestRefused("malformed", "manifest", "the manifest part is missing (the document `ota sign` wrote)"))
        if image is None:
            return self._refused(request, ManifestRefused("malformed", "image", "the image part is missing (a file part named image)"))
        if hasattr(document, "read"):
            document = document.read(64 * 1024 + 1)
        try:
            release = releases.store_release(actor, releases.Upload(document, image, image.name or "image"))
        except ManifestRefused as refused:
            code = status.HTTP_507_INSUFFICIENT_STORAGE if refused.code == "storage" else status.HTTP_400_BAD_REQUEST
            return Response(refused.as_dict(), status=code)
        return Response({"id": release.pk, "version": release.version, "sha256": release.sha256, "size": release.size}, status=status.HTTP_201_CREATED)

    def _refused(self, request: Request, refused: ManifestRefused) -> Response:
        audit_request(request, self, "deny", Scope.OTA, f"{refused.code}: {refused.reason}")
        return Response(refused.as_dict(), status=status.HTTP_400_BAD_REQUEST)


class RolloutSpecSerializer(serializers.Serializer[Any]):
    release = serializers.IntegerField()
    targets = serializers.JSONField()
    waves = serializers.JSONField(required=False, default=lambda: [1, "100%"])  # type: ignore[arg-type,return-value]
    success_threshold = serializers.FloatField(required=False, default=0.9)
    min_sample = serializers.IntegerField(required=False, default=1)
    error_threshold = serializers.FloatField(required=False, default=0.2)
    max_concurrent = serializers.IntegerField(required=False, default=50)
    approval = serializers.BooleanField(required=False, default=False)
    health_beacons = serializers.IntegerField(required=False, default=3)
    deadline_s = serializers.IntegerField(required=False, default=600)
    start = serializers.BooleanField(required=False, default=True)


class DeploymentSerializer(serializers.ModelSerializer[Deployment]):
    node_id = serializers.CharField(source="device.node_id", read_only=True)

    class Meta:
        model = Deployment
        fields = ["node_id", "wave", "state", "reason", "offset", "beacons", "state_changed_at", "finished_at"]


class RolloutSerializer(serializers.ModelSerializer[Rollout]):
    release_version = serializers.CharField(source="release.version", read_only=True)
    counts = serializers.SerializerMethodField()
    deployments = DeploymentSerializer(many=True, read_only=True)

    class Meta:
        model = Rollout
        fields = [
            "id", "state", "reason", "release", "release_version", "wave", "waves", "awaiting_approval", "targets", "success_threshold",
            "min_sample", "error_threshold", "max_concurrent", "approval", "health_beacons", "deadline_s", "counts", "deployments",
            "created_by", "created_at", "started_at", "finished_at",
        ]  # fmt: skip

    def get_counts(self, rollout: Rollout) -> dict[str, int]:
        counts = {state: 0 for state in DeploymentState.values}
        for deployment in rollout.deployments.all():
            counts[deployment.state] += 1
        return counts


class RolloutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rollouts: a release to a set of devices in waves, gated on health (docs/ota.md)."""

    queryset = Rollout.objects.select_related("release").prefetch_related("deployments__device").order_by("-created_at")
    serializer_class = RolloutSerializer
    scope_map = {"list": Scope.READ_STATUS, "retrieve": Scope.READ_STATUS}
    service_decides = ("create", "pause", "resume", "abort", "approve")
    audit_target_type = "rollout"
    lookup_value_regex = r"[0-9]+"
    filter_backends: list[Any] = []

    @extend_schema(request=RolloutSpecSerializer, responses={201: RolloutSerializer, 400: Refusal})
    def create(self, request: Request) -> Response:
        spec = RolloutSpecSerializer(data=request.data)
        spec.is_valid(raise_exception=True)
        try:
            rollout = rollouts.create(actor_for_request(request), rollouts.RolloutSpec(**spec.validated_data))
        except rollouts.RolloutRefused as refused:
            return Response(refused.as_dict(), status=refused.status)
        return Response({"id": rollout.pk, "state": rollout.state}, status=status.HTTP_201_CREATED)

    def _control(self, request: Request, pk: str, action: str) -> Response:
        try:
            rollout = rollouts.control(actor_for_request(request), int(pk), action)
        except rollouts.RolloutRefused as refused:
            return Response(refused.as_dict(), status=refused.status)
        return Response({"id": rollout.pk, "state": rollout.state, "reason": rollout.reason, "wave": rollout.wave})

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._control(request, pk, "pause")

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._control(request, pk, "resume")

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def abort(self, request: Request, pk: str) -> Response:
        return self._control(request, pk, "abort")

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        return self._control(request, pk, "approve")


class DeviceControlView(APIView):
    """`POST /api/v1/devices/{node_id}/ota/rollback/`, `…/ota/clear-pending/` (scope ota),
    `…/bootguard/clear/` (scope reset): 202 {id} of the signed frame sent to the device."""

    control = ""
    scope_map = {"POST": Scope.OTA}  # bootguard/clear is mounted with Scope.RESET
    audit_target_type = "device"

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT, 409: Refusal})
    def post(self, request: Request, node_id: str) -> Response:
        body = request.data if isinstance(request.data, dict) else {}
        try:
            frame_id = rollouts.device_control(actor_for_request(request), node_id, self.control, str(body.get("reason", "")))
        except rollouts.RolloutRefused as refused:
            return Response(refused.as_dict(), status=refused.status)
        return Response({"id": frame_id}, status=status.HTTP_202_ACCEPTED)
