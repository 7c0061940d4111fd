"""What drf-spectacular cannot find out alone about the hub's API: how a client authenticates,
and what the request serializers of hub.serializers enforce.

Imported from `HubConfig.ready()`, so the extensions are registered before any schema is built.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import Direction

from hub.scopes import Scope


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """`Authorization: Token mh_<key>_<secret>` (hub.authentication.ApiTokenAuthentication)."""

    target_class = "hub.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        scheme = build_bearer_security_scheme_object(header_name="Authorization", token_prefix=self.target.keyword)
        scheme["description"] = (
            f"`Authorization: {self.target.keyword} <token>`, a token printed once by `manage.py createapitoken`; "
            f"it carries scopes ({', '.join(Scope.values)}) and each operation needs one."
        )
        return scheme


class ServiceCheckedFieldScheme(OpenApiSerializerFieldExtension):
    """A value the service judges is documented as the field it stands for."""

    target_class = "hub.serializers.ServiceCheckedField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Direction) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer_field(self.target.documented_as, direction)
        return schema


class StrictBodyScheme(OpenApiSerializerExtension):
    """A body that refuses unknown keys says so."""

    target_class = "hub.serializers.RefusesUnknownFields"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Direction) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        schema["additionalProperties"] = False
        return schema
