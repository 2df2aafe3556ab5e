"""The notebook experience: the DAG as SVG, run snapshots as HTML, a live ipywidgets panel.

Example::

    from autoflow.notebook import RunPanel, dag_svg

    dag_svg(etl.graph)                 # SVG text of the workflow's DAG
    panel = RunPanel(client.execute(etl, url="https://example.com"))   # live panel

Importing this package (``import autoflow`` does) installs the live panel and the HTML
snapshot as the display hooks of runs; it does not import ipywidgets: :class:`RunPanel` does, and raises an
``ImportError`` that says what to install when it is missing (:func:`show_run` then falls
back to a static HTML snapshot, and to one line of text without IPython).
"""

from autoflow.draw import DagLayout, dag_svg
from autoflow.notebook.html import run_html, run_text
from autoflow.notebook.panel import RunPanel, show_run
from autoflow.notebook.snapshot import run_graph, snapshot_html
from autoflow.run import display_hooks

__all__ = [
    "DagLayout",
    "RunPanel",
    "dag_svg",
    "run_graph",
    "run_html",
    "run_text",
    "show_run",
    "snapshot_html",
]

# Runs display themselves through these hooks (the client never imports widgets).
display_hooks.show = show_run
display_hooks.html = snapshot_html
