"""Static renderings of a run snapshot: one text line, HTML fragments, a whole HTML page.

Everything here is a pure function of a :class:`~autoflow.models.RunInfo` and log
entries: the live panel and the ipywidgets-free fallback both use it, and it is what
tests read. Styles are inline (notebook front ends strip ``<style>`` from untrusted
output) and every value is escaped.

Example::

    from autoflow.notebook.html import run_html, run_text

    info = run.status()
    run_text(info)                        # '<Run 01… etl completed 3/3 nodes>'
    page = run_html(info, run.logs(), svg=dag_svg(etl.graph, ...))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import NamedTuple

from autoflow.draw import _FONT, _esc, state_color
from autoflow.models import LogEntry, LogLevel, NodeInfo, RunInfo, RunStatus

__all__ = [
    "BAR_STYLES",
    "MAX_LOG_LINES",
    "MAX_TABLE_ROWS",
    "RUN_COLORS",
    "NodeRow",
    "error_html",
    "format_log",
    "format_seconds",
    "header_html",
    "logs_html",
    "node_rows",
    "nodes_table_html",
    "progress_html",
    "run_html",
    "run_text",
    "status_badge",
]

#: Log lines rendered at most (the newest); older ones are counted, not drawn.
MAX_LOG_LINES = 500
#: Rows of the per-node table rendered at most.
MAX_TABLE_ROWS = 500

#: Badge colour of a run per state.
RUN_COLORS: dict[RunStatus, str] = {
    RunStatus.PENDING: "#868e96",
    RunStatus.RUNNING: "#1c7ed6",
    RunStatus.PAUSED: "#f08c00",
    RunStatus.COMPLETED: "#2f9e44",
    RunStatus.FAILED: "#e03131",
    RunStatus.CANCELLED: "#495057",
}

#: ipywidgets ``bar_style`` of the progress bar per run state.
BAR_STYLES: dict[RunStatus, str] = {
    RunStatus.PENDING: "",
    RunStatus.RUNNING: "info",
    RunStatus.PAUSED: "warning",
    RunStatus.COMPLETED: "success",
    RunStatus.FAILED: "danger",
    RunStatus.CANCELLED: "warning",
}

_LEVEL_COLORS = {
    LogLevel.DEBUG: "#868e96",
    LogLevel.INFO: "#1971c2",
    LogLevel.WARN: "#e8590c",
    LogLevel.ERROR: "#e03131",
}
_MONO = "SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace"
_MESSAGE_CHARS = 500
_ERROR_CHARS = 140


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def format_seconds(seconds: float | None) -> str:
    """``12 ms``, ``1.52 s``, ``3m 07s``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def run_text(info: RunInfo) -> str:
    """One line: ``<Run ID WORKFLOW STATUS done/total nodes[; node: Error: message]>``."""
    text = info.summary()
    if info.error is not None:
        where = f"{info.error.node_id}: " if info.error.node_id else ""
        text = text[:-1] + f"; {where}{_clip(_one_line(str(info.error)), _ERROR_CHARS)}>"
    return text


def status_badge(status: RunStatus, *, cancel_requested: bool = False) -> str:
    """A coloured pill with the run's state (``background:#…`` names the colour)."""
    color = RUN_COLORS[status]
    text = status.value
    if cancel_requested and not status.finished:
        text += " (cancelling)"
    return (
        f'<span class="af-badge af-badge-{status.value}" style="display:inline-block;'
        f"padding:1px 10px;border-radius:10px;background:{color};color:#fff;"
        f'font-weight:600;font-size:12px;line-height:18px">{_esc(text)}</span>'
    )


class NodeRow(NamedTuple):
    """One row of the per-node table, as text."""

    id: str
    status: str
    attempt: int
    duration: str
    error: str


