from django.apps import AppConfig


class IndustrialConfig(AppConfig):
    """Modbus TCP bridges and points: PLCs as devices of type `plc`."""

    name = "industrial"
    verbose_name = "Industrial (Modbus)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from devices import events
        from devices.guards import guards
        from industrial import hooks
        from industrial.guards import plc_allow_list
        from industrial.models import ModbusBridge

        events.on_command_created(hooks.queue_plc_command)
        guards.register("plc.allow_list", plc_allow_list, app="industrial")
        post_delete.connect(hooks.unschedule_deleted_bridge, sender=ModbusBridge, dispatch_uid="industrial-unschedule")
