"""The live panel, driven by real runs: trait values, buttons, polling, caps, fallbacks."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets
import pytest

import autoflow as af
from autoflow.draw import NODE_COLORS
from autoflow.models import RunStatus
from autoflow.notebook import panel as panel_module
from autoflow.notebook.html import MAX_LOG_LINES, RUN_COLORS
from autoflow.notebook.panel import INSTALL_HINT, RunPanel, show_run
from autoflow.notebook.snapshot import run_graph, snapshot_html
from tests.notebook import flows


def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def embedded(settings: af.Settings) -> Iterator[af.Client]:
    """The embedded default: SQLite under a temp AUTOFLOW_HOME, worker threads here."""
    client = af.Client(settings=settings)
    yield client
    client.close()


@pytest.fixture
def panels() -> Iterator[list[RunPanel]]:
    """Panels made by a test; stopped and closed after it, whatever happened."""
    made: list[RunPanel] = []
    yield made
    for p in made:
        p.close()


def table_rows(p: RunPanel) -> dict[str, str]:
    return dict(re.findall(r'<tr class="af-row" data-node="([^"]+)" data-state="([^"]+)"', p.table.value))


def test_completed_run(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.pipeline, n=4)
    p = RunPanel(run, display=False)
    panels.append(p)
    assert (p.progress.value, p.progress.max, p.progress.bar_style) == (3, 3, "success")
    assert "completed" in p.badge.value and f"background:{RUN_COLORS[RunStatus.COMPLETED]}" in p.badge.value
    assert "nb_pipeline" in p.header.value and run.id in p.header.value
    assert p.progress_text.value.count("3/3 nodes") == 1
    assert table_rows(p) == {"nb_source": "completed", "nb_square": "completed", "nb_sum": "completed"}
    assert [(r.id, r.status, r.attempt) for r in p.rows] == [
        ("nb_source", "completed", 1),
        ("nb_square", "completed", 1),
        ("nb_sum", "completed", 1),
    ]
    for node_id in ("nb_source", "nb_square", "nb_sum"):
        assert f'data-id="{node_id}" data-state="completed"' in p.dag.value
    assert NODE_COLORS[af.NodeStatus.COMPLETED][0] in p.dag.value
    assert all(b.disabled for b in p.buttons.values())
    assert not p.polling and p.finished
    assert p.log_lines[0].endswith("run started") and p.log_lines[-1].endswith("run completed")
    assert any("[nb_square] completed in" in line for line in p.log_lines)
    (output,) = p.logs.outputs
    assert "run completed" in output["data"]["text/plain"] and "af-log" in output["data"]["text/html"]
    assert repr(p) == f"<RunPanel <Run {run.id} nb_pipeline completed 3/3 nodes> stopped>"
    bundle = p._repr_mimebundle_()
    assert bundle["text/plain"] == repr(p)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == p.widget.model_id


def test_failed_run_is_red(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.failing, n=2)
    p = RunPanel(run, display=False)
    panels.append(p)
    assert p.progress.bar_style == "danger"
    assert "failed" in p.badge.value and "background:#e03131" in p.badge.value
    assert table_rows(p) == {"nb_source": "completed", "nb_boom": "failed"}
    boom = next(r for r in p.rows if r.id == "nb_boom")
    assert boom.attempt == 2 and boom.error.startswith("ValueError: boom: cannot use 2 items")
    assert "ValueError" in p.message.value and "nb_boom" in p.message.value
    assert "&lt;script&gt;" in p.table.value and "<script>" not in p.table.value
    assert 'data-id="nb_boom" data-state="failed"' in p.dag.value
    assert any(" warn  [nb_boom]" in line for line in p.log_lines)  # the retried attempt
    assert any(" error " in line for line in p.log_lines)


def test_live_run_is_followed_by_the_background_thread(embedded: af.Client, panels: list[RunPanel]) -> None:
    run = embedded.execute(flows.two_steps, first=1.0, second=0.3)
    started = time.perf_counter()
    p = RunPanel(run, display=False, interval=0.05)
    panels.append(p)
    assert time.perf_counter() - started < 2.0  # one snapshot, then back to the caller
    assert p.polling
    eventually(lambda: p.info is not None and p.info.status is RunStatus.RUNNING, what="running")
    eventually(lambda: p.progress.bar_style == "info", what="info bar")
    assert not p.buttons["cancel"].disabled and not p.buttons["pause"].disabled
    assert p.buttons["resume"].disabled
    # nobody calls refresh(): the thread brings the panel to the end, then stops
    eventually(lambda: p.finished, what="the panel to see the end")
    eventually(lambda: not p.polling, timeout=5, what="polling to stop")
    assert (p.progress.value, p.progress.max, p.progress.bar_style) == (2, 2, "success")
    assert "completed" in p.badge.value
    assert p.log_lines[-1].endswith("run completed")
    assert "took" in p.header.value


def test_a_node_in_a_durable_delay_shows_as_waiting(embedded: af.Client, panels: list[RunPanel]) -> None:
    run = embedded.execute(flows.delayed, seconds=30.0)
    p = RunPanel(run, display=False, interval=0.05)
    panels.append(p)
    eventually(lambda: table_rows(p).get("delay") == "waiting", what="the delay to be waiting")
    assert 'data-id="delay" data-state="waiting"' in p.dag.value
    assert NODE_COLORS[af.NodeStatus.WAITING][0] in p.dag.value
    assert "waiting" in p.table.value
    run.cancel()


def test_cancel_button_cancels_the_run(embedded: af.Client, panels: list[RunPanel]) -> None:
    run = embedded.execute(flows.slow, seconds=30.0)
    p = RunPanel(run, display=False, interval=0.05)
    panels.append(p)
    eventually(lambda: run.status().nodes["nb_wait"].status is af.NodeStatus.RUNNING, what="node start")
    p.buttons["cancel"].click()
    assert p.buttons["cancel"].disabled  # the click refreshed the panel: cancel requested
    assert "(cancelling)" in p.badge.value or "cancelled" in p.badge.value
    info = run.wait(timeout=10)
    assert info.status is RunStatus.CANCELLED
    eventually(lambda: "cancelled" in p.badge.value, what="cancelled badge")
    eventually(lambda: not p.polling, timeout=5, what="polling to stop")
    assert p.progress.bar_style == "warning"
    assert f"background:{RUN_COLORS[RunStatus.CANCELLED]}" in p.badge.value
    assert table_rows(p) == {"nb_wait": "cancelled"}
    assert all(b.disabled for b in p.buttons.values())
    assert any("stopped: the run was cancelled" in line for line in p.log_lines)


def test_pause_and_resume_buttons(embedded: af.Client, panels: list[RunPanel]) -> None:
    run = embedded.execute(flows.two_steps, first=0.8, second=0.2)
    p = RunPanel(run, display=False, interval=0.05)
    panels.append(p)
    eventually(lambda: run.status().nodes["nb_wait"].status is af.NodeStatus.RUNNING, what="node start")
    p.buttons["pause"].click()
    assert run.status().status is RunStatus.PAUSED
    assert "paused" in p.badge.value and p.progress.bar_style == "warning"
    assert p.buttons["pause"].disabled and not p.buttons["resume"].disabled
    # the running node finishes, but the next one does not start while paused
    eventually(lambda: run.status().nodes["nb_wait"].status.finished, what="first node to finish")
    time.sleep(0.3)
    assert run.status().nodes["nb_then"].status in (af.NodeStatus.PENDING, af.NodeStatus.QUEUED)
    p.buttons["resume"].click()
    assert run.wait(timeout=15).status is RunStatus.COMPLETED
    eventually(lambda: p.finished and p.progress.bar_style == "success", what="completion")
    text = "\n".join(p.log_lines)
    assert "run paused" in text and "run resumed" in text


def test_button_errors_are_shown_not_raised(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.pipeline)
    p = RunPanel(run, display=False)
    panels.append(p)

    def broken() -> RunStatus:
        raise af.BackendError("redis://example:6379/0", "store went away")

    run.pause = broken  # type: ignore[method-assign]
    p._click_handler("pause")(p.buttons["pause"])
    assert p.error is not None and "BackendError" in p.error
    assert "store went away" in p.message.value


def test_ten_thousand_log_lines_are_capped(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.chatty, lines=10_000)
    total = len(run.logs()) + len(run.logs(since=run.logs()[-1].id))  # run.logs() pages at 10,000
    assert total > 10_000
    started = time.perf_counter()
    p = RunPanel(run, display=False)
    build = time.perf_counter() - started
    panels.append(p)
    assert p.log_total == total
    assert len(p.log_lines) == MAX_LOG_LINES == 500
    assert p.log_skipped == total - 500
    assert p.log_lines[-1].endswith("run completed")  # the lines after the first page are there
    (output,) = p.logs.outputs
    html = output["data"]["text/html"]
    assert html.count('class="af-log ') == 500
    assert f"{total - 500:,} earlier lines not shown" in html
    assert len(html) < 200_000
    started = time.perf_counter()
    p.refresh()
    again = time.perf_counter() - started
    print(f"10,000 lines: panel built in {build:.3f} s, refresh {again * 1000:.1f} ms, {len(html):,} chars")
    assert p.log_total == total  # nothing fetched twice


def test_log_cap_is_configurable_and_follows_new_lines(embedded: af.Client, panels: list[RunPanel]) -> None:
    run = embedded.execute(flows.chatty, lines=300)
    run.wait(timeout=30)
    p = RunPanel(run, display=False, max_log_lines=50)
    panels.append(p)
    assert len(p.log_lines) == 50 and p.log_skipped == p.log_total - 50
    assert p.log_lines[-1].endswith("run completed")


def test_hundred_plus_nodes(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.wide)
    assert len(flows.wide.graph) == 120
    started = time.perf_counter()
    p = RunPanel(run, display=False)
    build = time.perf_counter() - started
    panels.append(p)
    assert (p.progress.value, p.progress.max) == (120, 120)
    assert len(table_rows(p)) == 120
    assert all(f'data-id="{n}" data-state="completed"' in p.dag.value for n in flows.wide.graph)
    started = time.perf_counter()
    for _ in range(10):
        p.refresh()
    per_refresh = (time.perf_counter() - started) / 10
    print(f"120 nodes: panel built in {build:.3f} s, refresh {per_refresh * 1000:.1f} ms")
    capped = RunPanel(run, display=False, max_table_rows=40)
    panels.append(capped)
    assert len(table_rows(capped)) == 40 and "80 more nodes not shown" in capped.table.value


def test_graph_is_the_registered_workflow_or_the_run_nodes(settings: af.Settings) -> None:
    with af.Client(settings=settings) as client:
        run = client.execute(flows.pipeline, n=2)
        run.wait(timeout=30)
        assert run_graph(run) is flows.pipeline.graph
        # another process that never imported the workflow: the graph of the stored definition
        with af.Client(settings=settings, registry=af.Registry(), workers=0) as other:
            foreign = other.run(run.id)
            graph = run_graph(foreign)
            assert set(graph.nodes) == {"nb_source", "nb_square", "nb_sum"}
            assert set(graph.edges) == set(flows.pipeline.graph.edges)
            assert graph.nodes["nb_square"]["type"] == "tests.notebook.flows:nb_square"
            by_id, by_info = foreign.graph(), other.graph(foreign.status())
            assert set(by_id.edges) == set(by_info.edges) == set(graph.edges)
            assert foreign.to_svg().count('data-state="completed"') == 3
            p = RunPanel(foreign, display=False)
            try:
                assert 'data-id="nb_sum" data-state="completed"' in p.dag.value
            finally:
                p.close()


def test_explicit_graph_wins(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.pipeline)
    p = RunPanel(run, graph=flows.failing.graph, display=False)
    panels.append(p)
    assert 'data-id="nb_boom"' in p.dag.value  # drawn from the graph given, states as pending


def test_display_true_shows_the_text_repr_outside_a_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    run = af.Client(immediate=True).execute(flows.pipeline)
    p = RunPanel(run)
    try:
        assert capsys.readouterr().out.strip() == repr(p)
    finally:
        p.close()


def test_stop_and_close(embedded: af.Client) -> None:
    run = embedded.execute(flows.slow, seconds=30.0)
    p = RunPanel(run, display=False, interval=0.05)
    assert p.polling
    p.stop()
    assert not p.polling
    p.stop()  # idempotent
    assert "stopped" in repr(p)
    p.close()
    assert p.widget.comm is None and p.progress.comm is None
    run.cancel()
    assert run.wait(timeout=10).status is RunStatus.CANCELLED


def test_bad_arguments() -> None:
    run = af.Client(immediate=True).execute(flows.pipeline)
    with pytest.raises(ValueError, match="interval"):
        RunPanel(run, interval=0, display=False)


class _Missing:
    """Make ``import ipywidgets`` (and optionally IPython) fail as if not installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)


