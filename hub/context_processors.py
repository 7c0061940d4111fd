"""Template context every page needs: what the signed-in user may do."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from hub.scopes import Scope


def roles(request: HttpRequest) -> dict[str, Any]:
    from hub.pages import scopes

    held = scopes(request)
    return {
        "can_read": Scope.READ_STATUS in held,  # any role; a user without one sees no page
        "can_command": Scope.COMMAND in held,
        "can_provision": Scope.RESET in held,  # enrollment codes, revocation, resets
        "can_admin": Scope.ADMIN in held,
        "user_scopes": sorted(held),
    }
