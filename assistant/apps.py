from django.apps import AppConfig


class AssistantConfig(AppConfig):
    """Talk to the fleet: local sentence intents (hassil), LLM providers behind a router, MCP."""

    name = "assistant"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from assistant import names
        from devices import events

        events.on_renamed(lambda node_id: names.index.invalidate())
