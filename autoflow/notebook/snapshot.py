"""Snapshots of a run fetched through its client: the graph to draw, its log lines (paged,
newest kept), and a static HTML rendering. Used by the live panel and its fallbacks.

Example::

    from autoflow.notebook.snapshot import snapshot_html

    html = snapshot_html(run)          # what show_run() displays without ipywidgets
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from autoflow.draw import DagLayout
from autoflow.errors import NotFoundError
from autoflow.models import LogEntry, RunInfo
from autoflow.notebook.html import MAX_LOG_LINES, run_html

if TYPE_CHECKING:
    import networkx as nx

    from autoflow.run import Run

__all__ = ["fetch_logs", "run_graph", "snapshot_html"]

_LOG_PAGE = 10_000  # lines per store call; a shorter page is the last one
_MAX_LOG_PAGES = 50  # per call; a flood beyond that is caught up on the next call


def run_graph(run: Run, info: RunInfo | None = None) -> nx.DiGraph:
    """The graph to draw for ``run``: its workflow's graph if registered here (and it has
    the run's nodes), else the run's nodes without edges."""
    info = info or run.status()
    try:
        workflow = run.client.registry.workflow(info.workflow)
    except NotFoundError:
        workflow = None
    if workflow is not None and set(workflow.graph.nodes) == set(info.nodes):
        graph: nx.DiGraph = workflow.graph
        return graph
    try:  # the definition the run ran, from the store
        graph = run.client.graph(info)
        if set(graph.nodes) == set(info.nodes):
            return graph
    except NotFoundError:
        pass
    import networkx as nx  # imported where a graph is drawn, not by every worker

    graph = nx.DiGraph(name=info.workflow)
    for node_id, node in info.nodes.items():
        graph.add_node(node_id, type=node.type, label=node_id, options={})
    return graph


def fetch_logs(run: Run, since: int, keep: deque[LogEntry]) -> tuple[int, int]:
    """Append the log lines of ``run`` after id ``since`` to ``keep`` (a bounded deque, so
    only the newest survive); return (lines fetched, last id seen).

    Pages through the store ``_LOG_PAGE`` lines at a time until a short page; lines are
    never all held at once.
    """
    fetched = 0
    for _ in range(_MAX_LOG_PAGES):
        batch = run.logs(since=since, limit=_LOG_PAGE)
        if not batch:
            break
        keep.extend(batch)
        fetched += len(batch)
        since = max(since, batch[-1].id)
        if len(batch) < _LOG_PAGE:
            break
    return fetched, since


def snapshot_html(run: Run, *, graph: nx.DiGraph | None = None, max_logs: int = MAX_LOG_LINES) -> str:
    """A static HTML snapshot of ``run`` (what :func:`show_run` shows without ipywidgets)."""
    info = run.status()
    graph = graph if graph is not None else run_graph(run, info)
    svg = DagLayout(graph).render({n.id: n.status for n in info.nodes.values()})
    tail: deque[LogEntry] = deque(maxlen=max_logs)
    fetched, _ = fetch_logs(run, 0, tail)
    return run_html(info, list(tail), svg, max_logs=max_logs, skipped=fetched - len(tail))
