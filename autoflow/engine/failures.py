"""What a failed attempt becomes: a retry after a backoff, or the node's failure.

A retry is decided by the error (some cannot be fixed by trying again, and a node may say
so), the node's retry policy and the run's cancellation; the delay comes from the node's
``Backoff``, stretched to a ``retry_after`` the error carries. The error stored and logged
says what happened, without the secrets the node resolved.
"""

from __future__ import annotations

import threading

from autoflow import codec
from autoflow.context import Context, LogBuffer, log_record
from autoflow.define.definition import NodeSpec
from autoflow.engine.planner import retry_delay
from autoflow.engine.settle import Settle, once
from autoflow.errors import InputError, NodeCancelled, NotFoundError, OutputError, WorkflowError
from autoflow.models import LogLevel
from autoflow.store.base import Claim, Store

__all__ = ["Failures"]

#: Errors that a retry cannot fix: wrong wiring, bad inputs, unknown types, bad outputs.
_PERMANENT = (InputError, OutputError, NotFoundError, WorkflowError, NodeCancelled)


class Failures:
    """The failure step of :class:`~autoflow.engine.executor.Executor`."""

    store: Store

    def _failed(
        self,
        claim: Claim,
        token: str,
        spec: NodeSpec | None,
        exc: BaseException,
        logs: LogBuffer,
        cancel: threading.Event,
        ctx: Context | None = None,
    ) -> Settle:
        node_id, attempt = claim.node_id, claim.attempt
        error = codec.error_info(exc, node_id)
        if isinstance(exc, SystemExit):
            error = error.model_copy(update={"message": f"the node called sys.exit({codec.safe_str(exc.code)})"})
        elif isinstance(exc, KeyboardInterrupt):
            error = error.model_copy(update={"message": "the node raised KeyboardInterrupt"})
        if ctx is not None:  # secrets the node resolved never reach the stored error
            error = error.model_copy(
                update={"message": ctx.scrub(error.message), "traceback": ctx.scrub(error.traceback)}
            )
        delay = None
        retryable = (
            isinstance(exc, Exception)
            and not isinstance(exc, _PERMANENT)
            and getattr(exc, "retryable", True) is not False  # a node may say a retry cannot help
        )
        if spec is not None and retryable and spec.options.retries_error(exc) and not cancel.is_set():
            delay = retry_delay(spec.options, attempt)
            after = getattr(exc, "retry_after", None)  # e.g. HTTP Retry-After: wait at least that long
            if delay is not None and isinstance(after, (int, float)) and after > delay:
                delay = float(after)
        total = spec.options.max_attempts if spec else attempt
        if delay is not None:
            message = f"attempt {attempt}/{total} failed: {error}; retrying in {delay:.2f}s"
            closing = log_record(LogLevel.WARN, message, node_id, {"error": error.type})
        else:
            closing = log_record(LogLevel.ERROR, f"failed (attempt {attempt}/{total}): {error}", node_id)
        outcome = "failed" if delay is None else "retrying"
        return once(outcome, self.store.fail, claim.run_id, node_id, token, error, delay, [*logs.drain(), closing])
