"""Planning runs from definitions: the per-run seeds the store keeps, and retry timing.

Pure functions, except :func:`store_definitions` (the one write a definition needs
before its runs). The rules that decide what becomes ready or skipped once a node
finishes are the store's (``autoflow.store.rules``): both stores apply them atomically.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping

from autoflow import codec
from autoflow.define.definition import NodeSpec
from autoflow.define.node import NodeOptions
from autoflow.define.workflow import Workflow
from autoflow.store.base import NodeSeed, Store
from autoflow.templates import template_refs

__all__ = ["node_seeds", "retry_delay", "store_definitions", "workflow_seeds"]


def _item_parents(spec: NodeSpec) -> tuple[str, ...]:
    """The parents whose outputs the items of a map read: those of its other arguments.
    The list mapped over is not among them, so claiming an item stays O(1) however long
    the list."""
    fixed = {name: tpl for name, tpl in spec.args.items() if name != spec.map_over}
    return tuple(dict.fromkeys(target for kind, target in template_refs(fixed) if kind == "$ref"))


def workflow_seeds(wf: Workflow) -> tuple[NodeSeed, ...]:
    """The seeds of ``wf``'s runs: the same for every run of a definition, so planned once
    per definition (by its digest) rather than on every execute."""
    seeds = _SEEDS.get(wf.digest)
    if seeds is None:
        seeds = tuple(node_seeds(wf.specs))
        with _SEEDS_LOCK:
            _SEEDS[wf.digest] = seeds
            while len(_SEEDS) > 256:
                _SEEDS.pop(next(iter(_SEEDS)))
    return seeds


#: Seeds by definition digest (a digest names one definition, so entries never go stale).
_SEEDS: dict[str, tuple[NodeSeed, ...]] = {}
_SEEDS_LOCK = threading.Lock()


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
            item_parents=_item_parents(spec) if spec.map_over else None,
        )
        for spec in specs.values()
    ]


def retry_delay(options: NodeOptions, attempt: int, rand: Callable[[], float] = random.random) -> float | None:
    """Seconds before the next attempt after attempt ``attempt`` failed, or None if the
    node has no attempts left."""
    if attempt >= options.max_attempts:
        return None
    return options.backoff.delay(attempt, rand)


def store_definitions(store: Store, wf: Workflow) -> list[str]:
    """Store ``wf``'s definition and those of its sub-workflows (by digest: storing one
    again changes nothing); returns their digests."""
    workflows = (*wf.subworkflows().values(), wf)
    for each in workflows:
        store.put_definition(each.digest, codec.dumps(each.to_dict()))
    return [each.digest for each in workflows]
