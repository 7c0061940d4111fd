"""Housekeeping for the registry, run by Celery beat."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from devices import identity, retention, services, state


@shared_task(name="devices.tasks.expire_commands", autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def expire_commands() -> int:
    """Open commands past expires_at become expired (idempotent: the update is conditional)."""
    return services.expire_commands()


@shared_task(name="devices.tasks.refresh_crls", autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def refresh_crls() -> int:
    """Re-sign every trusted CA's CRL daily, well before its 7-day next_update."""
    return identity.refresh_crls()


@shared_task(name="devices.tasks.certificates_expiring")
def certificates_expiring() -> list[str]:
    """Certificates with < 30 days left; the gateway asks those devices for `cert.renew`."""
    certs = identity.certificates_expiring()
    for cert in certs:
        logging.getLogger("meshhub.identity").warning(
            "certificate of %s expires %s", cert.device.node_id, cert.not_after.isoformat(), extra={"node_id": cert.device.node_id, "serial": cert.serial}
        )
    return [cert.device.node_id for cert in certs]


@shared_task(name="devices.tasks.cleanup_provisioning", autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def cleanup_provisioning() -> dict[str, int]:
    return identity.cleanup_provisioning()


@shared_task(name="devices.tasks.presence_watchdog")
def presence_watchdog() -> list[str]:
    """Devices silent for 3 heartbeats go offline, even if their gateway died."""
    return state.mark_silent_offline(3 * settings.MESH_HEARTBEAT_S)


@shared_task(name="devices.tasks.apply_telemetry_retention", ignore_result=True)
def apply_telemetry_retention() -> dict[str, object]:
    """Raw samples into hourly rollups, hourly into daily, old daily deleted, in short
    batches; then the size of every table, for the system page. Safe to run twice."""
    return retention.run_and_record()
