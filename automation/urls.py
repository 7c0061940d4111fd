"""The automation API; `hub/urls.py` mounts `api_urlpatterns` under `api/v1/`."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from automation import views
from automation.api import RuleViewSet, SceneViewSet
from hub.pages import operator_page
from hub.routers import api_router

router = api_router()
router.register("rules", RuleViewSet, basename="rule")
router.register("scenes", SceneViewSet, basename="scene")

api_urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
urlpatterns: list[URLPattern | URLResolver] = [
    path("automation/", operator_page(views.rule_list), name="automation-page"),
    path("automation/new/", operator_page(views.rule_new), name="automation-rule-new"),
    path("automation/new/save/", operator_page(views.rule_save), name="automation-rule-create"),
    path("automation/<int:pk>/", operator_page(views.rule_detail), name="automation-rule-page"),
    path("automation/<int:pk>/save/", operator_page(views.rule_save), name="automation-rule-save"),
    path("automation/<int:pk>/<slug:control>/", operator_page(views.rule_control), name="automation-rule-control"),
    path("scenes/", operator_page(views.scene_list), name="scenes-page"),
    path("scenes/snapshot/", operator_page(views.scene_snapshot), name="scenes-page-snapshot"),
    path("scenes/<int:pk>/activate/", operator_page(views.scene_activate), name="scenes-page-activate"),
]
