"""Workflows stored by id: validate a definition before saving it, read versions back,
turn a stored version into a :class:`~autoflow.define.workflow.Workflow` (parsed once
and cached), and decide what a name means (a stored id wins over a registered name).

The store keeps JSON text (``autoflow.store.catalog``); this module is the part that
knows definitions. The ``Client`` delegates to it.

Example::

    catalog = WorkflowCatalog(store, registry)
    saved = catalog.save(etl.to_dict(), workflow_id="etl", organization_id="acme")
    catalog.load(saved).graph        # the networkx DAG of that version
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from autoflow import codec
from autoflow.define.definition import ID_PATTERN
from autoflow.define.workflow import Workflow, WorkflowRegistry
from autoflow.errors import ConflictError, InputError, NotFoundError, WorkflowError
from autoflow.store.base import Store
from autoflow.store.catalog import ANY_VERSION, StoredWorkflow

__all__ = ["WorkflowCatalog"]

log = logging.getLogger("autoflow.catalog")
_CACHE = 256  # parsed versions kept per process
_MAX_VERSION = 2**31 - 1


class WorkflowCatalog:
    """Stored workflows of one store, resolved through one registry.

    Example::

        WorkflowCatalog(client.backend.store, client.registry).resolve("etl", "acme")
    """

    def __init__(self, store: Store, registry: WorkflowRegistry) -> None:
        self.store = store
        self.registry = registry
        self._lock = threading.Lock()
        self._parsed: OrderedDict[tuple[str | None, str, int], Workflow] = OrderedDict()

    def save(
        self,
        definition: Mapping[str, Any] | Workflow,
        *,
        workflow_id: str | None = None,
        organization_id: str | None = None,
        expected_version: int | None = None,
    ) -> StoredWorkflow:
        """Validate and store a new version (see ``Client.save_workflow``)."""
        data = definition.to_dict() if isinstance(definition, Workflow) else definition
        if not isinstance(data, Mapping):
            raise WorkflowError(f"a workflow definition is a JSON object, got {type(data).__name__}")
        wf = self.validated(data)
        workflow_id = wf.name if workflow_id is None else workflow_id
        if not isinstance(workflow_id, str) or not ID_PATTERN.match(workflow_id):
            raise WorkflowError(f"workflow id must match {ID_PATTERN.pattern}, got {workflow_id!r}")
        body = codec.dumps(codec.to_json_value(dict(data), where="the definition"))
        expected = ANY_VERSION if expected_version is None else expected_version
        version = self.store.save_workflow(organization_id, workflow_id, wf.name, body, expected_version=expected)
        if version is None:
            current = self.store.get_workflow(organization_id, workflow_id)
            have = f"version {current.version}" if current else "no version"
            raise ConflictError(f"workflow {workflow_id!r} has {have}, not the expected version {expected_version}")
        log.info("workflow %s saved as version %d", workflow_id, version)
        return self.get(workflow_id, version=version, organization_id=organization_id)

    def get(
        self, workflow_id: str, *, version: int | None = None, organization_id: str | None = None
    ) -> StoredWorkflow:
        """A stored version (default: the latest); NotFoundError if there is none."""
        if version is not None and (not isinstance(version, int) or not 1 <= version <= _MAX_VERSION):
            raise InputError(f"version must be a positive integer below 2**31, got {version!r}")
        found = self.store.get_workflow(organization_id, workflow_id, version)
        if found is None:
            which = f" version {version}" if version is not None else ""
            raise NotFoundError(f"no stored workflow {workflow_id!r}{which}")
        return found

    def find(self, workflow_id: str, organization_id: str | None) -> StoredWorkflow | None:
        """The latest version of ``workflow_id``, or None (also for a name that cannot be an id)."""
        if not ID_PATTERN.match(workflow_id):
            return None
        return self.store.get_workflow(organization_id, workflow_id)

    def resolve(self, name: str, organization_id: str | None) -> Workflow | StoredWorkflow:
        """The stored workflow of that id (it wins), else the registered workflow of that
        name; NotFoundError if neither exists."""
        stored = self.find(name, organization_id)
        if stored is not None:
            return stored
        found: Workflow = self.registry.workflow(name)
        return found

    def validated(self, data: Mapping[str, Any]) -> Workflow:
        """``Workflow.from_dict`` with every failure as a WorkflowError naming the fault
        (an unknown node type included: the definition is at fault, not a lookup)."""
        try:
            return Workflow.from_dict(data, self.registry)
        except NotFoundError as exc:
            raise WorkflowError(f"invalid workflow definition: {exc}") from None
        except WorkflowError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed shape
            raise WorkflowError(f"invalid workflow definition: {type(exc).__name__}: {exc}") from None

    def load(self, stored: StoredWorkflow) -> Workflow:
        """The :class:`Workflow` of a stored version (parsed once, cached)."""
        key = (stored.organization_id, stored.id, stored.version)
        with self._lock:
            wf = self._parsed.get(key)
            if wf is not None:
                self._parsed.move_to_end(key)
                return wf
        wf = self.validated(stored.definition)
        with self._lock:
            self._parsed[key] = wf
            while len(self._parsed) > _CACHE:
                self._parsed.popitem(last=False)
        return wf
