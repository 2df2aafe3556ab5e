"""Redis store, the catalog: workflows by id with versions, and run queries.

A workflow's versions are one hash (``latest`` and one field per version) and each
organization has an index of its workflow ids; both carry the hash tag ``{_wf}`` so that
the save script touches one cluster slot. Runs are found through the history indexes the
store keeps (per organization, per workflow name, or all runs), newest first.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import redis

from autoflow import codec
from autoflow.models import RunInfo
from autoflow.store.catalog import ANY_VERSION, RunQuery, StoredWorkflow
from autoflow.store.redis_reads import RUN_KEYS, RedisReads, _guard, _s

__all__ = ["RedisCatalog"]

_PAGE = 200


class RedisCatalog:
    """The :class:`~autoflow.store.catalog.Catalog` of :class:`~autoflow.store.redis.RedisStore`."""

    r: redis.Redis
    url: str
    ns: str
    _save_wf: Any = None  # the save script, registered on first use

    def _keys(self, run_id: str) -> list[str]:
        raise NotImplementedError

    def _g(self, name: str) -> str:
        raise NotImplementedError

    def _wf(self, organization_id: str | None, workflow_id: str) -> str:
        return f"{self.ns}:{{_wf}}:def:{organization_id or ''}|{workflow_id}"

    def _wf_index(self, organization_id: str | None) -> str:
        return f"{self.ns}:{{_wf}}:idx:{organization_id or ''}"

    @_guard
    def save_workflow(
        self,
        organization_id: str | None,
        workflow_id: str,
        name: str,
        body: str,
        *,
        expected_version: int = ANY_VERSION,
    ) -> int | None:
        script = self._save_wf
        if script is None:
            text = resources.files("autoflow.store").joinpath("lua").joinpath("save_workflow.lua").read_text()
            script = self._save_wf = self.r.register_script(text)
        now = time.time()
        record = codec.dumps({"name": name, "body": body, "created_at": now})
        keys = [self._wf(organization_id, workflow_id), self._wf_index(organization_id)]
        version = int(script(keys=keys, args=[expected_version, record, repr(now), workflow_id]))
        return None if version < 0 else version

    @_guard
    def get_workflow(
        self, organization_id: str | None, workflow_id: str, version: int | None = None
    ) -> StoredWorkflow | None:
        key = self._wf(organization_id, workflow_id)
        if version is None:
            latest = self.r.hget(key, "latest")
            if latest is None:
                return None
            version = int(latest)
        raw = self.r.hget(key, str(version))
        return None if raw is None else _stored(organization_id, workflow_id, version, raw)

    @_guard
    def list_workflows(self, organization_id: str | None, limit: int = 100) -> list[StoredWorkflow]:
        ids = sorted(_s(i) for i in self.r.zrange(self._wf_index(organization_id), 0, -1))[:limit]
        pipe = self.r.pipeline(transaction=False)
        for workflow_id in ids:
            pipe.hget(self._wf(organization_id, workflow_id), "latest")
        latest = pipe.execute()
        for workflow_id, version in zip(ids, latest, strict=True):
            pipe.hget(self._wf(organization_id, workflow_id), str(version))
        bodies = pipe.execute() if ids else []
        return [
            _stored(organization_id, workflow_id, int(version), raw)
            for workflow_id, version, raw in zip(ids, latest, bodies, strict=True)
            if version is not None and raw is not None
        ]

    @_guard
    def query_runs(self, query: RunQuery) -> list[RunInfo]:
        if query.organization_id is not None:
            index = self._g(f"org:{query.organization_id}")
        elif query.workflow is not None:
            index = self._g(f"wf:{query.workflow}")
        else:
            index = self._g("runs")
        start = 0
        if query.before is not None:
            rank = self.r.zrevrank(index, query.before)
            start = 0 if rank is None else int(str(rank)) + 1
        found: list[RunInfo] = []
        while len(found) < query.limit:
            ids = [_s(i) for i in self.r.zrevrange(index, start, start + _PAGE - 1)]
            if not ids:
                break
            start += len(ids)
            pipe = self.r.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._keys(run_id)[RUN_KEYS.index("run")])
            gone = []
            for run_id, run in zip(ids, pipe.execute(), strict=True):
                if not run:  # expired or purged: drop it from the index too
                    gone.append(run_id)
                    continue
                info = RedisReads._run_info(run, {}, [])
                if query.matches(info):
                    found.append(info)
            if gone:
                self.r.zrem(index, *gone)
                start -= len(gone)
        return found[: max(0, query.limit)]


def _stored(organization_id: str | None, workflow_id: str, version: int, raw: Any) -> StoredWorkflow:
    record = codec.loads(raw)
    return StoredWorkflow(
        id=workflow_id,
        version=version,
        organization_id=organization_id or None,
        name=record["name"],
        definition=codec.loads(record["body"]),
        created_at=float(record["created_at"]),
    )
