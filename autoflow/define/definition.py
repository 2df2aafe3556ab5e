"""The JSON definition format of workflows and the argument templates inside it.

A node's arguments are stored as JSON templates (``autoflow.templates``) in which
references appear as markers. In the definition format (``to_dict``), ``$ref`` markers
travel as ``edges`` and the rest of each template as the node's ``config``. Pure functions only: no functions resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from autoflow.codec import dumps_checked, to_json_value
from autoflow.config import Limits
from autoflow.define.node import ID_PATTERN, NodeOptions
from autoflow.errors import OutputError, WorkflowError
from autoflow.expressions import EXPRESSION_KINDS
from autoflow.templates import marker, template_refs

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "FORMAT_VERSION",
    "ID_PATTERN",
    "SUBWORKFLOW_TYPE",
    "NodeSpec",
    "build_graph",
    "definition_edges",
    "expression_sources",
    "find_cycle",
    "node_children",
    "parse_definition",
    "sorted_json",
]

FORMAT_VERSION = 1
#: The node type of a sub-workflow call (its spec names the workflow).
SUBWORKFLOW_TYPE = "autoflow.workflow"


@dataclass(frozen=True)
class NodeSpec:
    """A node of a definition, as the engine needs it: id, registry type, argument
    templates and options. Functions are not resolved here."""

    id: str
    type: str
    args: dict[str, Any]
    options: NodeOptions
    when: tuple[str, bool] | None = None  # run only if this node returned this bool
    map_over: str | None = None  # .map: the parameter that receives each item
    max_parallel: int | None = None  # .map: how many items run at once
    workflow: tuple[str, str] | None = None  # sub-workflow: (name, digest)

    @cached_property
    def parents(self) -> tuple[str, ...]:
        """The nodes this one reads (its ``when=`` condition first), found once: a spec is
        immutable and runs are planned from it on every execute."""
        seen: dict[str, None] = {}
        if self.when:
            seen[self.when[0]] = None
        for kind, target in template_refs(self.args):
            if kind == "$ref":
                seen[target] = None
        return tuple(seen)

    def extras(self) -> dict[str, Any]:
        """The control-flow fields of this node in the definition format."""
        out: dict[str, Any] = {}
        if self.when:
            out["when"] = {"node": self.when[0], "value": self.when[1]}
        if self.map_over:
            out["map"] = {"over": self.map_over, "max_parallel": self.max_parallel}
        if self.workflow:
            out["workflow"] = {"name": self.workflow[0], "digest": self.workflow[1]}
        return out


def _extras(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Parse the control-flow fields of a node of a definition."""
    out: dict[str, Any] = {}
    when = raw.get("when")
    if when is not None:
        if not (
            isinstance(when, Mapping) and isinstance(when.get("node"), str) and isinstance(when.get("value"), bool)
        ):
            raise WorkflowError(f'{where}: \'when\' must be {{"node": id, "value": true|false}}')
        out["when"] = (when["node"], when["value"])
    mapping = raw.get("map")
    if mapping is not None:
        over, parallel = (mapping.get("over"), mapping.get("max_parallel")) if isinstance(mapping, Mapping) else (0, 0)
        good_parallel = parallel is None or (
            isinstance(parallel, int) and not isinstance(parallel, bool) and parallel >= 1
        )
        if not isinstance(over, str) or not good_parallel:
            raise WorkflowError(f'{where}: \'map\' must be {{"over": param, "max_parallel": int|null}}')
        out["map_over"], out["max_parallel"] = over, parallel
    sub = raw.get("workflow")
    if sub is not None:
        if not (isinstance(sub, Mapping) and isinstance(sub.get("name"), str) and isinstance(sub.get("digest"), str)):
            raise WorkflowError(f'{where}: \'workflow\' must be {{"name": ..., "digest": ...}}')
        out["workflow"] = (sub["name"], sub["digest"])
    return out


