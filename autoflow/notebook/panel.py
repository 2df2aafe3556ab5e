"""The live run panel: an ipywidgets view of a run that polls the client until the run ends.

The panel renders snapshots (``run.status()`` and new ``run.logs(since=...)`` lines)
with the pure functions of :mod:`autoflow.notebook.html` and :mod:`autoflow.draw`;
it holds no engine logic. Its buttons call ``run.cancel()``, ``run.pause()`` and
``run.resume()``. A daemon thread polls every ``interval`` seconds, so the kernel is never
blocked, and stops once the run is finished.

Without ipywidgets, :func:`show_run` falls back to a static HTML snapshot, and without
IPython to one line of text.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from html import escape
from types import ModuleType
from typing import TYPE_CHECKING, Any

from autoflow.draw import COMPACT_AT, DagLayout
from autoflow.models import LogEntry, NodeStatus, RunInfo, RunStatus
from autoflow.notebook.html import (
    BAR_STYLES,
    MAX_LOG_LINES,
    MAX_TABLE_ROWS,
    NodeRow,
    error_html,
    format_log,
    header_html,
    logs_html,
    node_rows,
    nodes_table_html,
    run_text,
    status_badge,
)
from autoflow.notebook.snapshot import fetch_logs, run_graph, snapshot_html

if TYPE_CHECKING:
    import networkx as nx

    from autoflow.run import Run

__all__ = ["INSTALL_HINT", "RunPanel", "WidgetsMissing", "show_run"]

log = logging.getLogger("autoflow.notebook")

INSTALL_HINT = "the live run panel needs ipywidgets: pip install 'autoflow[notebook]' (or pip install ipywidgets)"
_MAX_POLL_ERRORS = 20
_BIG_REDRAW = 1.0  # seconds between redraws of the table and DAG of runs over COMPACT_AT nodes


class WidgetsMissing(ImportError):
    """ipywidgets is not installed (the message says how to install it)."""


def _widgets() -> ModuleType:
    # Imported when a panel is made, not when autoflow is: ipywidgets is an optional
    # extra, and importing it costs a quarter of a second.
    try:
        return importlib.import_module("ipywidgets")
    except ImportError as exc:
        raise WidgetsMissing(INSTALL_HINT) from exc


def _display(obj: object, *, raw: bool = False) -> None:
    # IPython comes with ipywidgets, but the text fallback must work without it
    try:
        from IPython.display import display
    except ImportError:
        print(obj["text/plain"] if raw and isinstance(obj, dict) else obj)
        return
    display(obj, raw=raw)  # type: ignore[no-untyped-call]


def _cell() -> int | None:
    """The execution count of the running cell, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else int(shell.execution_count)


