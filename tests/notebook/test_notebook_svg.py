"""The DAG as SVG: valid XML, every node, colours by state, edge kinds, big graphs."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

import autoflow as af
from autoflow.draw import COMPACT_AT, EDGE_STYLES, NODE_COLORS, DagLayout, dag_svg
from autoflow.models import NodeStatus
from tests.notebook import flows

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on invalid XML
    assert root.tag == f"{SVG}svg"
    return root


def nodes_of(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-id"): g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("af-node ")}


def test_every_node_and_edge_is_drawn_with_label_type_and_options() -> None:
    graph = flows.pipeline.graph
    root = parse(dag_svg(graph, title="nb_pipeline"))
    drawn = nodes_of(root)
    assert set(drawn) == set(graph.nodes) == {"nb_source", "nb_square", "nb_sum"}
    edges = [p for p in root.iter(f"{SVG}path") if "af-edge" in p.get("class", "")]
    assert len(edges) == graph.number_of_edges() == 2
    square = drawn["nb_square"]
    texts = [t.text for t in square.iter(f"{SVG}text")]
    assert texts[0] == "nb_square"
    assert "retries=3" in texts[1] and "timeout=30s" in texts[1]  # non-default options
    tooltip = square.find(f"{SVG}title")
    assert tooltip is not None and "tests.notebook.flows:nb_square" in (tooltip.text or "")
    assert "xs ← nb_source" in (tooltip.text or "")  # the input edge
    assert root.find(f"{SVG}text").text == "nb_pipeline"  # type: ignore[union-attr]


def test_left_to_right_layers() -> None:
    layout = DagLayout(flows.pipeline.graph)
    xs = [layout.pos[n][0] for n in ("nb_source", "nb_square", "nb_sum")]
    assert xs == sorted(xs) and len(set(xs)) == 3
    wide = DagLayout(flows.wide.graph)
    assert len(wide.columns) > 3  # the 118-wide middle layer is wrapped, not one tall column
    assert max(len(c) for c in wide.columns) <= 30


def test_states_colour_the_nodes(client: af.Client) -> None:
    run = client.execute(flows.failing, n=2)
    info = run.wait(timeout=30)
    states = {n.id: n.status for n in info.nodes.values()}
    assert states == {"nb_source": NodeStatus.COMPLETED, "nb_boom": NodeStatus.FAILED}
    root = parse(dag_svg(flows.failing.graph, states))
    drawn = nodes_of(root)
    for node_id, state in states.items():
        group = drawn[node_id]
        assert group.get("data-state") == state.value
        rect = group.find(f"{SVG}rect")
        assert rect is not None
        assert (rect.get("fill"), rect.get("stroke")) == NODE_COLORS[state]
    assert NODE_COLORS[NodeStatus.FAILED][0] == "#ffe3e3"
    legend = [t.text for g in root.iter(f"{SVG}g") if g.get("class") == "af-legend" for t in g.iter(f"{SVG}text")]
    assert legend == ["completed", "failed"]


def test_nodes_missing_from_states_are_pending_and_strings_are_accepted() -> None:
    root = parse(dag_svg(flows.pipeline.graph, {"nb_source": "running"}))
    drawn = nodes_of(root)
    assert drawn["nb_source"].get("data-state") == "running"
    assert drawn["nb_sum"].get("data-state") == "pending"


@pytest.mark.parametrize("state", list(NodeStatus))
def test_every_node_state_has_a_colour_and_a_legend_entry(state: NodeStatus) -> None:
    root = parse(dag_svg(flows.pipeline.graph, {"nb_source": state.value}))
    rect = nodes_of(root)["nb_source"].find(f"{SVG}rect")
    assert rect is not None
    assert (rect.get("fill"), rect.get("stroke")) == NODE_COLORS[state]
    legend = [t.text for g in root.iter(f"{SVG}g") if g.get("class") == "af-legend" for t in g.iter(f"{SVG}text")]
    assert state.value in legend


def test_without_states_there_is_no_legend_and_boxes_are_plain() -> None:
    svg = dag_svg(flows.pipeline.graph)
    root = parse(svg)
    assert all(g.get("data-state") == "none" for g in nodes_of(root).values())
    assert "af-legend" not in svg


def test_edge_kinds_are_styled() -> None:
    g = nx.DiGraph()
    for n in ("check", "yes", "no", "handler"):
        g.add_node(n, type=f"m:{n}", label=n, options={})
    g.add_edge("check", "yes", input="x", kind="branch")
    g.add_edge("check", "no", input="x")
    g.add_edge("yes", "handler", input="err", kind="error")
    root = parse(dag_svg(g))
    paths = {p.find(f"{SVG}title").text: p for p in root.iter(f"{SVG}path") if p.find(f"{SVG}title") is not None}  # type: ignore[union-attr]
    branch = paths["check → yes (x) [branch]"]
    plain = paths["check → no (x)"]
    error = paths["yes → handler (err) [error]"]
    assert (branch.get("stroke"), branch.get("stroke-dasharray")) == EDGE_STYLES["branch"]
    assert (error.get("stroke"), error.get("stroke-dasharray")) == EDGE_STYLES["error"]
    assert plain.get("stroke") == EDGE_STYLES["data"][0] and plain.get("stroke-dasharray") is None
    assert "af-edge-branch" in (branch.get("class") or "")


def test_text_is_escaped() -> None:
    g = nx.DiGraph()
    g.add_node('a<&>"', type="m:<x>", label="<b>", options={"note": "</svg>"})
    root = parse(dag_svg(g, title="<script>alert(1)</script>"))
    assert nodes_of(root).keys() == {'a<&>"'}


def test_empty_and_cyclic_graphs_still_give_valid_svg() -> None:
    parse(dag_svg(nx.DiGraph(), title="nothing"))
    cyclic = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a")])
    root = parse(dag_svg(cyclic))
    assert set(nodes_of(root)) == {"a", "b", "c"}


def test_output_is_deterministic() -> None:
    assert dag_svg(flows.wide.graph) == dag_svg(flows.wide.graph)


@pytest.mark.parametrize("size", [COMPACT_AT, 120, 600])
def test_big_graphs_are_compact_valid_and_fast(size: int) -> None:
    graph = nx.gn_graph(size, seed=7).reverse()  # a random tree with wide layers
    nx.set_node_attributes(graph, "m:step", "type")
    states = {str(n): NodeStatus.RUNNING for n in graph}
    states.update({str(n): NodeStatus.COMPLETED for n in list(graph)[: size // 2]})
    started = time.perf_counter()
    svg = dag_svg(graph, states)
    took = time.perf_counter() - started
    root = parse(svg)
    assert len(nodes_of(root)) == size
    layout = DagLayout(graph)
    assert layout.compact is (size > COMPACT_AT)
    assert max(len(c) for c in layout.columns) <= (30 if layout.compact else size)
    assert took < 2.0, f"{size} nodes took {took:.3f} s"


def test_long_edges_go_around_boxes() -> None:
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")])
    layout = DagLayout(g)
    (waypoint,) = layout._via[("a", "c")]
    assert layout.pos[waypoint][0] == layout.pos["b"][0]  # in b's column ...
    assert layout.pos[waypoint][1] != layout.pos["b"][1]  # ... in a free slot
    root = parse(layout.render())
    assert set(nodes_of(root)) == {"a", "b", "c"}  # waypoints are not drawn
    long_edge = next(p for p in root.iter(f"{SVG}path") if "a → c" in (p.findtext(f"{SVG}title") or ""))
    assert " L" in (long_edge.get("d") or "")