def parse_definition(data: Mapping[str, Any], limits: Limits | None = None) -> tuple[dict[str, NodeSpec], Any]:
    """Parse the ``nodes``/``edges``/``output`` of a definition into node specs.

    Edges become ``$ref`` markers in the target's argument templates. Raises
    :class:`WorkflowError` naming the node or edge at fault (also for sizes past
    ``limits``); does not check cycles.
    """
    limits = limits or Limits()
    if not isinstance(data, Mapping):
        raise WorkflowError(f"a workflow definition must be a JSON object, got {type(data).__name__}")
    name = data.get("name", "?")
    nodes_in = data.get("nodes")
    if not isinstance(nodes_in, list) or not nodes_in:
        raise WorkflowError(f"workflow {name!r}: 'nodes' must be a non-empty list")
    if len(nodes_in) > limits.max_nodes:
        raise WorkflowError(
            f"workflow {name!r} has {len(nodes_in):,} nodes, more than the limit of {limits.max_nodes:,} "
            "(AUTOFLOW_MAX_NODES)"
        )
    edges_in = data.get("edges") or []
    if not isinstance(edges_in, list):
        raise WorkflowError(f"workflow {name!r}: 'edges' must be a list")
    specs: dict[str, NodeSpec] = {}
    for i, raw in enumerate(nodes_in):
        where = f"workflow {name!r}, nodes[{i}]"
        if not isinstance(raw, Mapping):
            raise WorkflowError(f"{where}: each node must be an object")
        node_id, node_type = raw.get("id"), raw.get("type")
        if not isinstance(node_id, str) or not ID_PATTERN.match(node_id):
            raise WorkflowError(f"{where}: 'id' must match {ID_PATTERN.pattern}, got {node_id!r}")
        if node_id in specs:
            raise WorkflowError(f"{where}: duplicate node id {node_id!r}")
        if not isinstance(node_type, str) or not node_type:
            raise WorkflowError(f"{where} ({node_id}): 'type' must be a non-empty string")
        config = raw.get("config") or {}
        if not isinstance(config, Mapping):
            raise WorkflowError(f"{where} ({node_id}): 'config' must be an object")
        try:  # a copy that is plain JSON of bounded depth
            config = to_json_value(dict(config), where=f"{where} ({node_id}) config", max_depth=limits.max_depth)
            dumps_checked(config, where=f"{where} ({node_id}) config")
        except OutputError as exc:
            raise WorkflowError(str(exc)) from None
        options_in = raw.get("options") or {}
        if not isinstance(options_in, Mapping):
            raise WorkflowError(f"{where} ({node_id}): 'options' must be an object")
        options = NodeOptions.from_dict(options_in, where=f"node {node_id!r} options")
        specs[node_id] = NodeSpec(node_id, node_type, config, options, **_extras(raw, f"{where} ({node_id})"))
    for i, edge in enumerate(edges_in):
        where = f"workflow {name!r}, edges[{i}]"
        if not isinstance(edge, Mapping):
            raise WorkflowError(f"{where}: each edge must be an object")
        source, target, param = edge.get("source"), edge.get("target"), edge.get("input")
        if param == "$when" or edge.get("kind") == "expression":
            continue  # drawn only: the node's "when" / its config's expressions hold these
        if not isinstance(source, str) or source not in specs:
            raise WorkflowError(f"{where}: unknown source node {source!r}")
        if not isinstance(target, str) or target not in specs:
            raise WorkflowError(f"{where}: unknown target node {target!r}")
        if not isinstance(param, str) or not param:
            raise WorkflowError(f"{where}: 'input' must name a parameter of {target!r}")
        args = specs[target].args
        ref = {"$ref": source}
        if "index" in edge:
            index = edge["index"]
            if isinstance(index, bool) or (isinstance(index, int) and not 0 <= index < limits.max_nodes):
                raise WorkflowError(f"{where}: index {index!r} must be an int from 0 to {limits.max_nodes - 1}")
            container = args.setdefault(param, [] if isinstance(index, int) else {})
            if isinstance(index, int) and isinstance(container, list):
                container.extend([None] * (index + 1 - len(container)))
                container[index] = ref
            elif isinstance(index, str) and isinstance(container, dict) and len(index) <= 256:
                container[index] = ref
            else:
                raise WorkflowError(f"{where}: index {index!r} does not fit argument {param!r}")
        else:
            args[param] = ref
    return specs, data.get("output")


