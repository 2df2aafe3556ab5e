"""Draw a workflow's DAG as plain SVG text: no graphviz binary, no JavaScript.

Nodes are laid out in columns, left to right, by ``networkx.topological_generations``;
inside a column they are ordered by the mean position of their parents (one barycentre
sweep), which keeps most edges short and uncrossed. Up to :data:`COMPACT_AT` nodes each
box shows the node id and, below it, its type and non-default options; bigger graphs
switch to small one-line boxes and wrap tall columns, so the picture stays valid and
bounded whatever the size. Every box carries a ``<title>`` tooltip with the full details.

Example::

    from autoflow.draw import dag_svg

    svg = dag_svg(etl.graph, title="etl")                          # structure only
    svg = dag_svg(etl.graph, {n.id: n.status for n in info.nodes.values()})  # coloured
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autoflow.models import NodeStatus

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "COMPACT_AT",
    "EDGE_STYLES",
    "NODE_COLORS",
    "DagLayout",
    "dag_svg",
    "state_color",
]

#: Graphs with more nodes than this are drawn compact (one-line boxes, wrapped columns).
COMPACT_AT = 50

#: Fill and stroke of a node box per state (``None``: no state known, plain structure).
NODE_COLORS: dict[NodeStatus | None, tuple[str, str]] = {
    None: ("#ffffff", "#495057"),
    NodeStatus.PENDING: ("#f1f3f5", "#adb5bd"),
    NodeStatus.QUEUED: ("#e7f5ff", "#74c0fc"),
    NodeStatus.RUNNING: ("#d0ebff", "#1c7ed6"),
    NodeStatus.RETRYING: ("#fff3bf", "#f08c00"),
    NodeStatus.WAITING: ("#f3f0ff", "#845ef7"),
    NodeStatus.COMPLETED: ("#d3f9d8", "#2f9e44"),
    NodeStatus.FAILED: ("#ffe3e3", "#e03131"),
    NodeStatus.SKIPPED: ("#f8f9fa", "#ced4da"),
    NodeStatus.CANCELLED: ("#e9ecef", "#868e96"),
}

#: Stroke colour and dash pattern of edges by their ``kind`` attribute (default: plain).
EDGE_STYLES: dict[str, tuple[str, str]] = {
    "data": ("#868e96", ""),
    "branch": ("#7048e8", "6 4"),
    "error": ("#e03131", "3 3"),
}

_FONT = "-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif"
_MARGIN = 12


@dataclass(frozen=True)
class _Metrics:
    box_h: int
    gap_x: int
    gap_y: int
    font: int
    small: int
    min_w: int
    max_w: int
    two_lines: bool
    max_rows: int  # taller columns are wrapped into several


_NORMAL = _Metrics(
    box_h=44, gap_x=56, gap_y=14, font=12, small=10, min_w=110, max_w=230, two_lines=True, max_rows=1_000_000
)
_COMPACT = _Metrics(box_h=20, gap_x=40, gap_y=5, font=10, small=9, min_w=70, max_w=130, two_lines=False, max_rows=30)


def state_color(state: NodeStatus | str | None) -> tuple[str, str]:
    """(fill, stroke) of a node in ``state`` (``None``: no state)."""
    return NODE_COLORS[None if state is None else NodeStatus(state)]


def _text_width(text: str, size: int) -> float:
    return len(text) * size * 0.6  # average advance of a sans-serif glyph


def _fit(text: str, width: float, size: int) -> str:
    """Cut ``text`` with an ellipsis so that it fits ``width`` pixels."""
    chars = max(1, int(width / (size * 0.6)))
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "…"


def _short_type(node_type: str) -> str:
    return node_type.rsplit(":", 1)[-1] if node_type else ""


def _options_text(options: Mapping[str, Any]) -> str:
    parts = []
    for key, value in options.items():
        if key == "backoff":
            continue  # in the tooltip; too long for the box
        if key == "timeout" and isinstance(value, (int, float)):
            parts.append(f"timeout={value:g}s")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _layers(graph: nx.DiGraph) -> list[list[Hashable]]:
    import networkx as nx  # imported where a graph is drawn, not by every worker

    try:
        return [list(gen) for gen in nx.topological_generations(graph)]
    except nx.NetworkXUnfeasible:
        # A cycle (a definition that failed validation): layer by insertion order,
        # ignoring the edges that point backwards, so the picture still shows it.
        order = {n: i for i, n in enumerate(graph.nodes)}
        depth: dict[Hashable, int] = {}
        for n in graph.nodes:
            back = [depth[p] for p in graph.predecessors(n) if order[p] < order[n]]
            depth[n] = 1 + max(back) if back else 0
        out: list[list[Hashable]] = [[] for _ in range(max(depth.values()) + 1)]
        for n, d in depth.items():
            out[d].append(n)
        return out


def _order(graph: nx.DiGraph, layers: list[list[Hashable]]) -> list[list[Hashable]]:
    """One barycentre sweep: sort each layer by the mean position of its parents."""
    pos: dict[Hashable, float] = {}
    ordered: list[list[Hashable]] = []
    for layer in layers:
        size = len(layer)

        def key(item: tuple[int, Hashable], size: int = size) -> float:
            index, n = item
            placed = [pos[p] for p in graph.predecessors(n) if p in pos]
            return sum(placed) / len(placed) if placed else (index + 0.5) / size

        layer_sorted = [n for _, n in sorted(enumerate(layer), key=key)]
        for i, n in enumerate(layer_sorted):
            pos[n] = (i + 0.5) / size
        ordered.append(layer_sorted)
    return ordered


def _curve(sx: float, sy: float, tx: float, ty: float) -> str:
    dx = max((tx - sx) / 2, 10)
    return f" C{sx + dx:.1f},{sy:.1f} {tx - dx:.1f},{ty:.1f} {tx},{ty:.1f}"


def _with_waypoints(
    graph: nx.DiGraph, layers: list[list[Hashable]]
) -> tuple[nx.DiGraph, list[list[Hashable]], dict[tuple[Hashable, Hashable], list[Hashable]]]:
    """Give every edge that skips layers an invisible waypoint in each layer it crosses
    (Sugiyama's dummy nodes), so that it runs through a free slot instead of a box."""
    import networkx as nx  # imported where a graph is drawn, not by every worker

    depth = {n: i for i, layer in enumerate(layers) for n in layer}
    layers = [list(layer) for layer in layers]
    augmented = nx.DiGraph(graph)
    via: dict[tuple[Hashable, Hashable], list[Hashable]] = {}
    for u, v in graph.edges:
        if depth[v] - depth[u] < 2:
            continue
        points: list[Hashable] = []
        for i in range(depth[u] + 1, depth[v]):
            points.append(("\0via", u, v, i))
            layers[i].append(points[-1])
        augmented.remove_edge(u, v)
        augmented.add_edges_from(itertools.pairwise([u, *points, v]))
        via[(u, v)] = points
    return augmented, layers, via


class DagLayout:
    """The geometry of one graph, computed once; :meth:`render` colours it by state.

    A live panel keeps one layout and re-renders only the colours, so a redraw of a
    several-hundred-node graph costs a string join, not a new layout.

    Example::

        layout = DagLayout(wf.graph, title=wf.name)
        layout.render()                              # structure
        layout.render({"fetch": NodeStatus.RUNNING})  # coloured
    """

    def __init__(self, graph: nx.DiGraph, *, title: str = "") -> None:
        self.graph = graph
        self.title = title
        self.compact = graph.number_of_nodes() > COMPACT_AT
        m = self.metrics = _COMPACT if self.compact else _NORMAL
        self._lines: dict[Hashable, tuple[str, str, str]] = {}  # id -> (line1, line2, tooltip)
        longest = 0.0
        for n, attrs in graph.nodes(data=True):
            label = str(attrs.get("label") or n)
            node_type = str(attrs.get("type") or "")
            options = attrs.get("options") or {}
            short = _short_type(node_type)
            shown_type = short if short and short != str(n) else ""  # don't repeat the id
            line2 = " · ".join(p for p in (shown_type, _options_text(options)) if p)
            tip = [str(n)]
            if label != str(n):
                tip.append(f"node: {label}")
            if node_type:
                tip.append(f"type: {node_type}")
            if options:
                tip.append(f"options: {json.dumps(options, sort_keys=True, default=str)}")
            inputs = [f"{d.get('input', '?')} ← {u}" for u, _, d in graph.in_edges(n, data=True)]
            if inputs:
                tip.append("inputs: " + ", ".join(inputs))
            self._lines[n] = (str(n), line2, "\n".join(tip))
            longest = max(longest, _text_width(str(n), m.font))
            if m.two_lines:
                longest = max(longest, _text_width(line2, m.small))
        self.box_w = int(min(m.max_w, max(m.min_w, longest + 16)))

        layers = _layers(graph)
        order_graph = graph
        self._via: dict[tuple[Hashable, Hashable], list[Hashable]] = {}
        if not self.compact:
            order_graph, layers, self._via = _with_waypoints(graph, layers)
        columns: list[list[Hashable]] = []
        for layer in _order(order_graph, layers):
            for start in range(0, len(layer), m.max_rows):
                columns.append(layer[start : start + m.max_rows])
        self.columns = columns
        rows = max((len(c) for c in columns), default=0)
        top = _MARGIN + (24 if title else 0)
        step_y = m.box_h + m.gap_y
        self.pos: dict[Hashable, tuple[int, int]] = {}
        for ci, column in enumerate(columns):
            x = _MARGIN + ci * (self.box_w + m.gap_x)
            offset = (rows - len(column)) * step_y / 2  # centre short columns
            for ri, n in enumerate(column):
                self.pos[n] = (x, int(top + offset + ri * step_y))
        self.width = max(2 * _MARGIN + len(columns) * (self.box_w + m.gap_x) - m.gap_x, 220)
        self.body_height = top + max(rows * step_y - m.gap_y, 0)
        digest = hashlib.sha1(
            repr((sorted(map(str, graph.nodes)), sorted(map(str, graph.edges)))).encode()
        ).hexdigest()[:8]
        self._prefix = f"af{digest}"  # marker ids unique per graph, stable per graph
        self._edges = self._draw_edges()

    # -- drawing ---------------------------------------------------------------------------
    def _draw_edges(self) -> str:
        m, w, h = self.metrics, self.box_w, self.metrics.box_h
        parts = []
        for u, v, data in self.graph.edges(data=True):
            kind = str(data.get("kind") or "data")
            color, dash = EDGE_STYLES.get(kind, EDGE_STYLES["data"])
            marker = kind if kind in EDGE_STYLES else "data"
            (x1, y1), (x2, y2) = self.pos[u], self.pos[v]
            sx, sy, tx, ty = x1 + w, y1 + h / 2, x2, y2 + h / 2
            if tx <= sx:  # same or earlier column (wrapped layer, or a cycle): loop around
                bend = m.gap_x + abs(ty - sy) / 4
                d = f"M{sx},{sy:.1f} C{sx + bend},{sy:.1f} {tx - bend},{ty:.1f} {tx},{ty:.1f}"
            else:
                d = f"M{sx},{sy:.1f}"
                for point in self._via.get((u, v), ()):  # long edges pass through free slots
                    px, py = self.pos[point]
                    d += _curve(sx, sy, px, py + h / 2) + f" L{px + w},{py + h / 2:.1f}"
                    sx, sy = px + w, py + h / 2
                d += _curve(sx, sy, tx, ty)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            tip = f"{u} → {v}" + (f" ({data['input']})" if data.get("input") else "")
            if kind != "data":
                tip += f" [{kind}]"
            parts.append(
                f'<path class="af-edge af-edge-{_esc(kind)}" d="{d}" fill="none" stroke="{color}" '
                f'stroke-width="1.4"{dash_attr} marker-end="url(#{self._prefix}-{marker})">'
                f"<title>{_esc(tip)}</title></path>"
            )
        return "".join(parts)

    def _defs(self) -> str:
        markers = "".join(
            f'<marker id="{self._prefix}-{kind}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
            for kind, (color, _) in EDGE_STYLES.items()
        )
        return f"<defs>{markers}</defs>"

    def _node(self, n: Hashable, state: NodeStatus | None) -> str:
        m = self.metrics
        x, y = self.pos[n]
        line1, line2, tip = self._lines[n]
        fill, stroke = NODE_COLORS[state]
        name = state.value if state is not None else "none"
        width = 2.4 if state in (NodeStatus.RUNNING, NodeStatus.RETRYING, NodeStatus.FAILED) else 1.2
        dash = ' stroke-dasharray="4 3"' if state is NodeStatus.SKIPPED else ""
        if state is not None:
            tip = f"{tip}\nstate: {name}"
        inner = self.box_w - 12
        cx = x + self.box_w / 2
        if m.two_lines and line2:
            text = (
                f'<text x="{cx:.1f}" y="{y + 18}" text-anchor="middle" font-size="{m.font}" '
                f'font-weight="600" fill="#212529">{_esc(_fit(line1, inner, m.font))}</text>'
                f'<text x="{cx:.1f}" y="{y + 33}" text-anchor="middle" font-size="{m.small}" '
                f'fill="#495057">{_esc(_fit(line2, inner, m.small))}</text>'
            )
        else:
            baseline = y + m.box_h / 2 + m.font * 0.35
            text = (
                f'<text x="{cx:.1f}" y="{baseline:.1f}" text-anchor="middle" font-size="{m.font}" '
                f'font-weight="600" fill="#212529">{_esc(_fit(line1, inner, m.font))}</text>'
            )
        return (
            f'<g class="af-node af-state-{name}" data-id="{_esc(n)}" data-state="{name}">'
            f"<title>{_esc(tip)}</title>"
            f'<rect x="{x}" y="{y}" width="{self.box_w}" height="{m.box_h}" rx="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>{text}</g>'
        )

    def _legend(self, used: list[NodeStatus], y: int) -> str:
        parts, x = [], _MARGIN
        for state in used:
            fill, stroke = NODE_COLORS[state]
            parts.append(
                f'<rect x="{x}" y="{y}" width="12" height="12" rx="3" fill="{fill}" stroke="{stroke}"/>'
                f'<text x="{x + 16}" y="{y + 10}" font-size="10" fill="#495057">{state.value}</text>'
            )
            x += 24 + int(_text_width(state.value, 10))
        return f'<g class="af-legend">{"".join(parts)}</g>'

    def render(self, states: Mapping[str, NodeStatus | str] | None = None) -> str:
        """The SVG document, nodes filled by ``states`` (node id -> state) when given."""
        if self.graph.number_of_nodes() == 0:
            return (
                '<svg xmlns="http://www.w3.org/2000/svg" width="220" height="40" role="img" '
                f'aria-label="empty workflow" font-family="{_FONT}"><text x="12" y="24" '
                f'font-size="12" fill="#868e96">{_esc(self.title or "(no nodes)")} (empty)</text></svg>'
            )
        resolved: dict[Hashable, NodeStatus | None] = {}
        for n in self.graph.nodes:
            if states is None:
                resolved[n] = None
            else:
                raw = states.get(str(n))
                resolved[n] = NodeStatus.PENDING if raw is None else NodeStatus(raw)
        height = self.body_height + _MARGIN
        legend = ""
        if states is not None:
            present = set(resolved.values())
            used = [s for s in NodeStatus if s in present]
            legend = self._legend(used, height)
            height += 20
        title = ""
        if self.title:
            title = (
                f'<text x="{_MARGIN}" y="{_MARGIN + 12}" font-size="13" font-weight="700" '
                f'fill="#212529">{_esc(self.title)}</text>'
            )
        nodes = "".join(self._node(n, resolved[n]) for n in self.graph.nodes)
        label = f"{self.title or 'workflow'}: {self.graph.number_of_nodes()} nodes"
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="af-dag" width="{self.width}" '
            f'height="{height}" viewBox="0 0 {self.width} {height}" role="img" '
            f'aria-label="{_esc(label)}" font-family="{_FONT}">'
            f"<title>{_esc(label)}</title>{self._defs()}{title}"
            f'<g class="af-edges">{self._edges}</g><g class="af-nodes">{nodes}</g>{legend}</svg>'
        )


def dag_svg(
    graph: nx.DiGraph,
    states: Mapping[str, NodeStatus | str] | None = None,
    *,
    title: str = "",
) -> str:
    """The DAG as SVG text: columns left to right, boxes filled by state when given.

    ``graph`` is a workflow graph (node attributes ``label``, ``type``, ``options``; edge
    attributes ``input`` and, for control flow, ``kind`` in ``{"branch", "error"}``, drawn
    dashed). Nodes missing from ``states`` are drawn as pending.
    """
    return DagLayout(graph, title=title).render(states)
