"""The one error every identity operation raises when it refuses."""

from __future__ import annotations


class IdentityError(Exception):
    """An identity operation refused; `code` is machine-readable, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
