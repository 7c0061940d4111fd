"""The hub's settings plus the bench-only slow state subscriber app (bench/slow_subscriber/):
`DJANGO_SETTINGS_MODULE=bench.settings_slow_subscriber manage.py runmesh` (the repository
root is first on sys.path there, so `bench` imports as a namespace package)."""

from hub.settings import *  # noqa: F403
from hub.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.slow_subscriber"]
