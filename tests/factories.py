"""factory_boy factories for registry rows, with the built-in device profiles' capabilities."""

from __future__ import annotations

from typing import Any

import factory

from devices.models import Capability, CapabilityKind, Device, DeviceStatus, Group, ValueType


class DeviceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Device
        django_get_or_create = ("node_id",)

    node_id = factory.Sequence(lambda n: f"sensor-{n}")
    name = factory.LazyAttribute(lambda o: o.node_id.replace("-", " ").title())
    device_type = "generic"
    status = DeviceStatus.PROVISIONED


class CapabilityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Capability

    device = factory.SubFactory(DeviceFactory)
    name = factory.Sequence(lambda n: f"cap_{n}")
    kind = CapabilityKind.SENSOR
    value_type = ValueType.FLOAT


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group

    name = factory.Sequence(lambda n: f"group-{n}")


def thermostat(node_id: str = "sensor-1", **kwargs: Any) -> Device:
    """The agent's `thermostat` profile: temperature sensor, setpoint actuator, mode property."""
    device = DeviceFactory(node_id=node_id, device_type="thermostat", **kwargs)
    CapabilityFactory(device=device, name="temperature", kind=CapabilityKind.SENSOR, value_type=ValueType.FLOAT, unit="°C")
    CapabilityFactory(
        device=device, name="setpoint", kind=CapabilityKind.ACTUATOR, value_type=ValueType.FLOAT, unit="°C", min_value=5, max_value=35, writable=True
    )
    CapabilityFactory(device=device, name="mode", kind=CapabilityKind.PROPERTY, value_type=ValueType.ENUM, enum_values=["off", "heat", "auto"], writable=True)
    return device


def relay(node_id: str = "relay-1", **kwargs: Any) -> Device:
    device = DeviceFactory(node_id=node_id, device_type="relay", **kwargs)
    CapabilityFactory(device=device, name="on", kind=CapabilityKind.ACTUATOR, value_type=ValueType.BOOL, writable=True)
    CapabilityFactory(device=device, name="power", kind=CapabilityKind.SENSOR, value_type=ValueType.FLOAT, unit="W")
    return device


def dimmer(node_id: str = "dimmer-1", **kwargs: Any) -> Device:
    device = DeviceFactory(node_id=node_id, device_type="dimmer", **kwargs)
    CapabilityFactory(device=device, name="level", kind=CapabilityKind.ACTUATOR, value_type=ValueType.INT, min_value=0, max_value=100, writable=True)
    return device
