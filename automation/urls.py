"""The automation API; `hub/urls.py` mounts `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

from automation.api import RuleViewSet, SceneViewSet
from hub.routers import api_router

router = api_router()
router.register("rules", RuleViewSet, basename="rule")
router.register("scenes", SceneViewSet, basename="scene")

api_urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
urlpatterns: list[URLPattern | URLResolver] = []
