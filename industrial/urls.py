"""The Modbus bridge pages and REST API (bridges, configuration import and export);
`hub/urls.py` mounts `urlpatterns` at the root and `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from hub.pages import operator_page
from hub.routers import api_router
from industrial import views
from industrial.api import ModbusExportView, ModbusImportView, ModbusViewSet

router = api_router()
router.register("modbus/bridges", ModbusViewSet, basename="modbus-bridge")

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("modbus/import/", ModbusImportView.as_view(), name="modbus-import"),
    path("modbus/export/", ModbusExportView.as_view(), name="modbus-export"),
    *router.urls,
]

urlpatterns = [
    path("industrial/", operator_page(views.bridge_list), name="industrial-page"),
    path("industrial/<slug:node_id>/", operator_page(views.bridge_detail), name="industrial-bridge-page"),
    path("industrial/<slug:node_id>/write/", operator_page(views.point_write), name="industrial-bridge-page-write"),
]
