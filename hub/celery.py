"""The Celery application shared by `runhub`'s worker child and scale-out workers."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# The embedded broker (`filesystem://`) is kombu's filesystem transport with each message
# written whole (hub/broker.py). Registered under kombu's own name, so the broker URL alone
# still chooses the transport, and /healthz still names it `filesystem`.
TRANSPORT_ALIASES["filesystem"] = "hub.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")

app = Celery("hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
