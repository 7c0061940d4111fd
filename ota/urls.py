"""The firmware API (and, later, pages); `hub/urls.py` mounts `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from hub.routers import api_router
from hub.scopes import Scope
from ota.api import DeviceControlView, ReleaseViewSet, RolloutViewSet

router = api_router()
router.register("ota/releases", ReleaseViewSet, basename="ota-release")
router.register("ota/rollouts", RolloutViewSet, basename="ota-rollout")
NODE = "devices/<slug:node_id>/"

api_urlpatterns: list[URLPattern | URLResolver] = [
    *router.urls,
    path(NODE + "ota/rollback/", DeviceControlView.as_view(control="rollback"), name="ota-device-rollback"),
    path(NODE + "ota/clear-pending/", DeviceControlView.as_view(control="clear"), name="ota-device-clear-pending"),
    path(NODE + "bootguard/clear/", DeviceControlView.as_view(control="bootguard.clear", scope_map={"POST": Scope.RESET}), name="ota-device-bootguard-clear"),
]
urlpatterns: list[URLPattern | URLResolver] = []