def _node_duration(node: NodeInfo, now: datetime) -> str:
    text = ""
    if node.duration is not None:
        text = format_seconds(node.duration)
    elif node.started_at is not None and not node.status.finished:
        text = format_seconds(max(0.0, (now - node.started_at).total_seconds())) + " …"
    if node.items_total:  # fan-out nodes (node.map) count their items
        text = f"{text} · {node.items_done}/{node.items_total} items".lstrip(" ·")
    return text


def node_rows(info: RunInfo, now: datetime | None = None) -> list[NodeRow]:
    """The per-node table of ``info`` (in definition order); running nodes show elapsed time."""
    now = now or datetime.now(timezone.utc)
    return [
        NodeRow(
            node.id,
            node.status.value,
            node.attempt,
            _node_duration(node, now),
            _one_line(str(node.error)) if node.error else "",
        )
        for node in info.nodes.values()
    ]


def _counts(rows: Sequence[NodeRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return " · ".join(f"{state} {n}" for state, n in counts.items())


def nodes_table_html(rows: Sequence[NodeRow], *, limit: int = MAX_TABLE_ROWS) -> str:
    """The per-node table (state, attempt, duration, error), capped at ``limit`` rows."""
    cell = "padding:2px 8px;border-bottom:1px solid #e9ecef;text-align:left;line-height:18px"
    head = "".join(
        f'<th style="{cell};font-weight:600">{h}</th>' for h in ("node", "state", "attempt", "duration", "error")
    )
    body = []
    for row in rows[:limit]:
        fill, stroke = state_color(row.status)
        state = (
            f'<span style="display:inline-block;padding:0 6px;border-radius:8px;background:{fill};'
            f'border:1px solid {stroke};font-size:11px;line-height:15px">{_esc(row.status)}</span>'
        )
        error = (
            f'<span title="{_esc(_clip(row.error, 2000))}" style="color:#c92a2a">'
            f"{_esc(_clip(row.error, _ERROR_CHARS))}</span>"
            if row.error
            else ""
        )
        body.append(
            f'<tr class="af-row" data-node="{_esc(row.id)}" data-state="{_esc(row.status)}">'
            f'<td style="{cell};font-family:{_MONO}">{_esc(row.id)}</td><td style="{cell}">{state}</td>'
            f'<td style="{cell}">{row.attempt}</td><td style="{cell}">{_esc(row.duration)}</td>'
            f'<td style="{cell}">{error}</td></tr>'
        )
    more = ""
    if len(rows) > limit:
        more = (
            f'<div style="color:#868e96;font-size:11px">… {len(rows) - limit:,} more nodes not '
            "shown (run.status().nodes has them all)</div>"
        )
    summary = f'<div style="color:#495057;font-size:11px;margin:2px 0">{_esc(_counts(rows))}</div>'
    return (
        f'{summary}<div style="max-height:260px;overflow:auto">'
        f'<table class="af-nodes" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{more}"
    )


def progress_html(info: RunInfo) -> str:
    """A static progress bar: finished nodes / total, coloured like the badge."""
    done, total = info.progress
    percent = 100.0 * done / total if total else 100.0
    color = RUN_COLORS[info.status]
    return (
        f'<div class="af-progress" style="display:flex;align-items:center;gap:8px;margin:4px 0">'
        f'<div style="flex:1;height:10px;background:#e9ecef;border-radius:5px;overflow:hidden">'
        f'<div style="width:{percent:.1f}%;height:100%;background:{color}"></div></div>'
        f'<span style="font-size:12px">{done}/{total} nodes</span></div>'
    )


def _log_parts(entry: LogEntry) -> tuple[str, str]:
    """The time stamp of one log line and its text: message and data, clipped."""
    data = f" {json.dumps(entry.data, default=str)}" if entry.data else ""
    return f"{entry.timestamp:%H:%M:%S.%f}"[:-3], _clip(f"{entry.message}{data}", _MESSAGE_CHARS)


def format_log(entry: LogEntry) -> str:
    """One log line as plain text: time, level, [node], message, data (clipped)."""
    stamp, text = _log_parts(entry)
    node = f" [{entry.node_id}]" if entry.node_id else ""
    return f"{stamp} {entry.level.value:5}{node} {text}"


def logs_html(entries: Sequence[LogEntry], skipped: int = 0) -> str:
    """Log lines in a box that stays scrolled to the newest line (CSS only).

    ``skipped`` earlier lines (not passed in) are mentioned at the top."""
    lines = []
    if skipped:
        lines.append(
            f'<div style="color:#868e96">… {skipped:,} earlier lines not shown (run.logs() has them all)</div>'
        )
    for entry in entries:
        stamp, text = _log_parts(entry)
        node = f' <span style="color:#7048e8">[{_esc(entry.node_id)}]</span>' if entry.node_id else ""
        lines.append(
            f'<div class="af-log af-log-{entry.level.value}" style="white-space:pre-wrap">'
            f'<span style="color:#868e96">{stamp}</span> '
            f'<span style="color:{_LEVEL_COLORS[entry.level]};font-weight:600">'
            f"{entry.level.value:5}</span>{node} {_esc(text)}</div>"
        )
    if not lines:
        lines.append('<div style="color:#868e96">(no log lines yet)</div>')
    # column-reverse keeps the scroll position at the bottom as lines arrive
    return (
        f'<div class="af-logs" style="max-height:220px;overflow-y:auto;display:flex;'
        f"flex-direction:column-reverse;font-family:{_MONO};font-size:11.5px;"
        f'line-height:1.45;border:1px solid #e9ecef;border-radius:4px;padding:4px 6px">'
        f"<div>{''.join(lines)}</div></div>"
    )


def header_html(info: RunInfo) -> str:
    """Workflow name, run id and timing."""
    when = f"{info.created_at:%Y-%m-%d %H:%M:%S}"
    took = format_seconds(info.duration)
    extra = f" · took {took}" if took else ""
    return (
        f'<span style="font-size:14px;font-weight:700">{_esc(info.workflow)}</span> '
        f'<code style="font-size:11px;color:#495057">{_esc(info.id)}</code> '
        f'<span style="font-size:11px;color:#868e96">created {when}{extra}</span>'
    )


def error_html(info: RunInfo) -> str:
    """The run's error (node, type, message), or empty."""
    if info.error is None:
        return ""
    where = f"node <code>{_esc(info.error.node_id)}</code>: " if info.error.node_id else ""
    return (
        f'<div class="af-error" style="color:#c92a2a;font-size:12px;margin:4px 0">'
        f"{where}<b>{_esc(info.error.type)}</b>: "
        f"{_esc(_clip(_one_line(info.error.message), 1000))}</div>"
    )


def run_html(
    info: RunInfo,
    logs: Sequence[LogEntry],
    svg: str | None,
    *,
    max_logs: int = MAX_LOG_LINES,
    max_rows: int = MAX_TABLE_ROWS,
    skipped: int = 0,
) -> str:
    """A static HTML snapshot of a run: header, badge, progress, error, DAG, nodes, logs.

    Only the last ``max_logs`` entries of ``logs`` are rendered; the others are counted,
    with ``skipped`` more lines that the caller did not pass.
    """
    shown = list(logs[-max_logs:]) if max_logs > 0 else []
    skipped += len(logs) - len(shown)
    dag = f'<div class="af-dag-box" style="overflow:auto;max-height:420px;margin:4px 0">{svg}</div>' if svg else ""
    return (
        f'<div class="af-run" data-run="{_esc(info.id)}" data-status="{info.status.value}" '
        f'style="font-family:{_FONT};'
        f'font-size:13px;max-width:1100px">'
        f'<div style="display:flex;align-items:center;gap:10px;flex-wrap:wrap">{header_html(info)}'
        f"{status_badge(info.status, cancel_requested=info.cancel_requested)}</div>"
        f"{progress_html(info)}{error_html(info)}{dag}"
        f"{nodes_table_html(node_rows(info), limit=max_rows)}"
        f'<div style="margin-top:6px">{logs_html(shown, skipped)}</div></div>'
    )
