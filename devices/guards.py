"""Command guards that apps register: the `interlock` level of `send_command()`.

After the six levels pass (action, device, provisioned, capability, kind, value), every
registered guard is asked, in registration order, before anything is written. A guard
answers `None` (no objection) or a `Refusal` naming the field and the reason ("device is
installing firmware", "device is in safe mode", "point not writable"): the command is
then rejected at level `interlock`, which the API answers 400 and the audit log records
as a deny naming the guard. Single commands, batches, group fan-out, desired state and
(later) rules and scenes all pass through `send_command()`, so no door skips a guard.

Apps register in `AppConfig.ready()`: `guards.register("ota.installing", my_guard, app="ota")`.
A guard runs inside the request, so it must be quick (a query or two) and must not write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from audit.services import Actor
    from devices.models import Capability, Device


@dataclass(frozen=True)
class CommandRequest:
    """What a guard judges: a command that passed the six levels, not yet written."""

    actor: Actor | None
    device: Device
    capability: Capability
    action: str
    value: Any
    scope: str


@dataclass(frozen=True)
class Refusal:
    reason: str
    field: str = "node_id"


Guard = Callable[[CommandRequest], Refusal | None]


@dataclass(frozen=True)
class RegisteredGuard:
    name: str
    check: Guard
    app: str


class GuardRegistry:
    def __init__(self) -> None:
        self._guards: dict[str, RegisteredGuard] = {}

    def register(self, name: str, check: Guard, *, app: str) -> None:
        existing = self._guards.get(name)
        if existing is not None and existing.check is not check:
            raise ImproperlyConfigured(f"{app} registers command guard '{name}', already registered by {existing.app}")
        self._guards[name] = RegisteredGuard(name, check, app)

    def unregister(self, name: str) -> None:
        self._guards.pop(name, None)

    def names(self) -> list[str]:
        return list(self._guards)

    def first_refusal(self, request: CommandRequest) -> tuple[str, Refusal] | None:
        """The first guard that objects, with its refusal; None when all allow."""
        for guard in list(self._guards.values()):
            refusal = guard.check(request)
            if refusal is not None:
                return guard.name, refusal
        return None


guards = GuardRegistry()
