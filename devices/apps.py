from typing import Any

from django.apps import AppConfig
from django.core import checks


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Devices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices import frames
        from devices.session import frames as registry

        frames.register(registry)
        checks.register(check_retention_policy)


def check_retention_policy(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A telemetry retention policy that cannot work stops `runhub`, `migrate` and the rest at
    start with its reason, rather than failing every chart and beat run later."""
    from devices.retention import Policy

    return [checks.Error(problem, id="meshhub.E001") for problem in Policy.configured().problems()]
