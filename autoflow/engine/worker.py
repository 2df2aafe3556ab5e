"""A worker: consumes both queues of a backend in this process.

Embedded (``Client()`` on SQLite, or ``Client(url, workers=N)``) it runs in daemon
threads; ``autoflow worker`` runs it in the foreground with thread or process workers,
stopping gracefully on SIGTERM (running nodes finish) and at once on SIGINT.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from autoflow.config import Settings
from autoflow.define.workflow import WorkflowRegistry
from autoflow.engine.backend import Backend
from autoflow.engine.dispatch import ChildHooks, HueyDispatcher
from autoflow.engine.executor import Executor
from autoflow.engine.inline import InlineDispatcher
from autoflow.engine.invoke import SignalInvoker, ThreadInvoker
from autoflow.engine.observe import Observer
from autoflow.engine.reaper import Reaper
from autoflow.engine.shipping import CodeRefused
from autoflow.engine.signing import KEYCHECK_BLOB, keycheck
from autoflow.models import RunStatus
from autoflow.store.redis import RedisStore

__all__ = ["Worker"]

log = logging.getLogger("autoflow.worker")
KINDS = ("thread", "process")


def _die_with_parent() -> None:
    """Linux: a forked worker process gets SIGKILL when its parent dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: orphans exit at their next queue poll instead
        pass


