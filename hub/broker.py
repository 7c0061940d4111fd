"""The embedded hub's Celery broker: kombu's filesystem transport, each message written
whole before a worker can see it.

kombu's own `_put` creates the message file under its final name and then writes into it.
A worker polling the same folder can take the file in between, read nothing, and stop on
the JSON error (celery/kombu#1551): the worker is gone and the message with it. That was
seen here as a Celery worker dying in the embedded run with "Unrecoverable error:
JSONDecodeError". Here the message is written under a name the worker never takes
(`….msg.part`) and then renamed into place, which is atomic on one filesystem.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".part"  # `_get` takes only names ending in ".<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]  # kombu's own signature, which its base class names differently
        """Put `payload` onto `queue`: the same name and ordering as kombu's, written whole."""
        filename = os.path.join(self.data_folder_out, f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        partial = filename + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, filename)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
