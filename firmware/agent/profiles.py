"""Built-in device profiles (ARCHITECTURE §9) and loading a profile from JSON.

A profile declares capabilities in the shape the hub's `hello` expects, plus the initial
values the virtual hardware starts from.
"""

import json

PROFILES = {
    "thermostat": {
        "device_type": "thermostat",
        "capabilities": [
            {"name": "temperature", "kind": "sensor", "value_type": "float", "unit": "°C"},
            {"name": "setpoint", "kind": "actuator", "value_type": "float", "unit": "°C", "min": 5, "max": 35, "writable": True},
            {"name": "mode", "kind": "property", "value_type": "enum", "enum_values": ["off", "heat", "auto"], "writable": True},
        ],
        "initial": {"temperature": 19.5, "setpoint": 21.0, "mode": "auto"},
    },
    "relay": {
        "device_type": "relay",
        "capabilities": [
            {"name": "on", "kind": "actuator", "value_type": "bool", "writable": True},
            {"name": "power", "kind": "sensor", "value_type": "float", "unit": "W"},
        ],
        "initial": {"on": False, "power": 0.0},
    },
    "dimmer": {
        "device_type": "dimmer",
        "capabilities": [{"name": "level", "kind": "actuator", "value_type": "int", "min": 0, "max": 100, "writable": True}],
        "initial": {"level": 0},
    },
    "door": {
        "device_type": "door",
        "capabilities": [{"name": "open", "kind": "sensor", "value_type": "bool"}],
        "initial": {"open": False},
    },
    "meter": {
        "device_type": "meter",
        "capabilities": [
            {"name": "energy", "kind": "sensor", "value_type": "float", "unit": "kWh"},
            {"name": "power", "kind": "sensor", "value_type": "float", "unit": "W"},
        ],
        "initial": {"energy": 0.0, "power": 0.0},
    },
}


class ProfileError(Exception):
    pass


def load_profile(name_or_path):
    """A built-in profile by name, or a JSON file with the same shape."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]
    try:
        with open(name_or_path) as handle:
            profile = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ProfileError("profile %r is neither built in (%s) nor a readable JSON file: %s" % (name_or_path, ", ".join(sorted(PROFILES)), exc))
    if not isinstance(profile, dict) or not isinstance(profile.get("capabilities"), list):
        raise ProfileError("profile %r must be an object with a capabilities list" % (name_or_path,))
    profile.setdefault("initial", {})
    profile.setdefault("device_type", "generic")
    return profile
