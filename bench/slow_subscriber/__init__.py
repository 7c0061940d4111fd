"""Bench-only Django app: a deliberately slow state subscriber, plugged in through the
public hook `devices.events.on_state` (see apps.py). Enabled only by running a process
with `DJANGO_SETTINGS_MODULE=bench.settings_slow_subscriber`; nothing in the hub knows of it."""
