"""The registry's pages (devices, enrollment, certificates, groups), the PKI downloads and its
REST API; `hub/urls.py` mounts `urlpatterns` at the root and `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from devices import group_views, provisioning_views, views
from devices.api import CommandViewSet, DeviceViewSet, GroupViewSet
from devices.identity_api import CertificateViewSet, EnrollmentViewSet
from hub.pages import operator_page
from hub.routers import api_router

router = api_router()
router.register("devices", DeviceViewSet, basename="device")
router.register("commands", CommandViewSet, basename="command")
router.register("groups", GroupViewSet, basename="group")
router.register("enrollments", EnrollmentViewSet, basename="enrollment")
router.register("certificates", CertificateViewSet, basename="certificate")

api_urlpatterns: list[URLPattern | URLResolver] = router.urls

urlpatterns = [
    path("devices/", operator_page(views.device_list), name="devices-page"),
    path("devices/<slug:node_id>/", operator_page(views.device_detail), name="device-page"),
    path("devices/<slug:node_id>/command/", operator_page(views.device_command), name="device-page-command"),
    path("devices/<slug:node_id>/revoke/", operator_page(views.device_revoke), name="device-page-revoke"),
    path("enrollment/", operator_page(provisioning_views.enrollment_page), name="enrollment-page"),
    path("enrollment/<int:pk>/cancel/", operator_page(provisioning_views.enrollment_cancel), name="enrollment-page-cancel"),
    path("certificates/", operator_page(provisioning_views.certificate_list), name="certificates-page"),
    path("certificates/<str:serial>/revoke/", operator_page(provisioning_views.certificate_revoke), name="certificate-page-revoke"),
    path("groups/", operator_page(group_views.group_list), name="groups-page"),
    path("groups/<int:pk>/", operator_page(group_views.group_detail), name="group-page"),
    path("groups/<int:pk>/command/", operator_page(group_views.group_command), name="group-page-command"),
    # Public on purpose: devices and verifiers fetch the CA and the CRL without a session.
    path("pki/ca.pem", views.ca_pem, name="pki-ca"),
    path("pki/crl.pem", views.crl_pem, name="pki-crl"),
]
