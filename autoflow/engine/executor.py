"""Runs one node message: claim, resolve inputs, call (timeout, cancel, logs), record.

Retries, timeouts, logging, cancellation, rate and concurrency limits live here, once, for
every node. A map node expands into items instead of running; a sub-workflow node starts
a child run and waits for it; a deferred node (``af.delay``, a rate-limit pause) goes back
to the queue's schedule without holding a worker.

The steps off the common path are mixins of :class:`Executor` (no extra call or object
per node): finding definitions and functions (``resolving.py``), ``.map`` expansion and
gathering (``maps.py``), failures and retries (``failures.py``), rate and concurrency
limits (``throttle.py``), what a node's context asks of the worker (``services.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from autoflow import codec
from autoflow import nodes as _library  # noqa: F401  (registers the built-in node library)
from autoflow.config import Limits
from autoflow.context import CancelEvent, Context, Credentials, Defer, LogBuffer, log_record
from autoflow.define.definition import NodeSpec
from autoflow.define.workflow import WorkflowRegistry
from autoflow.engine.failures import Failures
from autoflow.engine.heartbeat import LeaseTracker
from autoflow.engine.invoke import Invoker, ThreadInvoker
from autoflow.engine.maps import MapSteps, item_index
from autoflow.engine.observe import Observer
from autoflow.engine.outage import Outage
from autoflow.engine.resolving import Resolving
from autoflow.engine.services import NodeServices
from autoflow.engine.settle import Settle, once
from autoflow.engine.subflows import SubFlows
from autoflow.engine.throttle import Throttle
from autoflow.errors import BackendError, NodeCancelled, OutputError
from autoflow.models import LogLevel, RunStatus
from autoflow.store.base import Claim, Progress, Ready, Store, engine_log
from autoflow.templates import resolve_template

__all__ = ["CONTINUE_FOR", "Executor"]

log = logging.getLogger("autoflow.executor")


#: Seconds one message may go on running the nodes its completions make ready.
CONTINUE_FOR = 0.05


class Executor(Resolving, MapSteps, Failures, Throttle, NodeServices):
    """Executes node messages against a store.

    ``send`` enqueues follow-up messages; ``on_finished`` hears about runs that ended
    (to admit the next pending runs, when the store says some may be waiting).
    """

    def __init__(
        self,
        store: Store,
        registry: WorkflowRegistry,
        send: Callable[[Sequence[Ready]], None],
        *,
        lease: float,
        on_finished: Callable[[str, RunStatus, bool], None] | None = None,
        invoker: Invoker | None = None,
        secret: bytes | None = None,
        code_secret: bytes | None = None,
        limits: Limits | None = None,
        stopping: Callable[[], bool] = lambda: False,
        outage: Outage | None = None,
        credentials: Credentials | None = None,
        http_transport: Any = None,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.limits = limits or Limits()
        self.stopping = stopping
        self.observer = observer
        self.registry = registry
        self.send = send
        self.lease = lease
        self.on_finished = on_finished
        self.invoker: Invoker = invoker or ThreadInvoker()
        self.credentials = credentials  # None: each context reads the environment when asked
        self.http_transport = http_transport
        self.tracker = LeaseTracker(store, lease, on_stuck=self._abandon, outage=outage)
        self.subflows = SubFlows(store, secret)
        self._plans = OrderedDict()
        self._verified = OrderedDict()  # see Resolving._verify
        self._lock = threading.Lock()
        self.accepts_code = code_secret is not None
        self._code_secret = code_secret
        self._shipped = OrderedDict()

    # -- one message -----------------------------------------------------------------------
    def run_node(self, run_id: str, node_id: str, attempt: int) -> None:
        """Handle one ``(run_id, node_id, attempt)`` message; never raises for node errors.

        Completing a node may hand this worker the next ready node, already claimed (a
        continuation): it runs it at once, without a queue round trip, for up to
        ``CONTINUE_FOR`` seconds of one message; after that (or when the worker stops) the
        next nodes go through the queue like any other, so no run monopolises a worker."""
        token = codec.new_token()
        claim = self.store.claim(run_id, node_id, attempt, token, self.lease)
        if claim is None:
            log.debug("stale or paused message %s/%s#%d dropped", run_id, node_id, attempt)
            return
        until = time.monotonic() + CONTINUE_FOR
        while claim is not None:
            next_token = codec.new_token() if time.monotonic() < until and not self.stopping() else None
            claim = self._run_claim(claim, token, next_token)
            token = next_token or ""

    def _run_claim(self, claim: Claim, token: str, next_token: str | None) -> Claim | None:
        """Execute one claimed node and record its outcome; returns the next claim, if the
        store handed one over (``next_token``)."""
        run_id, node_id = claim.run_id, claim.node_id
        logs = LogBuffer()
        cancel = CancelEvent()
        started = time.monotonic()
        self.tracker.track(run_id, node_id, token, cancel, logs, self.invoker.interrupt)
        try:
            settle = self._execute(claim, token, logs, cancel)
        finally:
            # Stop the heartbeat before recording the outcome: after the transition the
            # claim is gone, and a beat in between would report it lost.
            lost = self.tracker.untrack(run_id, node_id)
        progress, outcome = self._record(settle, run_id, node_id, token, next_token)
        if self.observer is not None and progress.accepted:
            self._observe(claim, outcome, time.monotonic() - started)
        if not progress.accepted and not lost:
            log.warning("result of %s/%s#%d discarded: the claim was no longer ours", run_id, node_id, claim.attempt)
        elif not progress.accepted:
            log.info("result of %s/%s#%d discarded (claim lost or cancelled meanwhile)", run_id, node_id, claim.attempt)
        self.after(progress, run_id)
        return progress.claim

    def _observe(self, claim: Claim, outcome: str, seconds: float) -> None:
        """Tell the observer (metrics) how an attempt ended."""
        plan = self._plans.get(claim.digest)
        spec = plan.specs.get(claim.map_of or claim.node_id) if plan else None
        try:
            if self.observer is not None:
                self.observer.node_done(spec.type if spec else "unknown", outcome, seconds)
        except Exception:  # metrics must never break the engine
            log.exception("the observer failed")

    def _record(
        self, settle: Settle, run_id: str, node_id: str, token: str, next_token: str | None
    ) -> tuple[Progress, str]:
        """Run the transition that records the outcome. If the store refuses what the node
        produced (a value it cannot encode), record that as the node's failure instead, so a
        node never loops through retries and lost leases; an unreachable store is not such a
        failure (the lease lapses and the node runs again once it is back). Returns the
        progress and the outcome recorded (for the observer)."""
        try:
            return settle(next_token), settle.outcome
        except BackendError:
            raise
        except Exception as exc:
            problem = OutputError(
                f"the outcome of node {node_id!r} could not be recorded: {type(exc).__name__}: {codec.safe_str(exc)}"
            )
            note = log_record(LogLevel.ERROR, f"failed: {problem}", node_id)
            return self.store.fail(run_id, node_id, token, codec.error_info(problem, node_id), None, [note]), "failed"

    def _complete(
        self, run_id: str, node_id: str, token: str, output: str, logs: list[dict[str, Any]], next_token: str | None
    ) -> Progress:
        return self.store.complete(run_id, node_id, token, output, logs, next_token, self.lease)

    def _abandon(self, run_id: str, node_id: str, token: str) -> None:
        """The watchdog's verdict on a node that ignores its run's cancellation."""
        note = log_record(
            LogLevel.WARN,
            "cancelled while still running: the function ignores cancellation (check ctx.cancelled); "
            "its result will be discarded",
            node_id,
        )
        self.after(self.store.cancel_node(run_id, node_id, token, [note]), run_id)

    def after(self, progress: Progress, run_id: str) -> None:
        """Send what became ready; settle a parent of a finished sub-workflow run; report."""
        if progress.ready:
            self.send(progress.ready)
        if progress.finished is None:
            return
        parent = self.subflows.settle_parent(run_id)
        if parent is not None:
            self.after(*parent)
        if self.on_finished is not None:
            self.on_finished(run_id, progress.finished, progress.admit)

    def _execute(self, claim: Claim, token: str, logs: LogBuffer, cancel: threading.Event) -> Settle:
        """Run the node; return the store transition that records its outcome."""
        run_id, node_id, attempt = claim.run_id, claim.node_id, claim.attempt
        started = time.monotonic()
        spec: NodeSpec | None = None
        slot: str | None = None
        ctx: Context | None = None
        still_running: threading.Event | None = None  # set when an abandoned call stops
        try:
            self._verify(claim)
            plan = self._plan(claim)
            spec = plan.specs[claim.map_of or node_id]
            values = resolve_template(spec.args, claim.outputs, claim.inputs)
            if spec.workflow is not None:
                child = self.subflows.prepare_child(claim, spec, values)
                return once("waiting", self.subflows.start_child, claim, token, child, self.send)
            if spec.map_over is not None and claim.map_of is None:
                if claim.gather is not None:
                    return self._gather(claim, token, claim.gather, logs)
                return self._expand(claim, spec, token, values[spec.map_over], logs)
            if claim.map_of is not None:
                values[spec.map_over or ""] = claim.item
            node = self._node(spec.type, claim.code)
            values = node.validate_inputs(values)
            paused = self._limits(claim, node, spec, token, logs)
            if paused is not None:
                return paused
            if spec.options.concurrency:
                slot = node.key
            timeout = spec.options.timeout
            if node.ctx_param:  # a node without a context parameter never sees one
                ctx = Context(
                    run_id,
                    node_id,
                    attempt,
                    workflow=claim.workflow,
                    log_sink=logs.add,
                    cancel_event=cancel,
                    deadline=None if timeout is None else started + timeout,
                    wake_at=claim.wake_at,
                    item=item_index(node_id) if claim.map_of is not None else None,
                    credentials=self.credentials,
                    trigger=partial(self._trigger, run_id),
                    http_transport=self.http_transport,
                    starter=partial(self._start_workflow, claim),
                )
            value = self.invoker.call(
                partial(node.invoke, values, ctx), is_async=node.is_async, timeout=timeout, cancel=cancel
            )
            output = self._output(value, node_id, node_id in plan.conditions)
            if ctx is not None:  # secrets the node resolved through its context never reach the store
                output = ctx.scrub(output)
        except Defer as deferred:
            note = log_record(LogLevel.INFO, f"waiting until {codec.from_ts(deferred.until):%H:%M:%S}", node_id)
            return once(
                "deferred", self.store.defer, run_id, node_id, token, deferred.until, True, [*logs.drain(), note]
            )
        except NodeCancelled as exc:
            still_running = getattr(exc, "still_running", None)
            if not cancel.is_set():  # raised by the node itself, not by a cancellation: a failure
                return self._failed(claim, token, spec, exc, logs, cancel, ctx)
            stopped = log_record(LogLevel.WARN, "stopped: the run was cancelled", node_id)
            return once("cancelled", self.store.cancel_node, run_id, node_id, token, [*logs.drain(), stopped])
        except Exception as exc:
            still_running = getattr(exc, "still_running", None)
            return self._failed(claim, token, spec, exc, logs, cancel, ctx)
        except (KeyboardInterrupt, SystemExit) as exc:  # raised by the node's own code
            if isinstance(exc, KeyboardInterrupt) and self.stopping():
                raise  # the worker is being stopped at once: the node runs again elsewhere
            return self._failed(claim, token, spec, exc, logs, cancel, ctx)
        finally:
            if slot is not None and still_running is not None and not still_running.is_set():
                self.tracker.hold_until(slot, token, still_running)  # freed when the function stops
            elif slot is not None:
                self.store.release_slot(slot, token)
        elapsed = (time.monotonic() - started) * 1000
        # The closing line goes with the transition, not through the buffer: the heartbeat
        # could flush it although the store then refuses a claim whose lease was lost.
        done = engine_log(LogLevel.INFO, f"completed in {elapsed:.1f} ms", node_id)
        return Settle("completed", partial(self._complete, run_id, node_id, token, output, [*logs.drain(), done]))

    def _output(self, value: Any, node_id: str, is_condition: bool) -> str:
        """The node's output as JSON text, or OutputError naming the node and the problem."""
        if is_condition and not isinstance(value, bool):
            raise OutputError(
                f"node {node_id!r} decides a when= branch and must return a bool, got {type(value).__name__}"
            )
        return codec.json_checked(value, where=f"the output of node {node_id!r}", limits=self.limits)[1]
