"""The catalog: workflow definitions stored by id (versioned, per organization) and run
queries with filters. Both stores implement it beside the :class:`~autoflow.store.base.Store`
protocol (mixins in ``catalog_sqlite.py`` and ``catalog_redis.py``).

Definitions are plain JSON text here: the store never parses or validates them (the
client does, with ``af.Workflow.from_dict``, before saving). Each save makes a new version;
old versions stay readable so that a run can say which version it ran.

Organizations: every workflow id lives inside one organization (``None`` is the default
namespace that Python callers use when they name none); two organizations may use the
same id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from autoflow.models import RunInfo, RunStatus

__all__ = ["ANY_VERSION", "Catalog", "RunQuery", "StoredWorkflow"]

#: ``expected_version`` of :meth:`Catalog.save_workflow` that accepts whatever is stored.
ANY_VERSION = -1


@dataclass(frozen=True)
class StoredWorkflow:
    """One version of a workflow definition stored by id.

    Example::

        saved = client.save_workflow(etl.to_dict(), workflow_id="etl")
        saved.id, saved.version        # ('etl', 1)
        saved.definition["nodes"]      # the JSON definition
    """

    id: str
    version: int
    organization_id: str | None
    name: str
    definition: dict[str, Any]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        """The API's view: id, version, organization, name, definition, creation time."""
        return {
            "id": self.id,
            "version": self.version,
            "organizationId": self.organization_id,
            "name": self.name,
            "definition": self.definition,
            "createdAt": self.created_at,
        }


@dataclass(frozen=True)
class RunQuery:
    """Filters of :meth:`Catalog.query_runs`; ``None`` means "any". ``before`` is a run id:
    only older runs are returned (the cursor of the next page)."""

    workflow: str | None = None
    status: RunStatus | None = None
    organization_id: str | None = None
    user_id: str | None = None
    trigger: str | None = None
    workflow_id: str | None = None
    before: str | None = None
    limit: int = 50

    def matches(self, info: RunInfo) -> bool:
        """True if ``info`` passes every filter (``before`` included)."""
        return (
            (self.workflow is None or info.workflow == self.workflow)
            and (self.status is None or info.status is self.status)
            and (self.organization_id is None or info.organization_id == self.organization_id)
            and (self.user_id is None or info.user_id == self.user_id)
            and (self.trigger is None or info.trigger == self.trigger)
            and (self.workflow_id is None or info.workflow_id == self.workflow_id)
            and (self.before is None or info.id < self.before)
        )


class Catalog(Protocol):
    """Workflows by id and run queries; implemented by both stores."""

    def save_workflow(
        self,
        organization_id: str | None,
        workflow_id: str,
        name: str,
        body: str,
        *,
        expected_version: int = ANY_VERSION,
    ) -> int | None:
        """Store ``body`` (JSON text) as the next version of ``workflow_id`` and return its
        number (1 for a new id). Atomic: with ``expected_version`` >= 0 the save happens only
        if the latest version is that number (0: the id must be new), else None is returned
        and nothing changes."""

    def get_workflow(
        self, organization_id: str | None, workflow_id: str, version: int | None = None
    ) -> StoredWorkflow | None:
        """The given version (default: the latest) of a stored workflow, or None."""

    def list_workflows(self, organization_id: str | None, limit: int = 100) -> list[StoredWorkflow]:
        """The latest version of each workflow of an organization, by id."""

    def query_runs(self, query: RunQuery) -> list[RunInfo]:
        """Runs passing every filter of ``query``, newest first, at most ``query.limit``
        (snapshots without per-node detail)."""
