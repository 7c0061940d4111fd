from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Rules and scenes (built in the automation issue)."""

    name = "automation"
    verbose_name = "Automation"
    default_auto_field = "django.db.models.BigAutoField"
