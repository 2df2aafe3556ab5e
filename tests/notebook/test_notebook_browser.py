"""The panel in a real front end: JupyterLab (and Notebook 7) in headless Chromium.

A notebook that runs a workflow on the embedded backend and shows a RunPanel is opened
and run from the browser; the test watches the widget go from ``running`` to
``completed``, clicks Cancel on a second, slow run, and saves screenshots under the
test's tmp dir (and in ``$AUTOFLOW_SCREENSHOTS`` when set, which is how
``docs/img/`` is refreshed: ``panel-completed.png`` and ``dag.png``).

Needs Debian's chromium (``/usr/bin/chromium``), and jupyterlab, notebook and playwright
in the environment; never ``playwright install``. Skipped locally without them, failed
under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import chromium, need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "autoflow-test-token"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}


NOTEBOOK_CELLS = [
    "import time\nimport autoflow as af\nfrom autoflow.notebook.panel import RunPanel\n\n"
    "@af.node\ndef load(n: int) -> list[int]:\n    return list(range(n))\n\n"
    "@af.node\ndef crunch(xs: list[int], ctx: af.Context) -> int:\n"
    "    for i in range(12):\n        ctx.log.info(f'step {i}')\n        ctx.check_cancelled()\n"
    "        time.sleep(0.25)\n    return sum(xs)\n\n"
    "@af.node\ndef report(total: int) -> str:\n    return f'total={total}'\n\n"
    "@af.workflow\ndef browser_demo(n: int = 10):\n    return report(crunch(load(n)))\n\n"
    "@af.node\ndef nap(seconds: float, ctx: af.Context) -> float:\n"
    "    ctx.wait(seconds)\n    ctx.check_cancelled()\n    return seconds\n\n"
    "@af.workflow\ndef browser_slow(seconds: float = 120.0):\n    return nap(seconds)\n\n"
    "client = af.Client()",
    "run = client.execute(browser_demo, n=10)\nRunPanel(run)",
    "slow_run = client.execute(browser_slow)\nRunPanel(slow_run)",
    "@af.node\ndef chatter(lines: int, ctx: af.Context) -> int:\n"
    "    for i in range(lines):\n        ctx.log.info(f'line {i}')\n    return lines\n\n"
    "@af.node\ndef part(x: int, i: int) -> int:\n    return x + i\n\n"
    "@af.node\ndef join_all(*xs: int) -> int:\n    return sum(xs)\n\n"
    "@af.workflow\ndef browser_big(lines: int = 10_000):\n"
    "    seed = chatter(lines)\n    return join_all(*[part(seed, i) for i in range(118)])\n\n"
    "big_run = client.execute(browser_big)\nRunPanel(big_run)",
]


@pytest.fixture
def front_end_deps() -> str:
    for module, hint in (
        ("playwright", "pip install playwright (and use Debian's chromium)"),
        ("jupyterlab", "pip install jupyterlab"),
        ("notebook", "pip install notebook"),
        ("ipykernel", "pip install ipykernel"),
    ):
        if importlib.util.find_spec(module) is None:
            need(f"{module} is not installed ({hint})", "browser")
    return chromium()


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path, front_end_deps: str) -> Iterator[tuple[str, Path]]:
    """A private Jupyter server (lab or notebook 7) on a free port, rooted in tmp_path."""
    app = request.param
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    notebook = {
        "cells": [_cell(source) for source in NOTEBOOK_CELLS],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (nb_dir / "panel.ipynb").write_text(json.dumps(notebook))
    # no "get notified about Jupyter news?" toast over the screenshots
    lab_settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    lab_settings.mkdir(parents=True)
    (lab_settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = {
        **os.environ,
        "AUTOFLOW_HOME": str(tmp_path / "home"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    port = _free_port()
    log = (tmp_path / f"jupyter-{app}.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab" if app == "lab" else "notebook",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={nb_dir}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        cwd=nb_dir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its kernels go with it when we stop the group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                exc.close()  # an HTTP error keeps its response (and socket) open
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"jupyter {app} did not start:\n{(tmp_path / f'jupyter-{app}.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        path = "lab/tree/panel.ipynb" if app == "lab" else "notebooks/panel.ipynb"
        yield f"{base}/{path}?token={TOKEN}", tmp_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def _wait_for_kernel_connection(url: str, timeout: float = 60.0) -> None:
    base = url.split("/lab/")[0].split("/notebooks/")[0]
    deadline = time.monotonic() + timeout
    kernels: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/api/kernels?token={TOKEN}", timeout=5) as resp:
                kernels = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 500 while a kernel is being started (a jupyter_server race)
            exc.close()  # it holds the response's socket: close it, or it leaks until gc
            time.sleep(0.2)
            continue
        except OSError:
            time.sleep(0.2)
            continue
        if any(k.get("connections", 0) >= 1 and k.get("execution_state") == "idle" for k in kernels):
            time.sleep(0.5)  # the page finishes its handshake with the kernel
            return
        time.sleep(0.2)
    raise AssertionError(f"no kernel connected to the page within {timeout} s: {kernels}")


def _run_all(page: Any) -> None:
    """Run > Run All Cells, again if the first click was lost (a prompt stays ``[ ]``)."""
    prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # textContent: an off-screen cell of a windowed notebook has no innerText
            if (prompt.text_content() or "").strip() not in ("[ ]:", "[ ]", ""):
                return
            time.sleep(0.2)
    raise AssertionError("Run All Cells did not start the notebook")


@pytest.mark.parametrize("server", ["lab", "notebook"], indirect=True)
def test_panel_goes_live_in_the_browser(server: tuple[str, Path], front_end_deps: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, tmp_path = server
    app = "lab" if "/lab/" in url else "notebook"
    shots = [tmp_path / f"{app}-panel-completed.png", tmp_path / f"{app}-panel-cancelled.png"]
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile
            executable_path=front_end_deps,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=45_000)
            page.goto(url)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            expect(page.locator(".jp-Notebook-cell")).to_have_count(len(NOTEBOOK_CELLS))
            # Run All before the page's kernel connection is up may be dropped: wait for it
            _wait_for_kernel_connection(url)
            expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).to_have_count(1)
            _run_all(page)
            ran_at = time.perf_counter()

            panels = page.locator(".af-panel")
            demo = panels.nth(0)
            expect(demo).to_contain_text("browser_demo")
            # the background thread updates the widget while the run goes on ...
            expect(demo.locator(".af-badge-running")).to_be_visible()
            expect(demo.locator('.af-dag g[data-id="crunch"][data-state="running"]')).to_have_count(1)
            # ... and brings it to the end
            expect(demo.locator(".af-badge-completed")).to_be_visible(timeout=60_000)
            expect(demo.locator(".progress-bar-success")).to_have_count(1)
            expect(demo.locator('.af-dag g[data-state="completed"]')).to_have_count(3)
            expect(demo.locator("tr.af-row")).to_have_count(3)
            expect(demo.locator(".af-log", has_text="run completed")).to_have_count(1)
            expect(demo.locator(".af-log", has_text="[crunch] step 11")).to_have_count(1)
            for button in ("Cancel", "Pause", "Resume"):
                expect(demo.get_by_role("button", name=button)).to_be_disabled()
            demo.scroll_into_view_if_needed()
            demo.screenshot(path=str(shots[0]))

            # a button click travels to the kernel and cancels the run
            slow = panels.nth(1)
            expect(slow).to_contain_text("browser_slow")
            expect(slow.locator(".af-badge-running")).to_be_visible()
            slow.get_by_role("button", name="Cancel").click()
            expect(slow.locator(".af-badge-cancelled")).to_be_visible(timeout=30_000)
            expect(slow.locator(".progress-bar-warning")).to_have_count(1)
            expect(slow.locator('.af-dag g[data-state="cancelled"]')).to_have_count(1)
            slow.scroll_into_view_if_needed()
            slow.screenshot(path=str(shots[1]))

            # 120 nodes and 10,000+ log lines: the page holds only the newest 500 lines
            big = panels.nth(2)
            expect(big).to_contain_text("browser_big")
            expect(big.locator(".af-badge-completed")).to_be_visible(timeout=90_000)
            took = time.perf_counter() - ran_at
            expect(big.locator(".af-dag g.af-node")).to_have_count(120)
            expect(big.locator("tr.af-row")).to_have_count(120)
            expect(big.locator(".af-log")).to_have_count(500)
            expect(big.locator(".af-logs")).to_contain_text("earlier lines not shown")
            started = time.perf_counter()
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(1)))")
            frame = time.perf_counter() - started
            assert frame < 2.0, f"the page took {frame:.2f} s to draw a frame"
            print(
                f"{app}: 4 cells run and the 120-node/10,000-line panel complete after {took:.1f} s; "
                f"next frame {frame * 1000:.0f} ms"
            )
        except Exception:
            page.screenshot(path=str(tmp_path / f"{app}-failure.png"))
            raise
        finally:
            context.close()
    for shot in shots:
        assert shot.stat().st_size > 5_000
    target = os.environ.get("AUTOFLOW_SCREENSHOTS")
    if target and app == "lab":  # docs/img keeps the JupyterLab picture of a finished run
        shutil.copy(shots[0], Path(target) / "panel-completed.png")


def _sample_graph() -> tuple[Any, dict[str, str]]:
    """An ETL-shaped DAG with options, every kind of edge and a mix of states."""
    import networkx as nx

    g = nx.DiGraph(name="etl")
    nodes = {
        "extract": ({"retries": 3, "timeout": 30.0}, "completed"),
        "lookup_users": ({}, "completed"),
        "validate": ({}, "completed"),
        "join": ({"priority": 5}, "completed"),
        "load_warehouse": ({"timeout": 600.0}, "running"),
        "index_search": ({"retries": 5}, "retrying"),
        "daily_stats": ({}, "failed"),
        "alert_oncall": ({}, "queued"),
        "publish": ({}, "pending"),
        "archive_raw": ({}, "skipped"),
    }
    for node_id, (options, _) in nodes.items():
        g.add_node(node_id, type=f"etl.nodes:{node_id}", label=node_id, options=options)
    for u, v, param in [
        ("extract", "validate", "rows"),
        ("validate", "join", "rows"),
        ("lookup_users", "join", "users"),
        ("join", "load_warehouse", "rows"),
        ("join", "index_search", "rows"),
        ("validate", "daily_stats", "rows"),
        ("load_warehouse", "publish", "loaded"),
        ("index_search", "publish", "indexed"),
    ]:
        g.add_edge(u, v, input=param)
    g.add_edge("daily_stats", "alert_oncall", input="error", kind="error")
    g.add_edge("extract", "archive_raw", input="rows", kind="branch")
    return g, {node_id: state for node_id, (_, state) in nodes.items()}


_LAYOUT_PROBLEMS_JS = """
() => {
  const problems = [];
  for (const svg of document.querySelectorAll('svg.af-dag')) {
    const boxes = [...svg.querySelectorAll('g.af-node')].map(g => {
      const r = g.querySelector('rect').getBBox();
      for (const t of g.querySelectorAll('text')) {
        const b = t.getBBox();
        if (b.x < r.x - 0.5 || b.x + b.width > r.x + r.width + 0.5)
          problems.push(`text of ${g.dataset.id} overflows its box`);
      }
      return [g.dataset.id, r];
    });
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const [a, p] = boxes[i], [b, q] = boxes[j];
        if (p.x < q.x + q.width && q.x < p.x + p.width && p.y < q.y + q.height && q.y < p.y + p.height)
          problems.push(`${a} overlaps ${b}`);
      }
  }
  return problems;
}
"""


def test_dag_renders_without_overlaps(tmp_path: Path, front_end_deps: str) -> None:
    """In a real renderer: no two boxes overlap and every label fits its box (normal and
    compact layouts); saves the sample DAG as dag.png."""
    import networkx as nx
    from playwright.sync_api import sync_playwright

    from autoflow.draw import dag_svg

    graph, states = _sample_graph()
    sample = dag_svg(graph, states, title="etl")
    big = nx.gn_graph(150, seed=3).reverse()
    nx.set_node_attributes(big, {n: f"step_{n:03d}_with_a_long_name" for n in big}, "label")
    big = nx.relabel_nodes(big, {n: f"step_{n:03d}_with_a_long_name" for n in big})
    page_html = (
        "<html><body style='margin:0;background:#fff'>"
        f"<div id='sample' style='display:inline-block;padding:8px'>{sample}</div>"
        f"<div id='big'>{dag_svg(big, {n: 'completed' for n in big})}</div></body></html>"
    )
    (tmp_path / "dag.html").write_text(page_html)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=front_end_deps,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto((tmp_path / "dag.html").as_uri())
            assert page.locator("svg.af-dag").count() == 2
            assert page.locator("#sample g.af-node").count() == len(states)
            assert page.locator("#big g.af-node").count() == 150
            assert page.evaluate(_LAYOUT_PROBLEMS_JS) == []
            page.locator("#sample").screenshot(path=str(tmp_path / "dag.png"))
        finally:
            context.close()
    assert (tmp_path / "dag.png").stat().st_size > 5_000
    target = os.environ.get("AUTOFLOW_SCREENSHOTS")
    if target:
        shutil.copy(tmp_path / "dag.png", Path(target) / "dag.png")
