"""Request serializers shared by the apps' APIs: bodies whose shape a serializer checks and
whose values a service judges, so the schema and the answers come from one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.fields import SkipField, empty


class ServiceCheckedField(serializers.Field):
    """A body value handed to the service exactly as sent (JSON-typed, never coerced, absent
    stays absent, null stays null). `documented_as` is what the schema shows; the service
    enforces it with its own precise reason (a command's six levels), so a client reads one
    set of answers whichever way it gets a value wrong."""

    def __init__(self, documented_as: serializers.Field, **kwargs: Any) -> None:
        self.documented_as = documented_as
        super().__init__(**kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is empty:
            raise SkipField()
        if data is None:
            return True, None
        return False, data

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class RefusesUnknownFields:
    """Marks a request serializer that refuses keys it does not declare, so the schema says
    `additionalProperties: false` (hub.openapi)."""


class StrictBodySerializer(RefusesUnknownFields, serializers.Serializer):
    """A JSON object with only the declared keys: a typo is refused, naming the key, instead of
    being ignored; checked before any value, with the API's `{field, reason}` answer in mind."""

    def unknown_field_reason(self, key: str) -> str:
        return f"unknown field '{key}'; allowed: {', '.join(sorted(self.fields))}"

    def check_shape(self, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"body": f"expected a JSON object, got {type(data).__name__}"})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: self.unknown_field_reason(unknown[0])})

    def to_internal_value(self, data: Any) -> Any:
        self.check_shape(data)
        return super().to_internal_value(data)


def first_error(errors: Mapping[str, Any]) -> tuple[str, str]:
    """A serializer's first problem as `(field, reason)`, the API's 400 shape."""
    field, messages = next(iter(errors.items()))
    message = messages[0] if isinstance(messages, list) and messages else messages
    return ("body" if field == "non_field_errors" else field), str(message)
