"""Sections that apps add to a device's detail (the API's `GET /devices/{node_id}/`, the
device page): `details.register("firmware", fn)` in `ready()`, fn(device) → a JSON object
or None. The devices app never imports the apps above it; this is how they show there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from devices.models import Device

Section = Callable[["Device"], dict[str, Any] | None]


class DetailRegistry:
    def __init__(self) -> None:
        self._sections: dict[str, Section] = {}

    def register(self, name: str, section: Section) -> None:
        existing = self._sections.get(name)
        if existing is not None and existing is not section:
            raise ImproperlyConfigured(f"device detail section '{name}' is registered twice")
        self._sections[name] = section

    def for_device(self, device: Device) -> dict[str, Any]:
        return {name: section(device) for name, section in self._sections.items()}


details = DetailRegistry()
