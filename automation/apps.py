from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Rules (and, to come, scenes): evaluated after each committed state batch."""

    name = "automation"
    verbose_name = "Automation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from automation import evaluator, upkeep
        from devices import events
        from devices.models import Capability

        events.on_state(evaluator.on_state)
        # Every way a capability goes (a device's hello, a PLC import, the admin) deletes its row.
        post_delete.connect(upkeep.capability_removed, sender=Capability, dispatch_uid="automation.capability_removed")
