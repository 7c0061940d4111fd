"""meshhub project package: settings, URLs, ASGI routing, the Celery app and the mesh gateway."""

from hub.celery import app as celery_app

__all__ = ["celery_app"]
