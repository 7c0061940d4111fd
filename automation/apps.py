from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Rules (and, to come, scenes): evaluated after each committed state batch."""

    name = "automation"
    verbose_name = "Automation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from automation import evaluator
        from devices import events

        events.on_state(evaluator.on_state)
