"""Authority scopes shared by API tokens, session users and hub→device commands."""

from __future__ import annotations

from django.db import models


class Scope(models.TextChoices):
    READ_STATUS = "read-status", "Read status"
    COMMAND = "command", "Send commands"
    RESET = "reset", "Reset and provisioning"
    OTA = "ota", "Firmware updates"
    ADMIN = "admin", "Administration"


ALL_SCOPES = frozenset(Scope.values)

# Roles are Django groups; a session user's scopes are the union of their groups' scopes.
# An operator runs the fleet: commands, and provisioning (enrollment codes, revoking a
# device, resets); firmware rollouts and administration stay with admins.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({Scope.READ_STATUS}),
    "operator": frozenset({Scope.READ_STATUS, Scope.COMMAND, Scope.RESET}),
    "admin": ALL_SCOPES,
}


def parse_scopes(text: str) -> list[str]:
    """Parse 'a,b' into a sorted unique list; unknown names raise ValueError naming them."""
    names = sorted({part.strip() for part in text.split(",") if part.strip()})
    unknown = [name for name in names if name not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(ALL_SCOPES))}")
    if not names:
        raise ValueError("at least one scope is required")
    return names
