"""The client: execute workflows and look after runs (status, logs, wait, cancel, ...).

``Client`` is the wiring: the backend, in-process workers and trigger service, stored
workflows and run history. Starting runs is :class:`~autoflow.client_submit.Submission`
(``execute``, ``execute_many``); what the client does with one run once it exists (read,
wait, cancel, pause, resume) is :class:`~autoflow.client_runs.RunControl`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from autoflow.client_submit import Submission
from autoflow.config import Settings
from autoflow.define.registry import default_registry
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.engine.backend import Backend, open_backend
from autoflow.engine.catalog import WorkflowCatalog
from autoflow.engine.observe import Observer
from autoflow.engine.worker import Worker
from autoflow.models import QueueStats, RunInfo, RunStatus
from autoflow.run import DisplayHooks, Run, display_hooks
from autoflow.store.catalog import RunQuery, StoredWorkflow
from autoflow.triggers.dbtriggers import DbTriggers
from autoflow.triggers.schedules import Schedules
from autoflow.triggers.service import TriggerService

__all__ = ["Client", "DisplayHooks", "Run", "display_hooks"]  # the run handle lives in autoflow.run


class Client(Submission):
    """Runs workflows on a backend and reports on them.

    Example::

        client = af.Client()                           # embedded: SQLite under AUTOFLOW_HOME,
                                                       # worker threads in this process
        client = af.Client("redis://localhost:6379/0") # Redis: workers run `autoflow worker`
        client = af.Client(immediate=True)             # in memory, synchronous (tests)

        run = client.execute(etl, url="https://x", priority=5)
        run.result(timeout=60)

    ``workers`` sets how many node workers run inside this process: by default
    ``NODE_CONCURRENCY`` on the embedded SQLite backend and none on Redis.

    Schedules and database triggers: ``client.schedules`` and ``client.db_triggers``
    (docs/schedules.md, docs/database-triggers.md). ``scheduler`` says whether this
    process fires them while its workers run (the ticker and the listeners); by default
    an embedded SQLite client does (``AUTOFLOW_SCHEDULER=false`` turns it off) and a
    Redis client leaves it to ``autoflow scheduler``.
    ``observer`` hears what in-process workers did (``autoflow.server.metrics.MetricsObserver``
    records it).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        registry: WorkflowRegistry | None = None,
        workers: int | None = None,
        immediate: bool = False,
        ship_code: bool = False,
        scheduler: bool | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.registry = registry or default_registry()
        self.backend: Backend = open_backend("memory://" if immediate else url, self.settings)
        self.url = self.backend.url
        if workers is None:
            workers = self.settings.node_concurrency if self.backend.kind in ("sqlite", "memory") else 0
        self.workers = workers
        self.ship_code = ship_code
        self.observer = observer  # told what the in-process workers did (metrics)
        self._worker: Worker | None = None
        self._lock = threading.Lock()
        self._stored: set[str] = set()
        if scheduler is None:
            scheduler = self.settings.scheduler and self.backend.kind == "sqlite" and workers > 0
        self.scheduler = scheduler
        self._schedules: Schedules | None = None
        self._db_triggers: DbTriggers | None = None
        self._service: TriggerService | None = None
        self._trigger_lock = threading.Lock()
        self._closing = False
        self.catalog = WorkflowCatalog(self.backend.store, self.registry)  # workflows stored by id
        self._shipped: dict[tuple[tuple[str, Any], ...], str] = {}
        self._secret_checked = False

    # -- workers ---------------------------------------------------------------------------
    @property
    def runs_locally(self) -> bool:
        """True when nodes of this client's runs execute inside this process."""
        return self.workers > 0

    def start(self) -> None:
        """Start the in-process workers now (they also start on the first execute/wait),
        and the scheduler if this client runs it."""
        with self._lock:
            if self._closing:
                return
            if self._worker is None and self.runs_locally:
                self._worker = Worker(
                    self.backend, self.registry, self.settings, workers=self.workers, observer=self.observer
                )
                if self.backend.kind != "memory":
                    self._worker.start()
            if self.scheduler and self._service is None and self.backend.kind != "memory":
                schedules, db_triggers = self._triggers()
                self._service = TriggerService(
                    self.backend.store,
                    self,
                    self.registry,
                    lease=self.settings.scheduler_lease_seconds,
                    schedules=schedules,
                    db_triggers=db_triggers,
                )
                self._service.start()

    def close(self) -> None:
        """Stop in-process workers (and the scheduler) and release connections."""
        with self._lock:
            self._closing = True
            service, self._service = self._service, None
        if service is not None:  # outside the lock: its threads may be starting runs
            service.stop()
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
        self.backend.close()

    def _drain(self, run_id: str) -> None:
        self.start()
        if self._worker is None:
            raise RuntimeError("immediate mode needs in-process workers (workers=0 was given)")
        self._worker.drain(lambda: self._finished(run_id))

    # -- triggers --------------------------------------------------------------------------
    def _triggers(self) -> tuple[Schedules, DbTriggers]:
        with self._trigger_lock:
            if self._schedules is None or self._db_triggers is None:
                store, resolve = self.backend.store, self._trigger_workflow
                self._schedules = Schedules(store, self, self.registry, resolve=resolve)
                self._db_triggers = DbTriggers(store, self, self.registry, resolve=resolve)
            return self._schedules, self._db_triggers

    def _trigger_workflow(self, name: str, organization_id: str | None) -> Workflow:
        """The workflow a schedule or database trigger names (a stored one wins, as in execute)."""
        found = self.resolve_workflow(name, organization_id=organization_id)
        return found if isinstance(found, Workflow) else self.load_workflow(found)

    @property
    def schedules(self) -> Schedules:
        """The schedules of this backend: create, list, get, update, delete, pause,
        resume, trigger, backfill, preview (see :class:`autoflow.triggers.Schedules`).
        With ``scheduler`` on, using them starts this client's ticker."""
        schedules = self._triggers()[0]
        if self.scheduler:
            self.start()
        return schedules

    @property
    def db_triggers(self) -> DbTriggers:
        """The database-change triggers of this backend: activate, deactivate, list, get,
        delete (see :class:`autoflow.triggers.DbTriggers`). With ``scheduler`` on, using
        them starts this client's listeners."""
        db_triggers = self._triggers()[1]
        if self.scheduler:
            self.start()
        return db_triggers

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workflows stored by id ------------------------------------------------------------
    def save_workflow(
        self,
        definition: Mapping[str, Any] | Workflow,
        *,
        workflow_id: str | None = None,
        organization_id: str | None = None,
        expected_version: int | None = None,
    ) -> StoredWorkflow:
        """Store a JSON definition (or a workflow's) under ``workflow_id`` (default: its
        name) as a new version, after validating it like ``af.Workflow.from_dict`` (node
        types resolve through this client's registry and the built-ins): a bad definition
        raises :class:`WorkflowError` naming the field or node, and nothing is stored.

        ``expected_version``: 0 to create a new id only, n to update only if the latest
        version is n; otherwise :class:`~autoflow.errors.ConflictError`.

        Example::

            saved = client.save_workflow(etl.to_dict(), workflow_id="etl")
            client.execute("etl", inputs={"url": "https://x"})   # runs version saved.version
        """
        return self.catalog.save(
            definition, workflow_id=workflow_id, organization_id=organization_id, expected_version=expected_version
        )

    def stored_workflow(
        self, workflow_id: str, *, version: int | None = None, organization_id: str | None = None
    ) -> StoredWorkflow:
        """A stored workflow (the latest version unless ``version``); NotFoundError if none."""
        return self.catalog.get(workflow_id, version=version, organization_id=organization_id)

    def stored_workflows(self, *, organization_id: str | None = None, limit: int = 100) -> list[StoredWorkflow]:
        """The latest version of each stored workflow of an organization, by id."""
        return self.backend.store.list_workflows(organization_id, limit)

    def resolve_workflow(self, name: str, *, organization_id: str | None = None) -> Workflow | StoredWorkflow:
        """What ``execute(name, organization_id=...)`` would run: the stored workflow of
        that id (it wins), else the registered workflow of that name; NotFoundError if none."""
        return self.catalog.resolve(name, organization_id)

    def load_workflow(self, stored: StoredWorkflow) -> Workflow:
        """The :class:`Workflow` of a stored definition (parsed once per version, cached)."""
        return self.catalog.load(stored)

    # -- everything ------------------------------------------------------------------------
    def stats(self) -> QueueStats:
        return self.backend.store.stats()

    def runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        *,
        organization_id: str | None = None,
        user_id: str | None = None,
        trigger: str | None = None,
        workflow_id: str | None = None,
        before: str | None = None,
    ) -> list[RunInfo]:
        """Run history, newest first (snapshots without per-node detail). Filters combine;
        ``before`` (a run id) pages on: ``client.runs(before=page[-1].id)``."""
        state = RunStatus(status) if status else None
        if organization_id is None and user_id is None and trigger is None and workflow_id is None and before is None:
            return self.backend.store.list_runs(workflow, state, limit)
        query = RunQuery(workflow, state, organization_id, user_id, trigger, workflow_id, before, limit)
        return self.backend.store.query_runs(query)

    def __repr__(self) -> str:
        return f"<Client {self.url} workers={self.workers}>"