class Worker:
    """Executes the nodes of one backend.

    Example::

        worker = Worker(backend, registry, settings, workers=4, kind="process")
        worker.run()        # foreground, until SIGTERM or SIGINT (what `autoflow worker` does)

        worker.start()      # background threads (what an embedded Client does)
        worker.stop()
    """

    def __init__(
        self,
        backend: Backend,
        registry: WorkflowRegistry,
        settings: Settings,
        *,
        workers: int | None = None,
        kind: str = "thread",
        shutdown_timeout: float = 30.0,
        accept_code: bool = False,
        observer: Observer | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"worker kind must be one of {KINDS}, got {kind!r}")
        self.backend = backend
        self.settings = settings
        self.workers = workers or settings.node_concurrency
        self.kind = kind
        self.shutdown_timeout = shutdown_timeout
        self._parent_pid = os.getpid()
        self._stopping = threading.Event()  # set in a process worker told to stop at once
        self._admitting = threading.Lock()
        self._admit_again = False
        store, dispatcher = backend.store, backend.dispatcher
        self.executor = Executor(
            store,
            registry,
            dispatcher.send,
            lease=settings.lease_seconds,
            on_finished=self._on_finished,
            invoker=SignalInvoker() if kind == "process" else ThreadInvoker(),
            secret=settings.secret_bytes,
            code_secret=self._code_secret(settings) if accept_code else None,
            limits=settings.limits,
            stopping=self._stopping.is_set,
            outage=getattr(dispatcher, "outage", None),
            observer=observer,
        )
        self.observer = observer
        dispatcher.node_handler = self._handle_node
        dispatcher.admit_handler = self.admit
        if isinstance(store, RedisStore):  # an ended run's bookkeeping may go ahead of a queue read
            store.on_runs_waiting = dispatcher.nudge
        self.reaper = Reaper(
            store,
            dispatcher.send,
            self.admit,
            dispatcher.backlog,
            self._recover,
            lease=settings.lease_seconds,
            requeue_after=settings.requeue_seconds,
            max_stalls=settings.max_stalls,
            retention=settings.retention_seconds,
            outage=getattr(dispatcher, "outage", None),
        )
        self._consumers: list[Any] = []

    @staticmethod
    def _code_secret(settings: Settings) -> bytes:
        secret = settings.secret_bytes
        if not secret:
            raise CodeRefused("--accept-code needs AUTOFLOW_SECRET (the same as the senders') to verify code")
        return secret

    # -- handlers --------------------------------------------------------------------------
    def _handle_node(self, run_id: str, node_id: str, attempt: int) -> None:
        self.executor.run_node(run_id, node_id, attempt)

    def _child_started(self) -> None:
        """In each forked process worker, as soon as it starts (before any node runs): die
        with the parent, and note when the parent tells it to stop at once."""
        _die_with_parent()
        if os.getppid() != self._parent_pid:  # the parent died before we could ask
            os._exit(1)

    def _interrupted(self) -> None:
        self._stopping.set()

    def announce(self) -> None:
        """Publish a fingerprint of this worker's AUTOFLOW_SECRET, so that a client with
        another secret is told so at once instead of seeing its runs fail."""
        self.backend.store.put_blob(KEYCHECK_BLOB, keycheck(self.settings.secret_bytes).encode())

    def admit(self) -> None:
        """Start pending runs while slots are free (WORKFLOW_CONCURRENCY). Calls that come
        while one is running in this process are folded into one more pass of it."""
        if not self._admitting.acquire(blocking=False):
            self._admit_again = True
            return
        try:
            while True:
                self._admit_again = False
                ready = self.backend.store.admit(self.settings.workflow_concurrency)
                if ready:
                    self.backend.dispatcher.send(ready)
                if not self._admit_again:
                    return
        finally:
            self._admitting.release()

    def _recover(self) -> None:
        """Settle sub-workflow nodes whose child run ended while their worker died."""
        for progress, run_id in self.executor.subflows.settle_lost():
            self.executor.after(progress, run_id)

    def _on_finished(self, run_id: str, status: RunStatus, admit: bool = True) -> None:
        log.info("run %s %s", run_id, status.value)
        if self.observer is not None:
            self.observer.run_finished(status)
        if admit:  # False: no run was waiting for the slot when it freed (see Progress.admit)
            self.admit()

    # -- lifecycle -------------------------------------------------------------------------
    def _dispatcher(self) -> HueyDispatcher:
        dispatcher = self.backend.dispatcher
        if not isinstance(dispatcher, HueyDispatcher):
            raise TypeError(f"a {type(dispatcher).__name__} has no consumers; use drain()")
        return dispatcher

    def start(self) -> None:
        """Run in background daemon threads (thread workers only)."""
        if self.kind != "thread":
            raise ValueError("embedded workers use threads; run process workers with `autoflow worker`")
        dispatcher = self._dispatcher()
        nodes = dispatcher.consumer("nodes", workers=self.workers, kind="thread", embedded=True)
        flows = dispatcher.consumer("workflows", workers=1, kind="thread", embedded=True)
        self._consumers = [nodes, flows]
        self.announce()
        for consumer in self._consumers:
            threading.Thread(target=consumer.run, name="autoflow-consumer", daemon=True).start()
        self.reaper.start()
        self.reaper.tick()

    def run(self) -> None:
        """Run in the foreground until SIGTERM (graceful: running nodes get
        ``shutdown_timeout`` seconds to finish) or SIGINT (at once: their leases hand them
        to other workers)."""
        dispatcher = self._dispatcher()
        nodes = dispatcher.consumer(
            "nodes",
            workers=self.workers,
            kind=self.kind,
            embedded=False,
            shutdown_timeout=self.shutdown_timeout,
            hooks=ChildHooks(self._child_started, self._interrupted),
        )
        # A dedicated worker polls admission often: a run submitted by another process
        # then starts within ~20 ms (an embedded client's own enqueues wake it at once).
        flows = dispatcher.consumer("workflows", workers=1, kind="thread", embedded=True, max_delay=0.02)
        self._consumers = [nodes, flows]
        self.announce()

        def started() -> None:  # process workers are forked by now; threads may start
            threading.Thread(target=flows.run, name="autoflow-admission", daemon=True).start()
            self.reaper.start()
            log.info("worker %d up: %d %s worker(s) on %s", os.getpid(), self.workers, self.kind, self.backend.url)

        try:
            dispatcher.serve(nodes, started)
        finally:
            self.stop()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking messages; give running nodes up to ``timeout`` seconds to finish
        (a node cut short is re-run elsewhere once its lease expires)."""
        self.reaper.stop()
        consumers, self._consumers = self._consumers, []
        if consumers:
            self._dispatcher().stop_consumers(consumers, timeout)
        self.executor.tracker.stop()

    def drain(self, done: Callable[[], bool]) -> None:
        """Immediate mode: handle queued messages inline until ``done()``."""
        dispatcher = self.backend.dispatcher
        if not isinstance(dispatcher, InlineDispatcher):
            raise TypeError("drain() is for the inline dispatcher of immediate mode")
        dispatcher.drain(done)