def test_without_ipywidgets_the_panel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _Missing(monkeypatch, "ipywidgets")
    run = af.Client(immediate=True).execute(flows.pipeline)
    with pytest.raises(ImportError, match=re.escape("pip install 'autoflow[notebook]'")):
        RunPanel(run, display=False)
    assert "ipywidgets" in INSTALL_HINT


def test_without_ipywidgets_show_run_falls_back_to_html(monkeypatch: pytest.MonkeyPatch) -> None:
    _Missing(monkeypatch, "ipywidgets")
    shown: list[Any] = []
    monkeypatch.setattr(panel_module, "_display", shown.append)
    run = af.Client(immediate=True).execute(flows.failing)
    assert show_run(run) is None
    (html,) = shown
    assert html.data == snapshot_html(run)
    assert 'data-status="failed"' in html.data and 'data-id="nb_boom" data-state="failed"' in html.data
    assert show_run(run, display=False) is None and len(shown) == 1


def test_without_ipython_show_run_prints_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _Missing(monkeypatch, "ipywidgets", "IPython", "IPython.display")
    run = af.Client(immediate=True).execute(flows.pipeline)
    assert show_run(run) is None
    assert capsys.readouterr().out == f"<Run {run.id} nb_pipeline completed 3/3 nodes>\n"


def test_show_run_gives_a_panel_with_ipywidgets(panels: list[RunPanel]) -> None:
    run = af.Client(immediate=True).execute(flows.pipeline)
    p = show_run(run, display=False)
    assert isinstance(p, RunPanel)
    panels.append(p)
    assert isinstance(p.widget, ipywidgets.VBox)


def test_snapshot_html_counts_skipped_lines(tmp_path: Path) -> None:
    run = af.Client(immediate=True).execute(flows.chatty, lines=2_000)
    page = snapshot_html(run, max_logs=100)
    assert page.count('class="af-log ') == 100
    assert "earlier lines not shown" in page
    everything = snapshot_html(run, max_logs=5_000)  # above the default cap of 500
    assert everything.count('class="af-log ') == len(run.logs()) > 2_000
    assert "earlier lines not shown" not in everything
