"""What other apps may react to, without `devices` importing them (ARCHITECTURE §3).

Apps above `devices` (automation, OTA, the dashboard) register callables here in their
`AppConfig.ready()`; the state path and the gateway call them after their transaction
commits. A failing subscriber is logged and never undoes or blocks the commit.

State subscribers are kept off the ack path: a committed batch is only put on a bounded
queue (`StateSubscribers`), and the subscribers run from it on their own thread, so the
gateway acknowledges the batch's reports right after commit however slow a
subscriber is (rule evaluation, a live push). When the queue is full the oldest waiting
batch is dropped and counted (`dropped_batches`, `dropped_reports`, logged): subscribers
learn of state late or miss a batch, but the reports themselves are committed and acked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

if TYPE_CHECKING:
    from devices.state import StateReport

logger = logging.getLogger("meshhub.events")
UNBIND_WAIT_S = 10.0

StateHook = Callable[[list["StateReport"]], None]
PresenceHook = Callable[[str, bool], None]
CommandHook = Callable[[str, str, dict[str, Any]], None]
CreatedHook = Callable[[str, str, str], None]
EnrolledHook = Callable[[str, str], None]

state_hooks: list[StateHook] = []
presence_hooks: list[PresenceHook] = []
command_hooks: list[CommandHook] = []
created_hooks: list[CreatedHook] = []
enrolled_hooks: list[EnrolledHook] = []


def on_state(hook: StateHook) -> StateHook:
    state_hooks.append(hook)
    return hook


def on_presence(hook: PresenceHook) -> PresenceHook:
    presence_hooks.append(hook)
    return hook


def on_command_finished(hook: CommandHook) -> CommandHook:
    command_hooks.append(hook)
    return hook


def on_command_created(hook: CreatedHook) -> CreatedHook:
    """(command_id, node_id, device_type) after the outbox row commits: devices that are
    not on the mesh (PLCs) are driven from here."""
    created_hooks.append(hook)
    return hook


def on_enrolled(hook: EnrolledHook) -> EnrolledHook:
    """(node_id, device_type) after an enrollment code was redeemed and the certificate issued."""
    enrolled_hooks.append(hook)
    return hook


RenamedHook = Callable[[str], None]
renamed_hooks: list[RenamedHook] = []


def on_renamed(hook: RenamedHook) -> RenamedHook:
    """(node_id) after a device's name or aliases changed (the assistant's name index)."""
    renamed_hooks.append(hook)
    return hook


def device_renamed(node_id: str) -> None:
    _run(renamed_hooks, node_id)


def _run(hooks: list[Any], *args: Any) -> None:
    for hook in list(hooks):
        try:
            hook(*args)
        except Exception:  # a subscriber's bug must not lose a committed report
            logger.exception("event hook %r failed", hook)


@dataclass
class SubscriberStats:
    queued: int = 0
    delivered_batches: int = 0
    dropped_batches: int = 0
    dropped_reports: int = 0


class StateSubscribers:
    """The bounded queue between a committed state batch and its subscribers.

    In a process that runs the mesh gateway, the gateway binds its event loop here and the
    subscribers run from a task on that loop, each batch in a worker thread of their own
    (never the thread the gateway's database work uses), so a subscriber's
    `async_to_sync(layer.group_send)` reaches consumers on that loop; elsewhere (a Celery
    worker polling PLCs) a thread of this process runs them.
    """

    def __init__(self, maxsize: int | None = None) -> None:
        self._maxsize = maxsize
        self._reset()
        # A forked child (a Celery worker) starts empty: the parent's locks may have been
        # held at the fork, its queued batches are the parent's to deliver.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._pending: deque[list[StateReport]] = deque()
        self._ready = threading.Condition()
        self._delivering = threading.Lock()  # one batch at a time, in commit order, whichever mode
        self._starting = threading.Lock()
        self._unfinished = 0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.stats = SubscriberStats()

    @property
    def maxsize(self) -> int:
        from django.conf import settings

        return self._maxsize or int(settings.STATE_SUBSCRIBER_QUEUE)

    # --- publishing (any thread) ------------------------------------------------------------

    def publish(self, reports: list[StateReport]) -> None:
        """Called on commit of a state batch: never blocks on a subscriber, never raises."""
        if not state_hooks or not reports:
            return
        with self._ready:
            if len(self._pending) >= self.maxsize:
                oldest = self._pending.popleft()
                self._unfinished -= 1
                self.stats.dropped_batches += 1
                self.stats.dropped_reports += len(oldest)
                logger.warning(
                    "state subscribers are behind: dropped the oldest waiting batch (%d reports; %d batches dropped so far)",
                    len(oldest),
                    self.stats.dropped_batches,
                    extra={"dropped_batches": self.stats.dropped_batches, "dropped_reports": self.stats.dropped_reports},
                )
            self._pending.append(reports)
            self._unfinished += 1
            self._ready.notify_all()
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            try:
                loop.call_soon_threadsafe(wakeup.set)
                return
            except RuntimeError:  # that loop is closed: the gateway is gone without unbinding
                self._loop = self._wakeup = None
        self._ensure_thread()

    def _next(self) -> list[StateReport] | None:
        with self._ready:
            return self._pending.popleft() if self._pending else None

    def _deliver(self, reports: list[StateReport]) -> None:
        from django.db import close_old_connections

        try:
            with self._delivering:
                _run(state_hooks, reports)
        finally:
            close_old_connections()
            with self._ready:
                self.stats.delivered_batches += 1
                self._unfinished -= 1
                self._ready.notify_all()

    # --- on the gateway's event loop ------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The gateway's loop runs the subscribers from now on (called by MeshGateway.start);
        a second gateway in the same process takes over from the first."""
        previous_loop, previous_task, previous_executor = self._loop, self._task, self._executor
        if previous_loop is not None and previous_task is not None and not previous_loop.is_closed():
            previous_loop.call_soon_threadsafe(previous_task.cancel)
        if previous_executor is not None:
            previous_executor.shutdown(wait=False)
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-subscribers")
        self._task = loop.create_task(self._run_on_loop(self._wakeup, self._executor))
        self._wakeup.set()  # batches published before the loop was bound

    async def unbind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return  # another gateway of this process bound its loop since
        task, executor = self._task, self._executor
        self._loop = self._wakeup = self._task = self._executor = None
        if task is not None:
            task.cancel()
            # A cancelled sync_to_async still waits for the batch being delivered (asgiref):
            # bounded here, so a slow subscriber cannot hold up a gateway's shutdown; that
            # batch finishes on its own thread.
            _, late = await asyncio.wait({task}, timeout=UNBIND_WAIT_S)
            if late:
                logger.warning("a state subscriber was still running %.0f s into the gateway's shutdown", UNBIND_WAIT_S)
            elif executor is not None:
                from django.db import connections

                # The subscribers' own database connection (rule evaluation queries): closed
                # with its thread, not left for the server to time out.
                await asyncio.get_running_loop().run_in_executor(executor, connections.close_all)
        if executor is not None:
            executor.shutdown(wait=False)
        with self._ready:
            left = bool(self._pending)
        if left:
            self._ensure_thread()

    def _deliver_next(self) -> bool:
        """Take the oldest waiting batch and deliver it, on the executor's thread: a batch
        leaves the queue only there, so a gateway stopping between taking a batch and its
        delivery cannot lose it (it stays queued for the thread that takes over)."""
        reports = self._next()
        if reports is None:
            return False
        self._deliver(reports)
        return True

    async def _run_on_loop(self, wakeup: asyncio.Event, executor: ThreadPoolExecutor) -> None:
        deliver_next = sync_to_async(self._deliver_next, thread_sensitive=False, executor=executor)
        while True:
            await wakeup.wait()
            wakeup.clear()
            while await deliver_next():
                pass

    # --- elsewhere: a thread of this process ---------------------------------------------------

    def _ensure_thread(self) -> None:
        # Lazily, and once: two publishers at the same moment must not start two threads.
        with self._starting:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run_in_thread, name="state-subscribers", daemon=True)
            self._thread.start()

    def _run_in_thread(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._pending) or self._loop is not None)
                if self._loop is not None:
                    return  # a gateway took over
                reports = self._pending.popleft()
            self._deliver(reports)

    # --- observing ----------------------------------------------------------------------------

    def snapshot(self) -> SubscriberStats:
        """The counters, with `queued` read from the queue now (it is never stored)."""
        with self._ready:
            return replace(self.stats, queued=len(self._pending))

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every accepted batch went through the subscribers or was dropped."""
        with self._ready:
            return self._ready.wait_for(lambda: self._unfinished == 0, timeout_s)


state_subscribers = StateSubscribers()


def state_committed(reports: list[StateReport]) -> None:
    """A state batch committed: hand it to the subscribers' queue (off the ack path)."""
    state_subscribers.publish(reports)


def presence_changed(node_id: str, online: bool) -> None:
    _run(presence_hooks, node_id, online)


def command_finished(command_id: str, status: str, result: dict[str, Any]) -> None:
    _run(command_hooks, command_id, status, result)


def command_created(command_id: str, node_id: str, device_type: str) -> None:
    _run(created_hooks, command_id, node_id, device_type)


def device_enrolled(node_id: str, device_type: str) -> None:
    _run(enrolled_hooks, node_id, device_type)
