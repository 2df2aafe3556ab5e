"""Runs one node message: claim, resolve inputs, call (timeout, cancel, logs), record.

Retries, timeouts, logging and cancellation live here, once, for every node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from autoflow import codec
from autoflow.context import Context, LogBuffer, log_record
from autoflow.definition import NodeSpec, parse_definition, resolve_template
from autoflow.engine.heartbeat import LeaseTracker
from autoflow.engine.invoke import Invoker, ThreadInvoker
from autoflow.engine.planner import retry_delay
from autoflow.engine.shipping import CodeRefused, blob_key, unpack
from autoflow.errors import InputError, NodeCancelled, NotFoundError, OutputError, WorkflowError
from autoflow.models import LogLevel, RunStatus
from autoflow.node import Node
from autoflow.registry import Registry
from autoflow.store.base import Claim, Progress, Ready, Store

__all__ = ["Executor"]

log = logging.getLogger("autoflow.executor")

#: Errors that a retry cannot fix: wrong wiring, bad inputs, unknown types, bad outputs.
_PERMANENT = (InputError, OutputError, NotFoundError, WorkflowError)


class Executor:
    """Executes node messages against a store.

    ``send`` enqueues follow-up messages; ``on_finished`` hears about runs that ended
    (to admit the next pending runs).
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        send: Callable[[Sequence[Ready]], None],
        *,
        lease: float,
        on_finished: Callable[[str, RunStatus], None] | None = None,
        invoker: Invoker | None = None,
        code_secret: bytes | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.send = send
        self.lease = lease
        self.on_finished = on_finished
        self.invoker: Invoker = invoker or ThreadInvoker()
        self.tracker = LeaseTracker(store, lease)
        self._plans: OrderedDict[str, dict[str, NodeSpec]] = OrderedDict()
        self._plans_lock = threading.Lock()
        self.accepts_code = code_secret is not None
        self._code_secret = code_secret
        self._shipped: OrderedDict[str, dict[str, Node[Any, Any]]] = OrderedDict()

    # -- plans -----------------------------------------------------------------------------
    def _spec(self, claim: Claim) -> NodeSpec:
        with self._plans_lock:
            specs = self._plans.get(claim.digest)
            if specs is not None:
                self._plans.move_to_end(claim.digest)
        if specs is None:
            body = self.store.get_definition(claim.digest)
            if body is None:
                raise NotFoundError(f"definition {claim.digest} of workflow {claim.workflow!r} is missing")
            specs, _ = parse_definition(codec.loads(body))
            with self._plans_lock:
                self._plans[claim.digest] = specs
                while len(self._plans) > 256:
                    self._plans.popitem(last=False)
        try:
            return specs[claim.node_id]
        except KeyError:
            raise NotFoundError(f"node {claim.node_id!r} is not in workflow {claim.workflow!r}") from None

    def _node(self, node_type: str, digest: str) -> Node[Any, Any]:
        """The function of ``node_type``: from the registry, else shipped with the definition."""
        try:
            return self.registry.node(node_type)
        except NotFoundError as missing:
            with self._plans_lock:
                shipped = self._shipped.get(digest)
            if shipped is None:
                blob = self.store.get_blob(blob_key(digest))
                if blob is None:
                    raise
                if not self.accepts_code:
                    raise CodeRefused(
                        f"{missing}. It was shipped by value, but this worker does not accept code: "
                        "start it with `autoflow worker ... --accept-code` and the sender's AUTOFLOW_SECRET"
                    ) from None
                shipped = unpack(blob, self._code_secret)
                with self._plans_lock:
                    self._shipped[digest] = shipped
                    while len(self._shipped) > 64:
                        self._shipped.popitem(last=False)
            if node_type not in shipped:
                raise
            return shipped[node_type]

    # -- one message -----------------------------------------------------------------------
    def run_node(self, run_id: str, node_id: str, attempt: int) -> None:
        """Handle one ``(run_id, node_id, attempt)`` message; never raises for node errors."""
        token = codec.new_id()
        claim = self.store.claim(run_id, node_id, attempt, token, self.lease)
        if claim is None:
            log.debug("stale or paused message %s/%s#%d dropped", run_id, node_id, attempt)
            return
        logs = LogBuffer()
        cancel = threading.Event()
        self.tracker.track(run_id, node_id, token, cancel, logs, self.invoker.interrupt)
        try:
            progress = self._execute(claim, token, logs, cancel)
        finally:
            lost = self.tracker.untrack(run_id, node_id)
        if not progress.accepted:
            why = "its lease expired and it was handed to another worker" if lost else "it was not ours"
            log.warning("result of %s/%s#%d discarded: %s", run_id, node_id, attempt, why)
        self.after(progress, run_id)

    def after(self, progress: Progress, run_id: str) -> None:
        """Send what became ready; report a finished run."""
        if progress.ready:
            self.send(progress.ready)
        if progress.finished is not None and self.on_finished is not None:
            self.on_finished(run_id, progress.finished)

    def _execute(self, claim: Claim, token: str, logs: LogBuffer, cancel: threading.Event) -> Progress:
        run_id, node_id, attempt = claim.run_id, claim.node_id, claim.attempt
        started = time.monotonic()
        spec: NodeSpec | None = None
        try:
            spec = self._spec(claim)
            node = self._node(spec.type, claim.digest)
            values = node.validate_inputs(resolve_template(spec.args, claim.outputs, claim.inputs))
            timeout = spec.options.timeout
            ctx = Context(
                run_id,
                node_id,
                attempt,
                workflow=claim.workflow,
                log_sink=logs.add,
                cancel_event=cancel,
                deadline=None if timeout is None else started + timeout,
            )
            value = self.invoker.call(
                lambda: node.invoke(values, ctx), is_async=node.is_async, timeout=timeout, cancel=cancel
            )
            output = codec.to_json_value(value, where=f"the output of node {node_id!r}")
            try:
                codec.dumps(output)
            except ValueError as exc:  # NaN and infinities are not JSON
                raise OutputError(f"the output of node {node_id!r} is not valid JSON: {exc}") from None
        except NodeCancelled:
            stopped = log_record(LogLevel.WARN, "stopped: the run was cancelled", node_id)
            return self.store.cancel_node(run_id, node_id, token, [*logs.drain(), stopped])
        except Exception as exc:
            return self._failed(claim, token, spec, exc, logs, cancel)
        elapsed = (time.monotonic() - started) * 1000
        # The closing line goes with the transition, not through the buffer: the heartbeat
        # could flush it although the store then refuses a claim whose lease was lost.
        done = log_record(LogLevel.INFO, f"completed in {elapsed:.1f} ms", node_id)
        return self.store.complete(run_id, node_id, token, output, [*logs.drain(), done])

    def _failed(
        self,
        claim: Claim,
        token: str,
        spec: NodeSpec | None,
        exc: Exception,
        logs: LogBuffer,
        cancel: threading.Event,
    ) -> Progress:
        node_id, attempt = claim.node_id, claim.attempt
        error = codec.error_info(exc, node_id)
        delay = None
        if spec is not None and not isinstance(exc, _PERMANENT) and not cancel.is_set():
            delay = retry_delay(spec.options, attempt)
        total = spec.options.max_attempts if spec else attempt
        if delay is not None:
            message = f"attempt {attempt}/{total} failed: {error}; retrying in {delay:.2f}s"
            closing = log_record(LogLevel.WARN, message, node_id, {"error": error.type})
            retry_at: float | None = time.time() + delay
        else:
            closing = log_record(LogLevel.ERROR, f"failed (attempt {attempt}/{total}): {error}", node_id)
            retry_at = None
        return self.store.fail(claim.run_id, node_id, token, error, retry_at, [*logs.drain(), closing])
