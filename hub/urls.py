"""The hub's own routes (sign-in, overview, system, health, metrics, the API schema, admin);
each app owns its pages and its API in its `urls.py`, mounted here."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from assistant import urls as assistant_urls
from audit import urls as audit_urls
from automation import urls as automation_urls
from devices import urls as devices_urls
from hub import views
from hub.pages import operator_page
from industrial import urls as industrial_urls
from ota import urls as ota_urls

handler500 = "hub.views.server_error"


class FaviconView(RedirectView):
    """Browsers ask for /favicon.ico on pages without an icon link (/healthz, the API's
    JSON): send them to the SVG instead of logging a 404 warning per request."""

    permanent = True

    def get_redirect_url(self, *args: object, **kwargs: object) -> str:
        return static("meshhub/favicon.svg")


admin.site.site_header = "meshhub administration"
admin.site.site_title = "meshhub admin"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", operator_page(views.overview), name="overview"),
    path("", include(devices_urls)),
    path("", include(industrial_urls)),
    path("", include(ota_urls)),
    path("", include(automation_urls)),
    path("system/", operator_page(views.system), name="system-page"),
    path("", include(audit_urls)),
    path("api/v1/", include(ota_urls.api_urlpatterns)),  # before devices: it adds devices/<id>/ota/… routes
    path("api/v1/", include(industrial_urls.api_urlpatterns)),
    path("api/v1/", include(automation_urls.api_urlpatterns)),
    path("api/v1/", include(assistant_urls.api_urlpatterns)),
    path("api/v1/", include(devices_urls.api_urlpatterns)),
    path("api/v1/", include(audit_urls.api_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
