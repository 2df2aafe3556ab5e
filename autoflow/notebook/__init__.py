"""The notebook experience: the DAG as SVG, run snapshots as HTML, a live ipywidgets panel.

Example::

    from autoflow.notebook import RunPanel, dag_svg

    dag_svg(etl.graph)                 # SVG text of the workflow's DAG
    panel = RunPanel(client.execute(etl, url="https://example.com"))   # live panel

Importing this package does not import ipywidgets; :class:`RunPanel` does, and raises an
``ImportError`` that says what to install when it is missing (:func:`show_run` then falls
back to a static HTML snapshot, and to one line of text without IPython).
"""

from autoflow.notebook.html import run_html, run_text
from autoflow.notebook.panel import RunPanel, show_run
from autoflow.notebook.snapshot import run_graph, snapshot_html
from autoflow.notebook.svg import DagLayout, dag_svg

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
