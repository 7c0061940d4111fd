"""REST for firmware: `GET /api/v1/ota/releases/` and `POST` (multipart `manifest`,
`image`; scope `ota`), ARCHITECTURE §9.1."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, parsers, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from hub.actors import actor_for_request
from hub.permissions import audit_request
from hub.scopes import Scope
from ota import releases, uploads
from ota.manifest import ManifestRefused
from ota.models import FirmwareRelease


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
