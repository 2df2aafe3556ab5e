"""Huey as the transport: two queues (workflows, nodes), a JSON wire format, consumers.

A message carries only ids: ``run_node(run_id, node_id, attempt)`` on the node queue and
``admit()`` on the workflow queue. Messages are JSON (never pickle), HMAC-SHA256 signed
when a secret is set; a message that fails to parse or verify is dropped and logged
(the reaper re-sends whatever the store still expects).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import signal
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer, ConsumerStopped, ProcessEnvironment, Scheduler, Worker
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import PriorityRedisStorage, SqliteStorage
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoflow import codec
from autoflow.engine.outage import Outage
from autoflow.store.base import Ready
from autoflow.store.redis_line import Lines

__all__ = ["ChildHooks", "HueyDispatcher", "JsonSerializer", "MessageError"]

log = logging.getLogger("autoflow.dispatch")
NODE_TASK = "autoflow.run_node"
ADMIT_TASK = "autoflow.admit"
# Huey names a task "<module of its function>.<name>"; these are the only two accepted.
_WIRE_NAMES = {f"{__name__}.{NODE_TASK}": NODE_TASK, f"{__name__}.{ADMIT_TASK}": ADMIT_TASK}


class MessageError(ValueError):
    """A queue message that is not a valid, correctly signed autoflow message."""


class JsonSerializer(Serializer):  # type: ignore[misc]
    """Huey serializer that writes JSON, signed with HMAC-SHA256 when given a secret.

    Only the fields autoflow uses travel: id, task name, eta, priority and the id
    arguments. Anything else in a message is refused, so a forged message can at worst
    be dropped, never run code.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        super().__init__()
        self._key = hashlib.sha256(b"autoflow-queue:" + secret).digest() if secret else None

    def _serialize(self, data: Message) -> bytes:
        payload = {
            "id": data.id,
            "name": data.name,
            "eta": data.eta.isoformat() if data.eta else None,
            "priority": data.priority,
            "args": list(data.args or ()),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        if self._key is None:
            return body
        return hmac.new(self._key, body, hashlib.sha256).hexdigest().encode() + b"." + body

    def _deserialize(self, data: bytes) -> Message:
        if self._key is not None:
            sig, sep, body = data.partition(b".")
            expected = hmac.new(self._key, body, hashlib.sha256).hexdigest().encode()
            if not sep or not hmac.compare_digest(sig, expected):
                raise MessageError("queue message has no valid signature (is AUTOFLOW_SECRET the same everywhere?)")
            data = body
        try:
            payload = json.loads(data)
            name, args = payload["name"], payload["args"]
            eta = dt.datetime.fromisoformat(payload["eta"]) if payload.get("eta") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError(f"queue message is not autoflow JSON: {exc}") from None
        if _WIRE_NAMES.get(name) is None or not isinstance(args, list):
            raise MessageError(f"queue message for unknown task {name!r}")
        if _WIRE_NAMES[name] == NODE_TASK and not (
            len(args) == 3 and isinstance(args[0], str) and isinstance(args[1], str) and isinstance(args[2], int)
        ):
            raise MessageError("run_node message must carry (run_id, node_id, attempt)")
        return Message(payload.get("id"), name, eta, 0, 0, payload.get("priority"), tuple(args), {})


class _EngineHuey:
    """Huey used as a pure transport: autoflow keeps state, retries, cancellation and
    results in its store, so execution skips Huey's revocation checks, result storage
    and signals (each would cost a round trip per node). Reading the queue or the schedule
    while the backend is down is paced and quiet (``outage``); a message that is not a
    valid autoflow message is dropped with one warning."""

    outage: Outage | None = None

    def _unreachable(self, exc: Exception, where: str) -> None:
        if self.outage is None:
            raise exc
        time.sleep(min(1.0, self.outage.failed(exc, where)))

    def dequeue(self) -> Any:
        try:
            data = self.storage.dequeue()  # type: ignore[attr-defined]
        except Exception as exc:
            self._unreachable(exc, f"reading queue {self.name}")  # type: ignore[attr-defined]
            return None
        if self.outage is not None:
            self.outage.ok()
        if data is None:
            return None
        try:
            return self.deserialize_task(data)  # type: ignore[attr-defined]
        except MessageError as exc:
            log.warning("dropped a message from queue %s: %s", self.name, exc)  # type: ignore[attr-defined]
            return None

    def read_schedule(self, timestamp: dt.datetime | None = None) -> list[Any]:
        try:
            return super().read_schedule(timestamp)  # type: ignore[misc,no-any-return]
        except Exception as exc:
            self._unreachable(exc, f"reading the schedule of {self.name}")  # type: ignore[attr-defined]
            return []

    def execute(self, task: Any, timestamp: dt.datetime | None = None) -> Any:
        if not self.ready_to_run(task, timestamp):  # type: ignore[attr-defined]
            self.add_schedule(task)  # type: ignore[attr-defined]
            return None
        return task.execute()


class _SqliteStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite queue, with batched enqueues and ``synchronous=NORMAL``: every
    message is re-creatable from the store (the reaper re-sends lost ones), so the queue
    need not wait for an fsync per operation (WAL keeps the file consistent)."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn

    def enqueue_many(self, items: Sequence[tuple[bytes, int]]) -> None:
        with self.db(commit=True) as curs:
            curs.executemany(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                [(self.name, self.to_blob(data), priority) for data, priority in items],
            )


class _RedisStorage(PriorityRedisStorage):  # type: ignore[misc]
    """Huey's priority queue on Redis, its messages sent and taken on this thread's own
    connection at the socket (``redis_line.Lines``: no pool checkout, no ``poll`` per
    read), and enqueued in batches (one ZADD)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = Lines(self.pool)

    def enqueue(self, data: bytes, priority: int | None = None) -> None:
        self.lines.send(*self.enqueue_command([(data, priority or 0)]))

    def enqueue_many(self, items: Sequence[tuple[bytes, int]]) -> None:
        self.lines.send(*self.enqueue_command(items))

    def enqueue_command(self, items: Sequence[tuple[bytes, int]]) -> tuple[Any, ...]:
        """The ZADD that enqueues ``items`` (message, priority). Same member layout as
        Huey's RedisPriorityQueue.enqueue: a big-endian microsecond prefix keeps FIFO order
        within a priority (consecutive here, so unique)."""
        base = int(time.time() * 1e6)
        args: list[Any] = []
        for i, (data, priority) in enumerate(items):
            args += [-priority, struct.pack(">Q", base + i) + data]
        return ("ZADD", self.queue_key, *args)

    def dequeue(self) -> bytes | None:
        if not self.blocking:
            return super().dequeue()  # type: ignore[no-any-return]
        self.lines.returning()  # this thread comes back here after each message (see Lines.later)
        try:
            # Not sent again after a timeout: the pop may have happened, its reply lost.
            popped = self.lines.send("BZPOPMIN", self.queue_key, self.read_timeout, again_after_timeout=False)
        except RedisTimeoutError:
            return None
        return None if not popped else bytes(popped[1][8:])  # (key, prefix + message, score)

    def close(self) -> bool:
        """Huey's Redis storage keeps its connections on close; release them."""
        self.lines.close()
        self.conn.connection_pool.disconnect()
        return True


class _SqliteHuey(_EngineHuey, SqliteHuey):  # type: ignore[misc]
    storage_class = _SqliteStorage


class _RedisHuey(_EngineHuey, PriorityRedisHuey):  # type: ignore[misc]
    storage_class = _RedisStorage


class _WakeableWorker(Worker):  # type: ignore[misc]
    """Huey worker whose idle sleep ends as soon as this process enqueues something
    (polling storages only), so embedded runs do not wait for the poll interval."""

    wake: threading.Condition | None = None
    delay: float
    max_delay: float
    backoff: float

    def sleep(self) -> None:
        if self.delay > self.max_delay:
            self.delay = self.max_delay
        if self.wake is None:
            self.stop_flag.wait(self.delay)
        else:
            with self.wake:
                self.wake.wait(self.delay)
        self.delay *= self.backoff


class _FastScheduler(Scheduler):  # type: ignore[misc]
    """Huey's scheduler, but polling the schedule every 0.1 s instead of at least 1 s,
    so retry backoffs and delays keep their precision."""

    def __init__(self, huey: Huey, stop_flag: Any, interval: float, periodic: bool) -> None:
        super().__init__(huey, stop_flag, 1, periodic)
        self.interval = interval


class _ProcessEnvironment(ProcessEnvironment):  # type: ignore[misc]
    """Huey's process environment, with hooks run in each forked child as it starts (before
    it takes any message) and when the parent tells it to stop at once."""

    def __init__(self, graceful: int, interrupt: int, hooks: ChildHooks) -> None:
        super().__init__(graceful, interrupt)
        self._hooks = hooks

    def init_child(self, process: Any) -> None:
        super().init_child(process)
        self._hooks.started()
        previous = signal.getsignal(self.interrupt)

        def interrupted(signum: int, frame: Any) -> None:
            self._hooks.interrupted()
            if callable(previous):
                previous(signum, frame)

        signal.signal(self.interrupt, interrupted)


class ChildHooks:
    """Callbacks for forked process workers (see ``_ProcessEnvironment``)."""

    def __init__(self, started: Callable[[], None], interrupted: Callable[[], None]) -> None:
        self.started = started
        self.interrupted = interrupted


class _Consumer(Consumer):  # type: ignore[misc]
    worker_class = _WakeableWorker
    scheduler_class = _FastScheduler

    def __init__(
        self,
        huey: Huey,
        *,
        embedded: bool,
        wake: threading.Condition | None,
        hooks: ChildHooks | None = None,
        **kwargs: Any,
    ) -> None:
        self._embedded = embedded
        self._wake = wake
        self._hooks = hooks
        super().__init__(huey, **kwargs)

    def get_environment(self, worker_type: str) -> Any:
        if worker_type == "process" and self._hooks is not None:
            return _ProcessEnvironment(self._graceful_sig, self._interrupt_sig, self._hooks)
        return super().get_environment(worker_type)

    def _create_worker(self) -> Worker:
        worker = super()._create_worker()
        worker.wake = self._wake
        return worker

    def _create_scheduler(self) -> Scheduler:
        return self.scheduler_class(huey=self.huey, stop_flag=self.stop_flag, interval=0.1, periodic=False)

    def _set_signal_handlers(self) -> None:
        if not self._embedded:
            super()._set_signal_handlers()


class HueyDispatcher:
    """Sends node and admission messages through Huey, and builds consumers for them.

    Example::

        dispatcher = HueyDispatcher.sqlite("/tmp/queue.db")
        dispatcher.send([Ready(run_id, "fetch", 1)])
    """

    def __init__(self, nodes: Huey, workflows: Huey, url: str) -> None:
        self.url = url
        self.nodes = nodes
        self.workflows = workflows
        self.outage = Outage(url)
        nodes.outage = workflows.outage = self.outage
        self.node_handler: Callable[[str, str, int], None] | None = None
        self.admit_handler: Callable[[], None] | None = None
        self._wake = threading.Condition() if not nodes.storage.blocking else None
        for huey in (nodes, workflows):
            if isinstance(huey.storage, _RedisStorage):  # a stopping consumer sends what it put off
                huey.on_shutdown(name="autoflow-flush")(huey.storage.lines.flush)
        self._node_task = nodes.task(name=NODE_TASK)(self._on_node)
        self._admit_task = workflows.task(name=ADMIT_TASK)(self._on_admit)

    @classmethod
    def sqlite(cls, filename: str, *, namespace: str = "autoflow", secret: bytes | None = None) -> HueyDispatcher:
        def make(queue: str) -> Huey:
            return _SqliteHuey(
                f"{namespace}_{queue}",
                filename=filename,
                results=False,
                serializer=JsonSerializer(secret),
                utc=True,
                timeout=30,
            )

        return cls(make("nodes"), make("workflows"), f"sqlite:///{filename}")

    @classmethod
    def redis(cls, url: str, *, namespace: str = "autoflow", secret: bytes | None = None) -> HueyDispatcher:
        # Huey reads raw bytes, so it gets its own connection pool (the store decodes).
        pool = redis.ConnectionPool.from_url(
            codec.quote_url_password(url), socket_connect_timeout=3, health_check_interval=30
        )

        def make(queue: str) -> Huey:
            return _RedisHuey(
                f"{namespace}_{queue}",
                connection_pool=pool,
                results=False,
                serializer=JsonSerializer(secret),
                utc=True,
                blocking=True,
                read_timeout=0.5,
            )

        return cls(make("nodes"), make("workflows"), codec.redact_text(url))

    # -- task bodies (run inside consumers) ------------------------------------------------
    def _on_node(self, run_id: str, node_id: str, attempt: int) -> None:
        if self.node_handler is None:
            log.error("node message %s/%s received by a process without an executor", run_id, node_id)
            return
        self.node_handler(run_id, node_id, attempt)

    def _on_admit(self) -> None:
        if self.admit_handler is not None:
            # One admission covers every run created before it: the other waiting nudges
            # (a burst of submissions sends one each) would only repeat it.
            self.workflows.storage.flush_queue()
            self.admit_handler()

    # -- sending ---------------------------------------------------------------------------
    def send(self, items: Sequence[Ready]) -> None:
        """Enqueue node messages: the ready ones in one batch, those with an eta into the
        schedule."""
        now: list[tuple[bytes, int]] = []
        for item in items:
            task = self._task(item)
            if task.eta is not None:
                self.nodes.add_schedule(task)
            else:
                now.append((self.nodes.serialize_task(task), item.priority))
        if len(now) == 1:
            self.nodes.storage.enqueue(now[0][0], now[0][1])
        elif now:
            self.nodes.storage.enqueue_many(now)
        if items:
            self._notify()

    def queue_commands(self, items: Sequence[Ready], server: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """The Redis command that enqueues ``items`` (ready now, no eta), for a store to
        send to ``server`` (see ``redis_line.Lines.server``) in the same round trip as the
        transition that makes them ready; None when the queue is not there."""
        storage = self.nodes.storage
        if not isinstance(storage, _RedisStorage) or storage.lines.server != server or not items:
            return None
        return [storage.enqueue_command([(self.nodes.serialize_task(self._task(i)), i.priority) for i in items])]

    def _task(self, item: Ready) -> Any:
        eta = (
            dt.datetime.fromtimestamp(item.eta, tz=dt.timezone.utc).replace(tzinfo=None)
            if item.eta is not None
            else None
        )
        return self._node_task.task_class(
            (item.run_id, item.node_id, item.attempt),
            {},
            id=f"{item.run_id}:{item.node_id}:{item.attempt}",
            eta=eta,
            priority=item.priority,
        )

    def nudge(self, priority: int = 0) -> None:
        """Ask the workflow queue to admit pending runs."""
        self.workflows.enqueue(self._admit_task.s(priority=priority))
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None:
            with self._wake:
                self._wake.notify_all()

    def backlog(self) -> int:
        """Node messages waiting in the queue or its schedule."""
        return int(self.nodes.pending_count()) + int(self.nodes.scheduled_count())

    # -- consumers -------------------------------------------------------------------------
    def consumer(
        self,
        queue: str,
        *,
        workers: int,
        kind: str = "thread",
        embedded: bool = True,
        shutdown_timeout: float | None = None,
        max_delay: float = 0.25,
        hooks: ChildHooks | None = None,
    ) -> Consumer:
        """A Huey consumer of ``queue`` ("nodes" or "workflows") with low-latency polling.

        A graceful stop lets running nodes finish for up to ``shutdown_timeout`` seconds
        (None: as long as they take); nodes cut short are re-run by the reaper. An idle
        consumer polls at most every ``max_delay`` seconds (Redis blocks instead; enqueues
        from this process wake it at once)."""
        huey = self.nodes if queue == "nodes" else self.workflows
        return _Consumer(
            huey,
            embedded=embedded,
            wake=self._wake if kind == "thread" else None,
            hooks=hooks,
            workers=workers,
            worker_type=kind,
            periodic=False,
            initial_delay=0.005,
            backoff=1.2,
            max_delay=max_delay,
            check_worker_health=True,
            health_check_interval=1.0,
            shutdown_timeout=shutdown_timeout,
            graceful_signal="TERM",  # containers stop with SIGTERM: finish running nodes first
        )

    @staticmethod
    def stop_consumers(consumers: Sequence[Consumer], timeout: float) -> None:
        """Stop consumers and wait up to ``timeout`` seconds in all for their workers."""
        for consumer in consumers:
            consumer.stop_flag.set()
        deadline = time.monotonic() + timeout
        for consumer in consumers:
            for _, thread in consumer.worker_threads:
                if thread.ident is not None:  # a consumer stopped while starting has unstarted threads
                    thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def serve(consumer: Consumer, started: Callable[[], None]) -> None:
        """Run a foreground consumer (signal handlers, worker health checks) until it is
        stopped; ``started`` runs once its workers exist."""
        consumer.start()
        started()
        health = time.monotonic()
        try:
            while True:
                health = consumer.loop(health)
        except ConsumerStopped:
            log.info("consumer stopped")

    def close(self) -> None:
        for huey in (self.nodes, self.workflows):
            try:
                huey.storage.close()
            except Exception:  # closing is best effort; the process may be exiting
                log.debug("closing %s failed", huey.name, exc_info=True)
