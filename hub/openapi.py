"""What drf-spectacular cannot find out alone about the hub's API: how a client authenticates.

Imported from `HubConfig.ready()`, so the extension is registered before any schema is built.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

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
