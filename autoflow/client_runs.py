"""The client's side of one run once it exists: read it, wait for it, cancel, pause, resume.

:class:`RunControl` is what a :class:`~autoflow.run.Run` handle asks of its owner (the
:class:`~autoflow.run.RunOwner` protocol). :class:`~autoflow.client.Client` inherits it
(through ``client_submit.Submission``, which starts runs); workers and triggers are in
``client.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from autoflow import codec
from autoflow.define.definition import build_graph, parse_definition
from autoflow.define.workflow import WorkflowRegistry
from autoflow.engine.backend import Backend
from autoflow.engine.subflows import SubFlows
from autoflow.errors import NotFoundError, RunCancelled, RunFailed, RunTimeout
from autoflow.models import LogEntry, RunInfo, RunStatus
from autoflow.run import Run

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["RunControl"]


_Found = TypeVar("_Found")


class RunControl:
    """One run's status, logs, graph, wait, result, cancel, pause and resume, for
    :class:`~autoflow.client.Client` (which provides the backend and its workers)."""

    backend: Backend
    url: str
    registry: WorkflowRegistry  # a run handle draws its run with the graph

    # Client's own: starting its workers (a wait starts them) and immediate mode's drain.
    def start(self) -> None:
        raise NotImplementedError

    def _drain(self, run_id: str) -> None:
        raise NotImplementedError

    # -- one run ---------------------------------------------------------------------------
    def run(self, run_id: str | Run) -> Run:
        """A handle on an existing run (NotFoundError if unknown)."""
        run_id = _run_id(run_id)
        self.status(run_id)
        return Run(self, run_id)

    def status(self, run_id: str | Run) -> RunInfo:
        run_id = _run_id(run_id)
        info = self.backend.store.get_run(run_id)
        if info is None:
            raise self._unknown(run_id)
        return info

    def run_status(self, run_id: str | Run) -> RunStatus:
        """Just the status of a run (one cheap read); NotFoundError if unknown."""
        run_id = _run_id(run_id)
        status = self.backend.store.run_status(run_id)
        if status is None:
            raise self._unknown(run_id)
        return status

    def run_statuses(self, run_ids: Sequence[str | Run]) -> list[RunStatus]:
        """:meth:`run_status` of many runs, in their order, in one read; NotFoundError
        (naming the first) if any is unknown."""
        ids = [_run_id(run_id) for run_id in run_ids]
        return self._all_known(ids, self.backend.store.run_statuses(ids))

    def run_summaries(self, run_ids: Sequence[str | Run]) -> list[RunInfo]:
        """Many runs' own fields without their nodes (as :meth:`runs` lists them), in their
        order, in one read; NotFoundError (naming the first) if any is unknown."""
        ids = [_run_id(run_id) for run_id in run_ids]
        return self._all_known(ids, self.backend.store.run_summaries(ids))

    def _all_known(self, run_ids: Sequence[str], found: Sequence[_Found | None]) -> list[_Found]:
        """``found`` (a store's answer for ``run_ids``, None where a run is unknown), or
        NotFoundError naming the first unknown run."""
        for run_id, item in zip(run_ids, found, strict=True):
            if item is None:
                raise self._unknown(run_id)
        return [item for item in found if item is not None]

    def _unknown(self, run_id: str) -> NotFoundError:
        return NotFoundError(f"no run {run_id!r} on {self.url} (unknown, or past retention)")

    def logs(self, run_id: str | Run, since: int = 0, node: str | None = None, limit: int = 10_000) -> list[LogEntry]:
        """Log lines with ``id > since``, oldest first, at most ``limit`` per call;
        NotFoundError for an unknown run."""
        run_id = _run_id(run_id)
        entries = self.backend.store.get_logs(run_id, since=since, node_id=node, limit=limit)
        if not entries and self.backend.store.run_status(run_id) is None:
            raise self._unknown(run_id)
        return entries

    def graph(self, run: str | RunInfo) -> nx.DiGraph:
        """The DAG of a run (its id, or its status if already fetched), rebuilt from the
        stored definition it ran."""
        info = self.status(run) if isinstance(run, str) else run
        digest = info.definition_hash
        body = self.backend.store.get_definition(digest)
        if body is None:
            raise NotFoundError(f"the definition {digest} of run {info.id!r} is not in the store")
        data = codec.loads(body)
        return build_graph(str(data.get("name", "")), parse_definition(data)[0])

    def wait(self, run_id: str | Run, timeout: float | None = None) -> RunInfo:
        """Block until the run ends; RunTimeout after ``timeout`` seconds (it keeps running)."""
        run_id = _run_id(run_id)
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        # A store that wakes waiters is waited on for up to a second at a time; else short
        # runs end within milliseconds: look again soon, then less often.
        pause = 1.0 if self.backend.store.finish_wakes_waiters else 0.002
        while True:
            if self._finished(run_id):  # cheap; the full snapshot only once at the end
                return self.status(run_id)
            if self.backend.kind == "memory":
                self._drain(run_id)
                continue
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise RunTimeout(run_id, timeout or 0.0)
            if self.backend.store.wait_finished(run_id, min(remaining, pause)):
                return self.status(run_id)
            pause = min(1.0, pause * 1.5)

    def result(self, run_id: str | Run, timeout: float | None = None) -> Any:
        """The workflow's output; RunFailed or RunCancelled if the run did not complete."""
        run_id = _run_id(run_id)
        info = self.wait(run_id, timeout)
        if info.status is RunStatus.COMPLETED:
            return info.output
        if info.status is RunStatus.CANCELLED:
            raise RunCancelled(run_id)
        error = info.error
        if error is None:
            raise RunFailed(run_id, None, "RunFailed", "the run failed")
        raise RunFailed(run_id, error.node_id, error.type, error.message, error.traceback)

    # -- control ---------------------------------------------------------------------------
    def cancel(self, run_id: str | Run) -> RunStatus:
        """Cancel a run: pending nodes never start; running ones are told to stop; its
        sub-workflow runs are cancelled too."""
        run_id = _run_id(run_id)
        store = self.backend.store
        status = store.cancel_run(run_id)
        if status is None:
            raise NotFoundError(f"no run {run_id!r} on {self.url}")
        for child in store.child_runs(run_id):
            child_status = store.run_status(child)
            if child_status is not None and not child_status.finished:
                self.cancel(child)
        if status.finished:
            self._settle_parent(run_id)
            self.backend.dispatcher.nudge()  # a slot was freed
        return status

    def _settle_parent(self, run_id: str) -> None:
        """A sub-workflow run ended here (cancelled by hand): settle its parent node."""
        outcome = SubFlows(self.backend.store).settle_parent(run_id)
        if outcome is not None:
            progress, parent = outcome
            self.backend.dispatcher.send(progress.ready)
            if progress.finished is not None:
                self._settle_parent(parent)

    def pause(self, run_id: str | Run) -> RunStatus:
        """No new node of the run starts until :meth:`resume`; running nodes finish."""
        run_id = _run_id(run_id)
        status = self.backend.store.pause_run(run_id)
        if status is None:
            raise NotFoundError(f"no run {run_id!r} on {self.url}")
        return status

    def resume(self, run_id: str | Run) -> RunStatus:
        run_id = _run_id(run_id)
        ready = self.backend.store.resume_run(run_id)
        self.backend.dispatcher.send(ready)
        self.backend.dispatcher.nudge()
        return self.run_status(run_id)

    def _finished(self, run_id: str) -> bool:
        status = self.backend.store.run_status(run_id)
        if status is None:
            raise self._unknown(run_id)
        return status.finished


def _run_id(run: str | Run) -> str:
    """A run's id, given the id or its :class:`Run` handle."""
    if isinstance(run, Run):
        return run.id
    if not isinstance(run, str):
        raise TypeError(f"expected a run id (str) or a Run, got {type(run).__name__}")
    return run