class RunPanel:
    """A live panel for one run: header, status badge, progress bar, Cancel / Pause /
    Resume, the DAG coloured by state, a per-node table and the newest log lines.

    Example::

        run = client.execute(etl, url="https://example.com")
        panel = RunPanel(run)          # displays itself and follows the run
        panel.progress.value           # finished nodes (panel.progress.max: all nodes)
        panel.stop()                   # stop polling early (it stops by itself at the end)

    ``display=False`` builds the panel without showing it (show ``panel.widget`` later).
    At most ``max_log_lines`` of the newest log lines and ``max_table_rows`` nodes are
    rendered; older lines are only counted (``panel.log_skipped``).
    """

    def __init__(
        self,
        run: Run,
        *,
        graph: nx.DiGraph | None = None,
        interval: float = 0.25,
        display: bool = True,
        max_log_lines: int = MAX_LOG_LINES,
        max_table_rows: int = MAX_TABLE_ROWS,
    ) -> None:
        w = _widgets()
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if max_log_lines < 1 or max_table_rows < 1:
            raise ValueError("max_log_lines and max_table_rows must be >= 1")
        self.run = run
        self.interval = float(interval)
        self.max_table_rows = max_table_rows
        self.info: RunInfo | None = None
        self.rows: list[NodeRow] = []
        self.log_total = 0  # log lines received so far
        self.error: str | None = None  # last polling or button error, shown in the panel
        self._since = 0
        self._entries: deque[LogEntry] = deque(maxlen=max_log_lines)
        self._graph = graph
        self._layout: DagLayout | None = None
        self._dag_key: tuple[Any, ...] | None = None
        self._drawn_at = -_BIG_REDRAW
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown_in: int | None = None  # the cell whose execution displayed the panel

        self.header = w.HTML()
        self.badge = w.HTML()
        self.progress = w.IntProgress(
            value=0, min=0, max=1, bar_style="", layout=w.Layout(flex="1 1 auto", width="auto")
        )
        self.progress_text = w.HTML()
        self.buttons: dict[str, Any] = {
            "cancel": w.Button(
                description="Cancel",
                icon="stop",
                button_style="danger",
                tooltip="cancel the run: pending nodes never start",
            ),
            "pause": w.Button(
                description="Pause",
                icon="pause",
                button_style="warning",
                tooltip="no new node starts until Resume",
            ),
            "resume": w.Button(
                description="Resume", icon="play", button_style="success", tooltip="resume a paused run"
            ),
        }
        for name, button in self.buttons.items():
            button.layout = w.Layout(width="96px")
            button.on_click(self._click_handler(name))
        self.message = w.HTML()
        self.dag = w.HTML(layout=w.Layout(overflow="auto", max_height="440px"))
        self.table = w.HTML()
        self.logs = w.Output()
        self.widget = w.VBox(
            [
                w.HBox([self.header, self.badge], layout=w.Layout(align_items="center")),
                w.HBox(
                    [self.progress, self.progress_text, *self.buttons.values()],
                    layout=w.Layout(align_items="center"),
                ),
                self.message,
                self.dag,
                self.table,
                self.logs,
            ],
            layout=w.Layout(border="1px solid #dee2e6", padding="6px", max_width="1100px"),
        )
        self.widget.add_class("af-panel")
        self.refresh()
        if not self.finished:
            self.start()
        if display:
            _display(self)
            self._shown_in = _cell()

    # -- state -----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the run has ended (the panel then stops polling)."""
        return self.info is not None and self.info.finished

    @property
    def polling(self) -> bool:
        """True while the background thread follows the run."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def log_lines(self) -> list[str]:
        """The log lines rendered now (at most ``max_log_lines``, newest last), as text."""
        with self._lock:
            return [format_log(entry) for entry in self._entries]

    @property
    def log_skipped(self) -> int:
        """Log lines received but no longer rendered (older than the newest ``max_log_lines``)."""
        return self.log_total - len(self._entries)

    # -- updating --------------------------------------------------------------------------
    def refresh(self) -> RunInfo:
        """Fetch one snapshot (status and new log lines) and render it; returns the status."""
        with self._lock:
            info = self.run.status()
            fetched, self._since = fetch_logs(self.run, self._since, self._entries)
            self.log_total += fetched
            self._render(info, fetched)
            return info

    def _render(self, info: RunInfo, new_lines: int) -> None:
        first = self.info is None
        self.info = info
        status = info.status
        if first or info.finished:  # once finished, the header shows the duration
            self.header.value = header_html(info)
        self.badge.value = status_badge(status, cancel_requested=info.cancel_requested)
        done, total = info.progress
        self.progress.max = max(total, 1)
        self.progress.value = done if total else (1 if info.finished else 0)
        self.progress.bar_style = BAR_STYLES[status]
        self.progress_text.value = f'<span style="font-size:12px;padding:0 6px">{done}/{total} nodes</span>'
        running = status in (RunStatus.PENDING, RunStatus.RUNNING)
        self.buttons["cancel"].disabled = info.finished or info.cancel_requested
        self.buttons["pause"].disabled = not running or info.cancel_requested
        self.buttons["resume"].disabled = status is not RunStatus.PAUSED
        self._show_problem()
        # big runs: redraw the table and the DAG (100 kB each) at most once a second
        now = time.monotonic()
        if len(info.nodes) <= COMPACT_AT or info.finished or now - self._drawn_at >= _BIG_REDRAW:
            self._drawn_at = now
            self.rows = node_rows(info)
            self.table.value = nodes_table_html(self.rows, limit=self.max_table_rows)
            self._render_dag(info)
        if new_lines or first:
            text = "\n".join(self.log_lines)
            self.logs.outputs = (
                {
                    "output_type": "display_data",
                    "data": {
                        "text/html": logs_html(list(self._entries), self.log_skipped),
                        "text/plain": text,
                    },
                    "metadata": {},
                },
            )

    def _render_dag(self, info: RunInfo) -> None:
        states: Mapping[str, NodeStatus] = {n.id: n.status for n in info.nodes.values()}
        key = tuple(states.items())
        if key == self._dag_key:
            return  # unchanged colours: skip re-sending the SVG
        if self._layout is None:
            graph = self._graph if self._graph is not None else run_graph(self.run, info)
            self._layout = DagLayout(graph)
        self.dag.value = self._layout.render(states)
        self._dag_key = key

    def _problem_html(self) -> str:
        if not self.error:
            return ""
        return f'<div style="color:#e8590c;font-size:12px">{escape(self.error)}</div>'

    # -- polling ---------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the run from a daemon thread (done at construction while it runs)."""
        with self._lock:
            if self.polling:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._poll, name=f"autoflow-panel-{self.run.id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop polling (the widgets keep their last snapshot)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        """Stop polling and close the widgets."""
        self.stop()
        for widget in (
            self.header,
            self.badge,
            self.progress,
            self.progress_text,
            self.message,
            self.dag,
            self.table,
            self.logs,
            *self.buttons.values(),
        ):
            widget.close()
        self.widget.close()

    def _poll(self) -> None:
        errors = 0
        finished_seen = False
        while not self._stopping.wait(self.interval if errors == 0 else max(self.interval, 1.0)):
            try:
                info = self.refresh()
            except Exception as exc:  # shown in the panel and logged; polling goes on
                errors += 1
                self.error = f"could not refresh ({type(exc).__name__}: {exc})"
                if self.finished:  # the end is on screen already (e.g. the client was closed)
                    log.debug("panel of run %s: final refresh: %s", self.run.id, self.error)
                    return
                log.warning("panel of run %s: %s", self.run.id, self.error)
                if errors >= _MAX_POLL_ERRORS:
                    self.error += f"; stopped following the run after {errors} failures"
                self._show_problem()
                if errors >= _MAX_POLL_ERRORS:
                    return
                continue
            if errors:
                errors, self.error = 0, None
                self._show_problem()
            if info.finished:
                if finished_seen:  # one more round picks up the run's last log lines
                    return
                finished_seen = True

    def _show_problem(self) -> None:
        with self._lock:
            info_html = error_html(self.info) if self.info is not None else ""
            self.message.value = info_html + self._problem_html()

    def _click_handler(self, action: str) -> Callable[[Any], None]:
        def handler(_button: Any) -> None:
            try:
                getattr(self.run, action)()
                self.error = None
                self.refresh()
            except Exception as exc:  # shown in the panel, not lost in the kernel log
                self.error = f"{action} failed: {type(exc).__name__}: {exc}"
                log.warning("panel of run %s: %s", self.run.id, self.error)
                self._show_problem()
                return
            if not self.finished:
                self.start()  # resume after the thread ended, e.g. on an error streak

        return handler

    # -- display ---------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        # ``RunPanel(run)`` as the last line of a cell: the constructor has shown it already
        if self._shown_in is not None and self._shown_in == _cell():
            return
        _display(self._repr_mimebundle_(), raw=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        if self.info is None:
            return f"<RunPanel {self.run.id}>"
        state = "following" if self.polling and not self.finished else "stopped"
        return f"<RunPanel {run_text(self.info)} {state}>"


def show_run(
    run: Run,
    *,
    graph: nx.DiGraph | None = None,
    interval: float = 0.25,
    display: bool = True,
) -> RunPanel | None:
    """Show ``run`` as a live :class:`RunPanel`; without ipywidgets show a static HTML
    snapshot instead (or, without IPython, print one line) and return None."""
    try:
        return RunPanel(run, graph=graph, interval=interval, display=display)
    except WidgetsMissing:
        log.info("ipywidgets is missing; showing a static snapshot (%s)", INSTALL_HINT)
    if not display:
        return None
    try:
        from IPython.display import HTML
    except ImportError:
        print(run_text(run.status()))
        return None
    _display(HTML(snapshot_html(run, graph=graph)))  # type: ignore[no-untyped-call]
    return None
