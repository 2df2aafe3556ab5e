"""The steps of a ``.map`` node: expand it into items, then gather their results.

A map node, once claimed, expands: its items become nodes of their own (``M[0]``, ``M[1]``,
...) that the store queues ``max_parallel`` at a time; when the last one is done, the map
node is claimed again and gathers their results, read in pages, as its output.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from autoflow import codec
from autoflow.config import Limits
from autoflow.context import LogBuffer, log_record
from autoflow.define.definition import NodeSpec
from autoflow.engine.settle import Settle, once
from autoflow.errors import InputError, OutputError
from autoflow.models import LogLevel
from autoflow.store.base import Claim, Progress, Store

__all__ = ["MapSteps", "item_index"]

#: Results of map items read per store call when a map gathers them.
_GATHER_PAGE = 1000


class MapSteps:
    """The map steps of :class:`~autoflow.engine.executor.Executor`, and what they need
    from it (its store, limits and the completion every node ends with)."""

    store: Store
    limits: Limits

    def _complete(
        self, run_id: str, node_id: str, token: str, output: str, logs: list[dict[str, Any]], next_token: str | None
    ) -> Progress:
        raise NotImplementedError

    def _expand(self, claim: Claim, spec: NodeSpec, token: str, items: Any, logs: LogBuffer) -> Settle:
        if not isinstance(items, list):
            raise InputError(
                f"node {spec.id!r}: .map needs a list for parameter {spec.map_over!r}, got {type(items).__name__}"
            )
        if len(items) > self.limits.max_map_items:
            raise InputError(
                f"node {spec.id!r}: .map over {len(items):,} items, more than the limit of "
                f"{self.limits.max_map_items:,} (AUTOFLOW_MAX_MAP_ITEMS)"
            )
        note = log_record(LogLevel.INFO, f"mapping over {len(items)} item(s)", spec.id)
        texts = [
            codec.dumps_checked(
                codec.to_json_value(item, where=f"item {i} of {spec.id!r}"),
                where=f"item {i} of {spec.id!r}",
                max_bytes=self.limits.max_value_bytes,
            )
            for i, item in enumerate(items)
        ]
        return once(
            "expanded", self.store.expand, claim.run_id, spec.id, token, texts, spec.max_parallel, [*logs.drain(), note]
        )

    def _gather(self, claim: Claim, token: str, count: int, logs: LogBuffer) -> Settle:
        """Every item of a map is done: its output is their results, read in pages."""
        parts: list[str] = []
        size = 2
        for first in range(0, count, _GATHER_PAGE):
            page = self.store.map_results(claim.run_id, claim.node_id, first, min(_GATHER_PAGE, count - first))
            size += sum(len(p) + 1 for p in page)
            if size > self.limits.max_value_bytes:
                raise OutputError(
                    f"the results of the {count:,} items of node {claim.node_id!r} are more than the limit of "
                    f"{self.limits.max_value_bytes:,} bytes (AUTOFLOW_MAX_VALUE_BYTES)"
                )
            parts += page
        done = log_record(LogLevel.INFO, f"gathered the results of {count} item(s)", claim.node_id, trusted=True)
        output = "[" + ",".join(parts) + "]"
        return Settle(
            "completed", partial(self._complete, claim.run_id, claim.node_id, token, output, [*logs.drain(), done])
        )


def item_index(node_id: str) -> int | None:
    """``3`` for the item node ``resize[3]`` of a map."""
    if node_id.endswith("]") and "[" in node_id:
        index = node_id[node_id.rindex("[") + 1 : -1]
        return int(index) if index.isdigit() else None
    return None
