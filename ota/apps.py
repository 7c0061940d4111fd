from django.apps import AppConfig


class OtaConfig(AppConfig):
    """Firmware releases, rollouts and deployments (built in the OTA issue)."""

    name = "ota"
    verbose_name = "Firmware updates"
    default_auto_field = "django.db.models.BigAutoField"
