"""Starting runs: ``execute`` and ``execute_many`` for :class:`~autoflow.client.Client`.

Everything is checked before anything is stored (the workflow, options, inputs, trigger
data, that workers can import its nodes, that their secret is ours); then the definition
is stored once per client, the run signed, created and admitted in one round trip or
transaction where a slot is free. A run's life after that is :class:`~autoflow.client_runs.RunControl`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from autoflow import codec
from autoflow.client_runs import RunControl
from autoflow.config import Settings
from autoflow.define.workflow import Workflow
from autoflow.engine.catalog import WorkflowCatalog
from autoflow.engine.planner import store_definitions, workflow_seeds
from autoflow.engine.shipping import blob_key, code_hash, pack
from autoflow.engine.signing import KEYCHECK_BLOB, keycheck, sign_run
from autoflow.errors import ConfigError, InputError, OutputError, WorkflowError
from autoflow.run import Run, display_run
from autoflow.store.base import NewRun, NodeSeed
from autoflow.store.catalog import StoredWorkflow

__all__ = ["Submission"]

log = logging.getLogger("autoflow.client")  # the client's logger, as before this module was split off


class Submission(RunControl):
    """How :class:`~autoflow.client.Client` starts runs, and what it needs from the client
    (its settings, catalog, stored definitions and shipped code, where its workers run)."""

    settings: Settings
    catalog: WorkflowCatalog
    ship_code: bool
    _stored: set[str]  # digests of the definitions this client stored
    _shipped: dict[tuple[tuple[str, Any], ...], str]  # code hashes of shipped __main__ nodes
    _secret_checked: bool

    # Client's own: whether nodes run in this process, and the workflows stored by id.
    @property
    def runs_locally(self) -> bool:
        raise NotImplementedError

    def load_workflow(self, stored: StoredWorkflow) -> Workflow:
        raise NotImplementedError

    # -- execute ---------------------------------------------------------------------------
    def execute(
        self,
        workflow: Workflow | StoredWorkflow | str,
        inputs: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        user_id: str | None = None,
        organization_id: str | None = None,
        trigger_data: Any = None,
        trigger: str | None = None,
        idempotency_key: str | None = None,
        display: bool = False,
        **kwargs: Any,
    ) -> Run:
        """Start a run and return at once. Inputs are validated first: a bad input raises
        :class:`InputError` and nothing is stored or queued.

        ``trigger`` names what started the run (``manual``, ``webhook``, ``schedule``,
        ``database``, ...; default ``webhook`` when ``trigger_data`` is given, else
        ``manual``); ``trigger_data`` is what the trigger carried (JSON).

        ``workflow`` may be a stored workflow's id (see :meth:`save_workflow`, looked up in
        ``organization_id``'s catalog) or a registered workflow's name: on a clash the
        stored id wins. A run of a stored workflow records its id and version."""
        wf, stored = self._workflow(workflow, organization_id, "execute")
        self._check_options(priority, trigger, user_id, organization_id)
        _check_label("idempotency_key", idempotency_key)
        if inputs is not None and not isinstance(inputs, dict):
            raise InputError(f"inputs must be a dict of workflow inputs, got {type(inputs).__name__}")
        clash = set(inputs or {}) & set(kwargs)
        if clash:
            raise InputError(f"input(s) {sorted(clash)} given both in inputs= and as keywords")
        values = self._values(wf, {**(inputs or {}), **kwargs}, "")
        trigger_json = self._trigger_json(trigger_data)
        self._prepare(wf)
        new = self._new_run(
            wf, stored, values, priority, user_id, organization_id, trigger, trigger_json, idempotency_key
        )
        self.start()
        run = self._start_one(wf, new)
        if display:
            display_run(run)
        return run

    def _start_one(self, wf: Workflow, new: NewRun) -> Run:
        """Create and admit one checked run (immediate mode: run it to its end here)."""
        run_id = self._create(new, workflow_seeds(wf))  # also admits a run found by its key
        created = True
        if new.idempotency_key:  # the key names the run: was it made now, or found?
            created = self._made_now([run_id], [new])[0]
        log.info("run %s of %s %s", run_id, wf.name, "submitted" if created else "found by its idempotency key")
        run = Run(self, run_id, created=created)
        if self.backend.kind == "memory":
            self._drain(run_id)
        return run

    def execute_many(
        self,
        workflow: Workflow | StoredWorkflow | str,
        inputs: Iterable[dict[str, Any]],
        *,
        priority: int = 0,
        user_id: str | None = None,
        organization_id: str | None = None,
        trigger_data: Any = None,
        trigger: str | None = None,
        idempotency_keys: Sequence[str] | None = None,
    ) -> list[Run]:
        """Start one run of ``workflow`` per item of ``inputs`` (each a dict of its
        inputs) and return their handles, in the same order. Submitting many runs this
        way costs a few round trips (Redis) or transactions (SQLite) per 500 runs instead
        of two per run.

        Every item is validated before anything is stored: a bad one raises
        :class:`InputError` naming its index, and no run is created. The options apply to
        every run; ``idempotency_keys``, one per item, name the runs as
        :meth:`execute`'s ``idempotency_key`` does (a run found by its key is not created
        again; finding out costs one read for all of them)."""
        wf, stored = self._workflow(workflow, organization_id, "execute_many")
        self._check_options(priority, trigger, user_id, organization_id)
        if isinstance(inputs, dict) or not isinstance(inputs, Iterable):
            raise InputError(f"inputs must be a list of dicts of workflow inputs, got {type(inputs).__name__}")
        items = list(inputs)
        keys: list[str | None] = [None] * len(items)
        if idempotency_keys is not None:
            if isinstance(idempotency_keys, str) or len(idempotency_keys) != len(items):
                raise InputError(
                    f"idempotency_keys must be a list of one key per item ({len(items)}), got {idempotency_keys!r:.80}"
                )
            if len(set(idempotency_keys)) != len(idempotency_keys):
                raise InputError("idempotency_keys must be different from each other: one key names one run")
            keys = list(idempotency_keys)
        for i, key in enumerate(keys):
            _check_label(f"idempotency_keys[{i}]", key)
        values = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InputError(f"inputs[{i}] must be a dict of workflow inputs, got {type(item).__name__}")
            values.append(self._values(wf, item, f"inputs[{i}]: "))
        trigger_json = self._trigger_json(trigger_data)
        self._prepare(wf)
        runs = [
            self._new_run(wf, stored, v, priority, user_id, organization_id, trigger, trigger_json, k)
            for v, k in zip(values, keys, strict=True)
        ]
        self.start()
        if self.backend.kind == "memory":  # immediate mode runs each one to its end here
            return [self._start_one(wf, run) for run in runs]
        dispatcher = self.backend.dispatcher
        ids, ready = self.backend.store.create_many_and_admit(
            runs, workflow_seeds(wf), self.settings.workflow_concurrency, enqueue=dispatcher.queue_commands
        )
        if ready:
            dispatcher.send(ready)
        keyed = [i for i, run in enumerate(runs) if run.idempotency_key is not None]
        made = [True] * len(ids)
        for i, created in zip(keyed, self._made_now([ids[i] for i in keyed], [runs[i] for i in keyed]), strict=True):
            made[i] = created
        log.info(
            "%d run(s) of %s submitted (%d found by their idempotency keys)", sum(made), wf.name, len(made) - sum(made)
        )
        return [Run(self, run_id, created=created) for run_id, created in zip(ids, made, strict=True)]

    def _workflow(
        self, workflow: Workflow | StoredWorkflow | str, organization_id: str | None, method: str
    ) -> tuple[Workflow, StoredWorkflow | None]:
        """The workflow to run, and the stored workflow it comes from (if it does)."""
        stored: StoredWorkflow | None = None
        if isinstance(workflow, str):
            stored = self.catalog.find(workflow, organization_id)
            wf = self.registry.workflow(workflow) if stored is None else self.load_workflow(stored)
        elif isinstance(workflow, StoredWorkflow):
            stored, wf = workflow, self.load_workflow(workflow)
        else:
            wf = workflow
        if not isinstance(wf, Workflow):
            raise TypeError(
                f"{method}() needs an af.Workflow, a stored workflow id or a registered name, got {workflow!r}"
            )
        return wf, stored

    def _check_options(
        self, priority: int, trigger: str | None, user_id: str | None, organization_id: str | None
    ) -> None:
        limits = self.settings.limits
        if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > limits.max_priority:
            raise InputError(
                f"priority must be an int from {-limits.max_priority} to {limits.max_priority}, got {priority!r}"
            )
        if trigger is not None and (not isinstance(trigger, str) or not trigger.isidentifier() or len(trigger) > 64):
            raise InputError(f"trigger must be a word like 'manual', 'webhook' or 'schedule', got {trigger!r}")
        _check_label("user_id", user_id)
        _check_label("organization_id", organization_id)

    def _values(self, wf: Workflow, inputs: dict[str, Any], where: str) -> dict[str, Any]:
        """The run's validated inputs (``where`` prefixes the error: which item)."""
        try:
            values = wf.validate_inputs(inputs)
            codec.dumps_checked(
                values, where=f"the inputs of workflow {wf.name!r}", max_bytes=self.settings.limits.max_value_bytes
            )
        except (InputError, OutputError) as exc:
            if not where and isinstance(exc, InputError):
                raise
            raise InputError(f"{where}{exc}") from None
        return values

    def _trigger_json(self, trigger_data: Any) -> Any:
        try:
            return codec.json_checked(trigger_data, where="trigger_data", limits=self.settings.limits)[0]
        except OutputError as exc:
            raise InputError(str(exc)) from None

    def _prepare(self, wf: Workflow) -> None:
        """Checks and storage once per submission: the workflow runs here or on workers
        that know it, the secret matches theirs, its definition is stored."""
        self._check_local(wf)
        self._check_secret()
        if wf.digest not in self._stored:
            self._store_definition(wf)

    def _new_run(
        self,
        wf: Workflow,
        stored: StoredWorkflow | None,
        values: dict[str, Any],
        priority: int,
        user_id: str | None,
        organization_id: str | None,
        trigger: str | None,
        trigger_json: Any,
        idempotency_key: str | None,
    ) -> NewRun:
        new = NewRun(
            id=codec.keyed_run_id(idempotency_key) if idempotency_key else codec.new_run_id(),
            code=self._ship(wf),
            workflow=wf.name,
            digest=wf.digest,
            inputs=values,
            output=wf.output,
            created_at=time.time(),
            priority=priority,
            user_id=user_id,
            organization_id=organization_id,
            trigger=trigger or ("webhook" if trigger_json is not None else "manual"),
            trigger_data=trigger_json,
            idempotency_key=idempotency_key,
            workflow_id=stored.id if stored else None,
            workflow_version=stored.version if stored else None,
        )
        signature = sign_run(self.settings.secret_bytes, new)
        return new if signature is None else dataclasses.replace(new, signature=signature)

    def _made_now(self, run_ids: Sequence[str], new: Sequence[NewRun]) -> list[bool]:
        """Whether each run named by an idempotency key was created by this call (its
        creation time is this call's), in one read."""
        found = self.backend.store.created_at(run_ids)
        return [at is not None and abs(at - run.created_at) < 1e-5 for at, run in zip(found, new, strict=True)]

    def _store_definition(self, wf: Workflow) -> None:
        """Store the definition and those of its sub-workflows (once per client)."""
        self._stored.update(store_definitions(self.backend.store, wf))

    def _ship(self, wf: Workflow) -> str | None:
        """With ``ship_code``: store the code of the workflow's ``__main__`` nodes (and its
        sub-workflows') under the hash of its content, and return that hash for the run."""
        if not self.ship_code:
            return None
        main = {
            c.node.key: c.node
            for each in (*wf.subworkflows().values(), wf)
            for c in each.calls.values()
            if c.node is not None and c.node.module == "__main__"
        }
        if not main:
            return None
        nodes = tuple(sorted(main.items(), key=lambda item: item[0]))  # holds the nodes: ids stay theirs
        code = self._shipped.get(nodes)
        if code is None:
            blob = pack(main, self.settings.secret_bytes)
            code = code_hash(blob)
            self.backend.store.put_blob(blob_key(code), blob)
            self._shipped[nodes] = code
            while len(self._shipped) > 32:  # re-run cells make new nodes; keep the recent ones
                self._shipped.pop(next(iter(self._shipped)))
        return code

    def _check_secret(self) -> None:
        """Once per client: refuse to submit when the workers' AUTOFLOW_SECRET differs from
        ours (they would drop our messages and refuse our runs)."""
        if self._secret_checked:
            return
        theirs = self.backend.store.get_blob(KEYCHECK_BLOB)
        if theirs is not None and theirs.decode() != "none" and theirs.decode() != keycheck(self.settings.secret_bytes):
            mine = "no AUTOFLOW_SECRET" if self.settings.secret is None else "a different AUTOFLOW_SECRET"
            raise ConfigError(
                f"this client has {mine} than the workers on {self.url}: they would refuse its runs; "
                "set the workers' AUTOFLOW_SECRET here"
            )
        self._secret_checked = True

    def _check_local(self, wf: Workflow) -> None:
        if "__main__" in wf.node_modules and not (self.runs_locally or self.ship_code):
            main = sorted(c.id for c in wf.calls.values() if c.module == "__main__")
            raise WorkflowError(
                f"workflow {wf.name!r} uses nodes defined in __main__ (a notebook or script): "
                f"{', '.join(main)}; workers on {self.url} cannot import them. Move them into a "
                "module and start `autoflow worker <module>`, run them in this process with "
                "af.Client(url, workers=N), or ship them by value with af.Client(url, ship_code=True) "
                "to workers started with --accept-code"
            )

    def _create(self, new: NewRun, seeds: Sequence[NodeSeed]) -> str:
        """Create the run and admit pending runs from here when a slot is free (in the same
        round trip or transaction), so that a new run starts without a hop through the
        workflow queue (on Redis its first messages go with its start): the same atomic
        admission a worker runs (the best pending runs first, never more than
        ``WORKFLOW_CONCURRENCY``). Runs that find no free slot wait;
        a worker admits them when one frees. If this process dies before the node messages
        are sent, the reaper re-sends them."""
        store = self.backend.store
        if self.backend.kind == "memory":  # immediate mode drains the workflow queue itself
            run_id = store.create_run(new, seeds)
            self.backend.dispatcher.nudge(new.priority)
            return run_id
        dispatcher = self.backend.dispatcher
        run_id, ready = store.create_and_admit(
            new, seeds, self.settings.workflow_concurrency, enqueue=dispatcher.queue_commands
        )
        if ready:
            dispatcher.send(ready)
        return run_id


def _check_label(label: str, value: object) -> None:
    """user_id, organization_id and idempotency keys: None or a short printable str."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InputError(f"{label} must be a str, got {type(value).__name__}")
    if not value or len(value) > 256 or not value.isprintable():
        raise InputError(f"{label} must be 1 to 256 printable characters, got {value[:40]!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{label} is not valid Unicode (a lone surrogate)") from None
