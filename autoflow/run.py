"""The handle on one run (:class:`Run`) and how runs show themselves in a notebook.

A ``Run`` asks its owner (the :class:`autoflow.Client` that made it) for everything; it
holds only the run's id. ``autoflow.notebook`` installs the live panel and the HTML
snapshot in :data:`display_hooks`, so neither this module nor the client imports widgets.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from autoflow.define.workflow import WorkflowRegistry
from autoflow.draw import dag_svg
from autoflow.models import LogEntry, RunInfo, RunStatus

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["DisplayHooks", "Run", "RunOwner", "display_hooks", "display_run"]


class RunOwner(Protocol):
    """What a run handle (and what shows it) asks of its client."""

    registry: WorkflowRegistry  # the workflows known here: a run is drawn with its graph

    def status(self, run_id: str) -> RunInfo: ...
    def run_status(self, run_id: str) -> RunStatus: ...
    def wait(self, run_id: str, timeout: float | None = None) -> RunInfo: ...
    def result(self, run_id: str, timeout: float | None = None) -> Any: ...
    def logs(self, run_id: str, since: int = 0, node: str | None = None, limit: int = 10_000) -> list[LogEntry]: ...
    def graph(self, run: str | RunInfo) -> nx.DiGraph: ...
    def cancel(self, run_id: str) -> RunStatus: ...
    def pause(self, run_id: str) -> RunStatus: ...
    def resume(self, run_id: str) -> RunStatus: ...


@dataclass
class DisplayHooks:
    """How runs show themselves in a notebook. ``autoflow.notebook`` installs its live
    panel and HTML snapshot here when imported, so the client never imports widgets."""

    show: Callable[..., Any] | None = None  # show(run, interval=seconds) -> the panel, or None
    html: Callable[[Run], str] | None = None


display_hooks = DisplayHooks()


class Run:
    """A handle on one run. ``print(run)`` is one line; in Jupyter it is a live panel.

    Example::

        run = client.execute(etl, url="https://example.com")
        run.wait(timeout=30).status     # RunStatus.COMPLETED
        run.result()                    # the workflow's output
        run.logs()                      # [LogEntry(...), ...]
    """

    def __init__(self, client: RunOwner, run_id: str, *, created: bool = True) -> None:
        self.client = client
        self.id = run_id
        #: False when ``execute`` found an existing run by its idempotency key instead
        self.created = created

    def status(self) -> RunInfo:
        return self.client.status(self.id)

    def wait(self, timeout: float | None = None) -> RunInfo:
        return self.client.wait(self.id, timeout)

    def result(self, timeout: float | None = None) -> Any:
        return self.client.result(self.id, timeout)

    def logs(self, since: int = 0, node: str | None = None, limit: int = 10_000) -> list[LogEntry]:
        """Log lines with ``id > since`` (at most ``limit``; page on with ``since=last.id``)."""
        return self.client.logs(self.id, since=since, node=node, limit=limit)

    def graph(self) -> nx.DiGraph:
        """The run's DAG, from the definition it ran (no functions needed)."""
        return self.client.graph(self.id)

    def to_svg(self) -> str:
        """The run's DAG as SVG, each node coloured by its state."""
        info = self.status()
        return dag_svg(self.client.graph(info), {k: n.status for k, n in info.nodes.items()}, title=info.workflow)

    def watch(self, *, interval: float = 0.25) -> Any:
        """Show the live panel (a static snapshot without ipywidgets); returns the panel."""
        if display_hooks.show is None:
            print(self)
            return None
        return display_hooks.show(self, interval=interval)

    def _ipython_display_(self) -> None:
        self.watch()

    def _repr_html_(self) -> str:
        if display_hooks.html is None:
            return f"<pre>{html.escape(repr(self))}</pre>"
        return display_hooks.html(self)

    def cancel(self) -> RunStatus:
        return self.client.cancel(self.id)

    def pause(self) -> RunStatus:
        return self.client.pause(self.id)

    def resume(self) -> RunStatus:
        return self.client.resume(self.id)

    def __repr__(self) -> str:
        try:
            return self.status().summary()
        except Exception as exc:  # a repr must never raise (e.g. the backend went away)
            return f"<Run {self.id} ({type(exc).__name__}: {exc})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


def display_run(run: Run) -> None:
    """Display ``run`` in IPython (its live panel), or print its one-line summary."""
    try:
        from IPython.display import display
    except ImportError:
        print(run)
        return
    display(run)  # type: ignore[no-untyped-call]
