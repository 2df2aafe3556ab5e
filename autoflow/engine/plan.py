"""From a definition's node specs to what the store keeps per run: the seeds."""

from __future__ import annotations

from collections.abc import Mapping

from autoflow.definition import NodeSpec
from autoflow.store.base import NodeSeed

__all__ = ["node_seeds"]


def node_seeds(specs: Mapping[str, NodeSpec]) -> list[NodeSeed]:
    """One seed per node, in definition order: parents, children, trigger rule, branch
    condition and priority."""
    children: dict[str, list[str]] = {node_id: [] for node_id in specs}
    for spec in specs.values():
        for parent in spec.parents:
            children[parent].append(spec.id)
    return [
        NodeSeed(
            id=spec.id,
            type=spec.type,
            parents=spec.parents,
            children=tuple(children[spec.id]),
            rule=spec.options.trigger,
            priority=spec.options.priority,
            when=spec.when,
        )
        for spec in specs.values()
    ]
