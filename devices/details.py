"""Sections that apps add to a device's detail (the API's `GET /devices/{node_id}/`, the
device page): `details.register("firmware", fn, template=…)` in `ready()`, fn(device) → a
JSON object or None; the template, if any, renders it as a card on the device page (with
`section` and `device` in its context). The devices app never imports the apps above it;
this is how they show there."""

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
        self._templates: dict[str, str] = {}

    def register(self, name: str, section: Section, template: str | None = None) -> None:
        existing = self._sections.get(name)
        if existing is not None and existing is not section:
            raise ImproperlyConfigured(f"device detail section '{name}' is registered twice")
        self._sections[name] = section
        if template:
            self._templates[name] = template

    def for_device(self, device: Device) -> dict[str, Any]:
        return {name: section(device) for name, section in self._sections.items()}

    def cards(self, device: Device) -> list[dict[str, Any]]:
        """The device page's cards: [{name, template, section}] for the sections that have one."""
        found = []
        for name, template in self._templates.items():
            section = self._sections[name](device)
            if section is not None:
                found.append({"name": name, "template": template, "section": section})
        return found


details = DetailRegistry()
