"""The embedded hub's Celery broker: kombu's filesystem transport, each message written
whole before a worker can see it.

kombu's own `_put` creates the message file under its final name and then writes into it.
A worker polling the same folder can take the file in between, read nothing, and stop on
the JSON error (celery/kombu#1551): the worker is gone and the message with it. That was
seen here as a Celery worker dying in the embedded run with "Unrecoverable error:
JSONDecodeError". Here the message is written under a name the worker never takes
(`….msg.part`) and then renamed into place, which is atomic on one filesystem.

A publisher killed mid-write leaves its `.part` behind: it was never a message (its
publish did not return), so each new channel removes those older than `STALE_PARTIAL_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger("meshhub.broker")

PARTIAL_SUFFIX = ".part"  # `_get` takes only names ending in ".<queue>.msg"
STALE_PARTIAL_S = 600  # a write takes well under a second; older is a publisher that died


def folder_options(folder: Path, polling_interval: float = 0.05) -> dict[str, Any]:
    """The transport options of a broker kept in `folder` (its subfolders made here).

    kombu's default polling interval (1 s) is also how long the worker sleeps whenever it
    may not take a message yet (prefetch 1, acks late): it then takes about one message a
    second, so a backlog of expired bridge polls left by a killed or stalled worker never
    drained. Hence 50 ms."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        # Exchange tables; kombu's default is "control" relative to the working directory.
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": polling_interval,
    }


def remove_stale_partials(folder: str, now: float | None = None) -> int:
    """Remove the `.part` files a killed publisher left in `folder`; how many went."""
    now = time.time() if now is None else now
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.endswith(PARTIAL_SUFFIX):
                continue
            with contextlib.suppress(FileNotFoundError):  # another channel removed it first
                if now - entry.stat().st_mtime > STALE_PARTIAL_S:
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        logger.warning("removed %d unfinished broker message files left by a publisher that died mid-write", removed, extra={"folder": folder})
    return removed


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        remove_stale_partials(self.data_folder_out)

    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]  # kombu's own signature, which its base class names differently
        """Put `payload` onto `queue`: the same name and ordering as kombu's, written whole."""
        filename = os.path.join(self.data_folder_out, f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        partial = filename + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, filename)
        except OSError as exc:  # a full disk, say: nothing half-written stays behind
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
