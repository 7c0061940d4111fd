from django.apps import AppConfig


class HubConfig(AppConfig):
    name = "hub"
    verbose_name = "Hub"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        import hub.openapi  # noqa: F401  (registers the API schema's token scheme)
        from audit import services as audit_services
        from devices import events
        from hub import live, outages, signing

        events.on_state(live.on_state)
        events.on_presence(live.on_presence)
        events.on_command_finished(live.on_command_finished)
        events.on_enrolled(live.on_enrolled)
        audit_services.on_deny(live.on_denied)
        signing.on_key_created(_audit_key_created)
        # A connection opened is the database back: "available again" is logged by whoever
        # gets there first, also in a process nobody probes with /healthz.
        connection_created.connect(outages.database_connected, dispatch_uid="meshhub.outages")


def _audit_key_created(kind: str) -> None:
    """A new hub signing or release key is audited in the transaction that creates it."""
    from audit.models import Decision
    from audit.services import Actor, record

    record(Actor.system(), "pki.key.create", Decision.ALLOW, scope="admin", target_type="hubkey", target_id=kind)
