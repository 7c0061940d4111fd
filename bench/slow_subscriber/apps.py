"""A state subscriber that sleeps BENCH_SLOW_SUBSCRIBER_MS milliseconds (default 50) per
committed batch: the stand-in for rule evaluation in the gateway benchmark's
`acks-slow-subscriber` phase, which shows whether a slow subscriber delays device acks."""

from __future__ import annotations

import os
import time
from typing import Any

from django.apps import AppConfig


class SlowSubscriberConfig(AppConfig):
    name = "bench.slow_subscriber"
    label = "bench_slow_subscriber"
    verbose_name = "bench: slow state subscriber"

    def ready(self) -> None:
        from devices import events

        delay_s = float(os.environ.get("BENCH_SLOW_SUBSCRIBER_MS", "50")) / 1000

        def slow_subscriber(reports: list[Any]) -> None:
            time.sleep(delay_s)

        events.on_state(slow_subscriber)
