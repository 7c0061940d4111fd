from django.apps import AppConfig


class AssistantConfig(AppConfig):
    """Talk to the fleet: local sentence intents (hassil), LLM providers behind a router, MCP."""

    name = "assistant"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db import transaction
        from django.db.models.signals import post_delete, post_save

        from assistant import names
        from devices import events
        from devices.models import Group

        events.on_renamed(lambda node_id: names.index.invalidate())

        def group_changed(sender: type[Group], **kwargs: object) -> None:
            transaction.on_commit(names.index.invalidate)  # its name is a word the index matches

        post_save.connect(group_changed, sender=Group, weak=False, dispatch_uid="assistant.group_changed")
        post_delete.connect(group_changed, sender=Group, weak=False, dispatch_uid="assistant.group_deleted")
