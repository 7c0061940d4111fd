"""The firmware pages and API; `hub/urls.py` mounts `urlpatterns` at the root and `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from hub.pages import operator_page
from hub.routers import api_router
from hub.scopes import Scope
from ota import views
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
urlpatterns: list[URLPattern | URLResolver] = [
    path("firmware/", operator_page(views.firmware_page), name="firmware-page"),
    path("firmware/upload/", operator_page(views.release_upload), name="firmware-page-upload"),
    path("rollouts/", operator_page(views.rollout_list), name="rollouts-page"),
    path("rollouts/new/", operator_page(views.rollout_create), name="rollouts-page-create"),
    path("rollouts/<int:pk>/", operator_page(views.rollout_detail), name="rollout-page"),
    path("rollouts/<int:pk>/<str:action>/", operator_page(views.rollout_control), name="rollout-page-control"),
    path("devices/<slug:node_id>/firmware/<slug:control>/", operator_page(views.device_firmware_control), name="device-firmware-control"),
]
