"""The assistant's API; `hub/urls.py` mounts `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from assistant.api import AssistantView

api_urlpatterns: list[URLPattern | URLResolver] = [path("assistant/", AssistantView.as_view(), name="assistant")]
