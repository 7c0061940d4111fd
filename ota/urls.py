"""The firmware API (and, later, pages); `hub/urls.py` mounts `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

from hub.routers import api_router
from ota.api import ReleaseViewSet

router = api_router()
router.register("ota/releases", ReleaseViewSet, basename="ota-release")

api_urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
urlpatterns: list[URLPattern | URLResolver] = []
