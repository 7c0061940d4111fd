from django.apps import AppConfig


class IndustrialConfig(AppConfig):
    """Modbus TCP bridges and points (built in the industrial bridge issue)."""

    name = "industrial"
    verbose_name = "Industrial (Modbus)"
    default_auto_field = "django.db.models.BigAutoField"
