"""The one shape every app's API router has: trailing slashes, no root view (the schema
at /api/schema/ is the index). `hub/urls.py` mounts each app's routes under `api/v1/`."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter


def api_router() -> DefaultRouter:
    router = DefaultRouter(trailing_slash=True)
    router.include_root_view = False
    return router
