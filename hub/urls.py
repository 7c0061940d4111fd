from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from audit import views as audit_views
from audit.api import AuditEventViewSet, AuditSnapshotViewSet
from devices import group_views, provisioning_views
from devices import views as device_views
from devices.api import CommandViewSet, DeviceViewSet, GroupViewSet
from devices.identity_api import CertificateViewSet, EnrollmentViewSet
from hub import views
from hub.pages import operator_page
from industrial import views as industrial_views
from industrial.api import ModbusExportView, ModbusImportView, ModbusViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("devices", DeviceViewSet, basename="device")
router.register("commands", CommandViewSet, basename="command")
router.register("groups", GroupViewSet, basename="group")
router.register("enrollments", EnrollmentViewSet, basename="enrollment")
router.register("certificates", CertificateViewSet, basename="certificate")
router.register("audit", AuditEventViewSet, basename="audit")
router.register("audit-snapshots", AuditSnapshotViewSet, basename="audit-snapshot")
router.register("modbus/bridges", ModbusViewSet, basename="modbus-bridge")

admin.site.site_header = "meshhub administration"
admin.site.site_title = "meshhub admin"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", operator_page(views.overview), name="overview"),
    path("devices/", operator_page(device_views.device_list), name="devices-page"),
    path("devices/<slug:node_id>/", operator_page(device_views.device_detail), name="device-page"),
    path("devices/<slug:node_id>/command/", operator_page(device_views.device_command), name="device-page-command"),
    path("devices/<slug:node_id>/revoke/", operator_page(device_views.device_revoke), name="device-page-revoke"),
    path("enrollment/", operator_page(provisioning_views.enrollment_page), name="enrollment-page"),
    path("enrollment/<int:pk>/cancel/", operator_page(provisioning_views.enrollment_cancel), name="enrollment-page-cancel"),
    path("certificates/", operator_page(provisioning_views.certificate_list), name="certificates-page"),
    path("certificates/<str:serial>/revoke/", operator_page(provisioning_views.certificate_revoke), name="certificate-page-revoke"),
    path("groups/", operator_page(group_views.group_list), name="groups-page"),
    path("groups/<int:pk>/", operator_page(group_views.group_detail), name="group-page"),
    path("groups/<int:pk>/command/", operator_page(group_views.group_command), name="group-page-command"),
    path("industrial/", operator_page(industrial_views.bridge_list), name="industrial-page"),
    path("industrial/<slug:node_id>/", operator_page(industrial_views.bridge_detail), name="industrial-bridge-page"),
    path("industrial/<slug:node_id>/write/", operator_page(industrial_views.point_write), name="industrial-bridge-page-write"),
    path("system/", operator_page(views.system), name="system-page"),
    path("audit/", operator_page(audit_views.audit_list), name="audit-page"),
    path("audit/export.jsonl", operator_page(audit_views.audit_export), name="audit-export"),
    path("audit/snapshots/", operator_page(audit_views.snapshot_list), name="audit-snapshots"),
    path("audit/snapshots/<str:day>.json", operator_page(audit_views.snapshot_detail), name="audit-snapshot"),
    path("audit/signing-key.pem", operator_page(audit_views.signing_key_pem), name="audit-signing-key"),
    path("api/v1/modbus/import/", ModbusImportView.as_view(), name="modbus-import"),
    path("api/v1/modbus/export/", ModbusExportView.as_view(), name="modbus-export"),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("pki/ca.pem", device_views.ca_pem, name="pki-ca"),
    path("pki/crl.pem", device_views.crl_pem, name="pki-crl"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
