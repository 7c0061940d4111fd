"""The audit pages (log, JSONL export, signed snapshots, the key that checks them) and the
read-only REST API; `hub/urls.py` mounts `urlpatterns` at the root and `api_urlpatterns`
under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from audit import views
from audit.api import AuditEventViewSet, AuditSnapshotViewSet
from hub.pages import operator_page
from hub.routers import api_router

router = api_router()
router.register("audit", AuditEventViewSet, basename="audit")
router.register("audit-snapshots", AuditSnapshotViewSet, basename="audit-snapshot")

api_urlpatterns: list[URLPattern | URLResolver] = router.urls

urlpatterns = [
    path("audit/", operator_page(views.audit_list), name="audit-page"),
    path("audit/export.jsonl", operator_page(views.audit_export), name="audit-export"),
    path("audit/snapshots/", operator_page(views.snapshot_list), name="audit-snapshots"),
    path("audit/snapshots/<str:day>.json", operator_page(views.snapshot_detail), name="audit-snapshot"),
    path("audit/signing-key.pem", operator_page(views.signing_key_pem), name="audit-signing-key"),
]
