"""Virtual hardware for the simulator: values that move like the real thing would."""

import random


class VirtualHardware:
    """Holds current values; `tick(dt)` advances the simulation, `apply` takes a command."""

    def __init__(self, profile, seed=None):
        self.kind = profile.get("device_type", "generic")
        self.values = dict(profile.get("initial", {}))
        self.rng = random.Random(seed)

    def tick(self, dt):
        v = self.values
        if self.kind == "thermostat":
            target = v["setpoint"] if v.get("mode") in ("heat", "auto") else 15.0
            v["temperature"] = round(v["temperature"] + (target - v["temperature"]) * min(1.0, 0.05 * dt) + self.rng.uniform(-0.05, 0.05), 2)
        elif self.kind == "relay":
            v["power"] = round(self.rng.uniform(55.0, 65.0), 1) if v["on"] else 0.0
        elif self.kind == "door":
            if self.rng.random() < 0.02 * dt:
                v["open"] = not v["open"]
        elif self.kind == "meter":
            v["power"] = round(self.rng.uniform(200.0, 900.0), 1)
            v["energy"] = round(v["energy"] + v["power"] * dt / 3_600_000, 6)
        return dict(v)

    def apply(self, capability, value):
        self.values[capability] = value
        return value
