"""Static renderings of real runs: one text line, the HTML snapshot, caps."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import autoflow as af
from autoflow.draw import dag_svg
from autoflow.models import LogEntry, LogLevel, RunStatus
from autoflow.notebook.html import (
    RUN_COLORS,
    format_log,
    logs_html,
    node_rows,
    nodes_table_html,
    run_html,
    run_text,
    status_badge,
)
from tests.notebook import flows


def entries(n: int) -> list[LogEntry]:
    now = datetime.now(timezone.utc)
    return [LogEntry(id=i + 1, timestamp=now, level=LogLevel.INFO, message=f"line {i}", node_id="n") for i in range(n)]


def test_run_text_is_one_line() -> None:
    client = af.Client(immediate=True)
    ok = client.execute(flows.pipeline, n=3).status()
    assert run_text(ok) == f"<Run {ok.id} nb_pipeline completed 3/3 nodes>"
    bad = client.execute(flows.failing, n=3).status()
    text = run_text(bad)
    assert "\n" not in text
    assert text.startswith(f"<Run {bad.id} nb_failing failed 2/2 nodes; nb_boom: ValueError: boom")


def test_run_html_snapshot_of_a_failed_run() -> None:
    client = af.Client(immediate=True)
    run = client.execute(flows.failing, n=3)
    info = run.status()
    svg = dag_svg(flows.failing.graph, {n.id: n.status for n in info.nodes.values()})
    page = run_html(info, run.logs(), svg)
    assert 'data-status="failed"' in page
    assert f"background:{RUN_COLORS[RunStatus.FAILED]}" in page  # red badge
    assert RUN_COLORS[RunStatus.FAILED] == "#e03131"
    assert svg in page
    rows = dict(re.findall(r'<tr class="af-row" data-node="([^"]+)" data-state="([^"]+)"', page))
    assert rows == {"nb_source": "completed", "nb_boom": "failed"}
    assert "ValueError: boom: cannot use 3 items &lt;script&gt;" in page  # error summary, escaped
    assert "<script>" not in page
    assert "about to fail" in page  # a log line
    assert "2/2 nodes" in page


def test_node_rows_show_state_attempt_duration_error() -> None:
    client = af.Client(immediate=True)
    info = client.execute(flows.failing, n=1).status()
    rows = {row.id: row for row in node_rows(info)}
    assert rows["nb_source"].status == "completed" and rows["nb_source"].attempt == 1
    assert rows["nb_source"].duration.endswith(("ms", "s"))
    assert rows["nb_boom"].attempt == 2  # retries=1: two attempts
    assert rows["nb_boom"].error.startswith("ValueError: boom")


def test_logs_are_capped_and_counted() -> None:
    many = entries(1_200)
    page = run_html(af.Client(immediate=True).execute(flows.pipeline).status(), many, None, max_logs=500)
    assert page.count('class="af-log ') == 500
    assert "700 earlier lines not shown" in page
    assert "line 1199" in page and ">line 699<" not in page
    assert logs_html([], 0).count("no log lines yet") == 1


def test_table_is_capped() -> None:
    info = af.Client(immediate=True).execute(flows.wide).status()
    table = nodes_table_html(node_rows(info), limit=50)
    assert table.count('class="af-row"') == 50
    assert "70 more nodes not shown" in table
    assert "completed 120" in table


def test_badge_and_log_format() -> None:
    assert "background:#2f9e44" in status_badge(RunStatus.COMPLETED)
    assert "(cancelling)" in status_badge(RunStatus.RUNNING, cancel_requested=True)
    line = format_log(entries(1)[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} info  \[n\] line 0", line)
