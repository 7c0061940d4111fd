from django.apps import AppConfig


class OtaConfig(AppConfig):
    """Firmware releases, rollouts and deployments: docs/ota.md."""

    name = "ota"
    verbose_name = "Firmware updates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices import events
        from devices.details import details
        from devices.guards import guards
        from devices.session import DeviceScope, extensions, frames, sweepers
        from ota import firmware, transfer
        from ota import frames as firmware_frames
        from ota import guards as ota_guards

        for frame_type, handler in {**transfer.FRAMES, **firmware_frames.FRAMES}.items():
            frames.register(frame_type, DeviceScope.OTA, handler, app="ota")
        extensions.register("ota", transfer.OtaSession)
        sweepers.register("ota", transfer.waiting_for)
        guards.register("ota.installing", ota_guards.not_while_updating, app="ota")
        guards.register("ota.safe_mode", ota_guards.not_in_safe_mode, app="ota")
        events.on_presence(_device_online)
        details.register("firmware", firmware.section, template="ota/device_firmware.html")
        from hub.middleware import BOUNDED_UPLOAD_PATHS

        BOUNDED_UPLOAD_PATHS.add("/firmware/upload/")  # ota/urls.py: firmware-page-upload


def _device_online(node_id: str, online: bool) -> None:
    """A device of a running rollout came online: drive its rollout now, not at the next beat."""
    if not online:
        return
    from ota import deployments
    from ota.models import Deployment, DeploymentState

    rollouts = set(
        Deployment.objects.filter(device__node_id=node_id, state=DeploymentState.QUEUED, rollout__state="running").values_list("rollout_id", flat=True)
    )
    for rollout_id in rollouts:
        deployments._drive_soon(rollout_id)
