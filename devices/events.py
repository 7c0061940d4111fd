"""What other apps may react to, without `devices` importing them (ARCHITECTURE §3).

Apps above `devices` (automation, OTA, the dashboard) register callables here in their
`AppConfig.ready()`; the state path and the gateway call them after their transaction
commits. A failing subscriber is logged and never undoes or blocks the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devices.state import StateReport

logger = logging.getLogger("meshhub.events")

StateHook = Callable[[list["StateReport"]], None]
PresenceHook = Callable[[str, bool], None]
CommandHook = Callable[[str, str, dict[str, Any]], None]
CreatedHook = Callable[[str, str, str], None]
EnrolledHook = Callable[[str, str], None]

state_hooks: list[StateHook] = []
presence_hooks: list[PresenceHook] = []
command_hooks: list[CommandHook] = []
created_hooks: list[CreatedHook] = []
enrolled_hooks: list[EnrolledHook] = []


def on_state(hook: StateHook) -> StateHook:
    state_hooks.append(hook)
    return hook


def on_presence(hook: PresenceHook) -> PresenceHook:
    presence_hooks.append(hook)
    return hook


def on_command_finished(hook: CommandHook) -> CommandHook:
    command_hooks.append(hook)
    return hook


def on_command_created(hook: CreatedHook) -> CreatedHook:
    """(command_id, node_id, device_type) after the outbox row commits: devices that are
    not on the mesh (PLCs) are driven from here."""
    created_hooks.append(hook)
    return hook


def on_enrolled(hook: EnrolledHook) -> EnrolledHook:
    """(node_id, device_type) after an enrollment code was redeemed and the certificate issued."""
    enrolled_hooks.append(hook)
    return hook


def _run(hooks: list[Any], *args: Any) -> None:
    for hook in list(hooks):
        try:
            hook(*args)
        except Exception:  # a subscriber's bug must not lose a committed report
            logger.exception("event hook %r failed", hook)


def state_committed(reports: list[StateReport]) -> None:
    _run(state_hooks, reports)


def presence_changed(node_id: str, online: bool) -> None:
    _run(presence_hooks, node_id, online)


def command_finished(command_id: str, status: str, result: dict[str, Any]) -> None:
    _run(command_hooks, command_id, status, result)


def command_created(command_id: str, node_id: str, device_type: str) -> None:
    _run(created_hooks, command_id, node_id, device_type)


def device_enrolled(node_id: str, device_type: str) -> None:
    _run(enrolled_hooks, node_id, device_type)
