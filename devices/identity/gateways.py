"""What identity operations tell the gateways over the channel layer, after commit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from hub import messages

logger = logging.getLogger("meshhub.identity")

GATEWAYS_GROUP = messages.GATEWAYS_GROUP


def group_send(group: str, message: Mapping[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the database is the truth: gateways re-check serials after every handshake
        logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)


def announce_crl_changed() -> None:
    group_send(GATEWAYS_GROUP, messages.crl_changed())
