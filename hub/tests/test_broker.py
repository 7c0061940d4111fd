"""The embedded broker (hub/broker.py): a worker that polls while the hub publishes gets
every message whole, never a file caught between its creation and its contents."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

from kombu import Connection

from hub.broker import folder_options

MESSAGES = 3000


def connection(folder: Path, transport: str) -> Connection:
    return Connection("filesystem://localhost//", transport=transport, transport_options=folder_options(folder, polling_interval=0.001))


def publish_while_consuming(folder: Path, transport: str) -> list[dict[str, object]]:
    # Its own queue name: kombu keeps declared exchanges in a per-process class attribute,
    # which a Celery app used earlier in the process (another test's) has filled.
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    received: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            with connection(folder, transport) as conn, conn.SimpleQueue(queue_name) as queue:
                for n in range(MESSAGES):
                    queue.put({"n": n, "padding": "x" * 2000})
        except BaseException as exc:  # asserted on below
            errors.append(exc)

    with connection(folder, transport) as conn, conn.SimpleQueue(queue_name) as queue:
        thread = threading.Thread(target=publisher)
        thread.start()
        while len(received) < MESSAGES:
            message = queue.get(timeout=30)
            received.append(message.payload)
            message.ack()
        thread.join()
    assert errors == []
    return received


def test_a_worker_polling_while_the_hub_publishes_gets_every_message_whole(tmp_path: Path) -> None:
    received = publish_while_consuming(tmp_path, "filesystem")
    assert sorted(m["n"] for m in received) == list(range(MESSAGES))  # type: ignore[type-var]
    assert all(m["padding"] == "x" * 2000 for m in received)
    assert os.listdir(tmp_path / "queue") == [], "no message or partial file left behind"


def test_the_embedded_hub_s_celery_uses_it() -> None:
    from django.conf import settings

    from hub.celery import app

    with app.connection_for_write() as conn:
        module = type(conn.transport).__module__
    assert module == ("hub.broker" if settings.CELERY_BROKER_URL.startswith("filesystem://") else "kombu.transport.redis")


def test_files_left_by_a_publisher_that_died_mid_write_are_removed_when_a_channel_opens(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    dead = queue / f"1_{uuid.uuid4()}.celery.msg.part"
    dead.write_bytes(b'{"bo')
    hour_ago = dead.stat().st_mtime - 3600
    os.utime(dead, (hour_ago, hour_ago))
    writing = queue / f"2_{uuid.uuid4()}.celery.msg.part"  # a publisher that is writing now
    writing.write_bytes(b'{"bo')
    message = queue / f"3_{uuid.uuid4()}.celery.msg"
    message.write_bytes(b"{}")
    os.utime(message, (hour_ago, hour_ago))
    with connection(tmp_path, "filesystem") as conn:
        conn.default_channel  # noqa: B018  # opening a channel is what sweeps
    assert sorted(p.name for p in queue.iterdir()) == sorted([writing.name, message.name])