def definition_edges(
    specs: Mapping[str, NodeSpec],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Split templates into edges (node refs) and configs (constants, $input markers and
    expressions). Nodes read by expressions also get an edge of kind ``expression``
    (drawn; ``parse_definition`` skips it, the config holds the expression)."""
    edges: list[dict[str, Any]] = []
    configs: dict[str, dict[str, Any]] = {}
    for spec in specs.values():
        config: dict[str, Any] = {}
        if spec.when:
            edges.append({"source": spec.when[0], "target": spec.id, "input": "$when", "kind": "branch"})
        for param, tpl in spec.args.items():
            found = marker(tpl)
            if found and found[0] == "$ref":
                edges.append({"source": found[1], "target": spec.id, "input": param})
                continue
            if isinstance(tpl, list):
                items = []
                for i, item in enumerate(tpl):
                    m = marker(item)
                    if m and m[0] == "$ref":
                        edges.append({"source": m[1], "target": spec.id, "input": param, "index": i})
                        item = None
                    items.append(item)
                tpl = items
            elif isinstance(tpl, dict) and not found:
                kept = {}
                for key, item in tpl.items():
                    m = marker(item)
                    if m and m[0] == "$ref":
                        edges.append({"source": m[1], "target": spec.id, "input": param, "index": key})
                        continue
                    kept[key] = item
                tpl = kept
            config[param] = tpl
            for source in dict.fromkeys(expression_sources(tpl)):
                edges.append({"source": source, "target": spec.id, "input": param, "kind": "expression"})
        configs[spec.id] = config
    return edges, configs


def expression_sources(template: Any) -> list[str]:
    """Nodes read by the expressions (``$expr``, ``$template``) inside a template."""
    found = marker(template)
    if found:
        return [t for k, t in template_refs(template) if k == "$ref"] if found[0] in EXPRESSION_KINDS else []
    children = template.values() if isinstance(template, dict) else template if isinstance(template, list) else ()
    return [source for child in children for source in expression_sources(child)]


def node_children(specs: Mapping[str, NodeSpec]) -> dict[str, list[str]]:
    """Each node's children among the edges of :func:`definition_edges`, once each (the
    vertices and edges of the graph, without networkx, which workers need not import)."""
    children: dict[str, dict[str, None]] = {node_id: {} for node_id in specs}
    for edge in definition_edges(specs)[0]:
        if edge["source"] in specs and edge["target"] in specs:
            children[edge["source"]][edge["target"]] = None
    return {node_id: list(targets) for node_id, targets in children.items()}


def find_cycle(specs: Mapping[str, NodeSpec]) -> list[str] | None:
    """The nodes of a cycle among the edges of :func:`definition_edges`, in order, or None
    for a DAG."""
    children = node_children(specs)
    done: set[str] = set()
    for root in specs:
        if root in done:
            continue
        path, on_path = [root], {root}
        todo = [iter(children[root])]
        while todo:
            child = next(todo[-1], None)
            if child is None:  # every child of the node on top is explored
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                todo.pop()
                continue
            if child in on_path:
                return path[path.index(child) :]
            if child not in done:
                path.append(child)
                on_path.add(child)
                todo.append(iter(children[child]))
    return None


def build_graph(name: str, specs: Mapping[str, NodeSpec], labels: Mapping[str, str] | None = None) -> nx.DiGraph:
    """The DAG of node specs: one vertex per node (``type``, ``label``, ``options`` and its
    control-flow fields); edges carry the parameter they feed and a ``kind``: ``data``,
    ``branch`` (a when= condition) or ``error`` (into an error handler)."""
    import networkx as nx  # here: drawing and graph queries need it, running nodes does not

    graph = nx.DiGraph(name=name)
    for spec in specs.values():
        label = (labels or {}).get(spec.id) or (spec.workflow[0] if spec.workflow else spec.id)
        graph.add_node(spec.id, type=spec.type, label=label, options=spec.options.to_dict(), **spec.extras())
    edges, _ = definition_edges(specs)
    for edge in edges:
        source, target = edge["source"], edge["target"]
        if source not in specs or target not in specs:
            continue
        kind = edge.get("kind", "data")
        if kind == "data" and specs[target].options.trigger in ("one_failed", "all_failed"):
            kind = "error"
        if not graph.has_edge(source, target) or kind == "branch":
            graph.add_edge(source, target, input=edge["input"], kind=kind)
    return graph


def sorted_json(value: Any) -> Any:
    """A copy of JSON data with every object's keys sorted (for stable digests)."""
    if isinstance(value, dict):
        return {k: sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_json(v) for v in value]
    return value
