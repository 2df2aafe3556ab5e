"""code_execution: the calling convention, errors, limits, options and failing closed."""

from __future__ import annotations

import datetime
import http.server
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import autoflow as af
from autoflow.nodes import code_execution
from autoflow.nodes.sandbox import (
    CodeError,
    CodeLimitExceeded,
    CodeLimits,
    CodeTimeout,
    SandboxUnavailable,
    check_sandbox,
    run_code,
)
from autoflow.nodes.sandbox_bwrap import module_binds
from tests.nodes.sandbox_fixtures import (  # noqa: F401
    MARK_CODE,
    alive,
    marked,
    need_bwrap,
    new_marker,
    wait_until,
    zombies,
)

pytestmark = pytest.mark.usefixtures("need_bwrap")
ROOT = Path(__file__).resolve().parents[2]


# -- calling convention --------------------------------------------------------------------
def test_main_receives_the_data_and_returns_json() -> None:
    out = run_code("def main(data):\n    return {'sum': sum(data), 'n': len(data)}", [1, 2, 3])
    assert out.value == {"sum": 6, "n": 3}
    assert out.sandboxed is True
    assert 0 < out.duration < 30


def test_a_result_variable_or_main_without_arguments() -> None:
    assert run_code("result = [x * 2 for x in data]", [1, 2]).value == [2, 4]
    assert run_code("def main():\n    return data['a']", {"a": None}).value is None
    assert run_code("import json\nresult = json.dumps(data)", {"k": "é"}).value == '{"k": "\\u00e9"}'


def test_large_data_goes_in_and_out() -> None:
    rows = [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(50_000)]  # ~2 MiB of JSON
    out = run_code("result = [r['id'] for r in data if r['id'] % 1000 == 0]", rows, CodeLimits(max_output_kb=4096))
    assert out.value == list(range(0, 50_000, 1000))
    echoed = run_code("result = data", rows, CodeLimits(max_output_kb=4096)).value
    assert echoed == rows


def test_print_output_comes_back_bounded() -> None:
    out = run_code("print('hello', data)\nimport sys\nprint('warn', file=sys.stderr)\nresult = 1", 7)
    assert out.stdout == "hello 7\nwarn\n"
    flood = run_code("for i in range(100000):\n    print('line', i)\nresult = 1")
    assert len(flood.stdout) < 70_000
    assert flood.stdout.startswith("line 0\n") and "more characters of output dropped" in flood.stdout


def test_an_error_shows_the_users_traceback_only() -> None:
    code = "def helper(x):\n    return 1 / x\n\ndef main(data):\n    return helper(data)\n"
    with pytest.raises(CodeError) as caught:
        run_code(code, 0)
    error = caught.value
    assert error.error_type == "ZeroDivisionError" and error.line == 2
    assert str(error).startswith("ZeroDivisionError at line 2 of the code: division by zero")
    assert 'File "<code>", line 5, in main' in error.user_traceback
    assert "return 1 / x" in error.user_traceback
    assert "runner" not in str(error)  # no frame of the sandbox's own script


def test_an_error_message_is_redacted() -> None:
    code = "def main(data):\n    raise ValueError(f'cannot log in to redis://app:{data}@db:6379 with password={data}')"
    with pytest.raises(CodeError) as caught:
        run_code(code, "hunter2-s3cret")
    assert "hunter2-s3cret" not in str(caught.value) and "redis://app:***@db:6379" in str(caught.value)


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(CodeError) as caught:
        run_code("x = 1\ndef main(data)\n    return x")
    assert caught.value.error_type == "SyntaxError" and caught.value.line == 2
    assert "def main(data)" in caught.value.user_traceback


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("result = {1, 2}", "the result is not JSON: Object of type set"),
        ("result = float('nan')", "the result is not JSON"),
        ("x = 1", "defines neither a function main(data) nor a variable result"),
        ("import sys\nsys.exit(3)", "the code called exit(3)"),
    ],
)
def test_results_that_are_not_json_or_missing_are_refused(code: str, expected: str) -> None:
    with pytest.raises(CodeError, match=re.escape(expected)):
        run_code(code)


def test_the_output_is_bounded() -> None:
    with pytest.raises(CodeError, match="more than max_output_kb=16"):
        run_code("result = 'x' * 20000", limits=CodeLimits(max_output_kb=16))
    # Writing around the runner straight into its reply pipe: killed at the bound.
    flood = "import os\nwhile True:\n    os.write(3, b'x' * 65536)\n"
    with pytest.raises(CodeLimitExceeded) as caught:
        run_code(flood, limits=CodeLimits(max_output_kb=16, timeout=20))
    assert caught.value.limit == "max_output_kb"


# -- options -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"memory_mb": 1}, "memory_mb"),
        ({"timeout": 0}, "timeout"),
        ({"cpu_seconds": 10**9}, "cpu_seconds"),
        ({"max_processes": 0}, "max_processes"),
        ({"network": "loopback"}, "network"),
        ({"allowed_modules": "numpy"}, "allowed_modules"),
        ({"tmp_mb": True}, "tmp_mb"),
    ],
)
def test_bad_limits_are_refused_by_name(changes: dict[str, object], field: str) -> None:
    with pytest.raises(af.InputError, match=field):
        CodeLimits(**changes)  # type: ignore[arg-type]


def test_bad_input_is_refused_before_anything_runs() -> None:
    with pytest.raises(af.InputError, match="'code' must be a non-empty string"):
        run_code("   ")
    with pytest.raises(af.InputError, match="not valid JSON"):
        run_code("result = 1", float("inf"))
    with pytest.raises(af.InputError, match="not valid JSON"):
        run_code("result = 1", {"when": object()})
    assert run_code("result = data", {"day": datetime.date(2026, 1, 2)}).value == {"day": "2026-01-02"}
    with pytest.raises(af.InputError, match="not installed where the worker runs"):
        run_code("result = 1", limits=CodeLimits(allowed_modules=("no_such_module_xyz",)))
    with pytest.raises(af.InputError, match="not a top-level module name"):
        module_binds(["os.path"])
    with pytest.raises(af.InputError, match="'tests' is not an installed package"):
        module_binds(["tests"])  # on the worker's path, not installed: could hold its settings


def test_a_module_installed_under_tmp_is_visible_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout's virtualenv may live under /tmp, which the sandbox (and a root worker's
    first stage) replace with an empty tmpfs: allowed modules there must still be shown."""
    assert str(tmp_path).startswith("/tmp/")
    site = tmp_path / "venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "af_tmp_probe.py").write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(site))
    code = "import af_tmp_probe\nresult = af_tmp_probe.ANSWER"
    assert run_code(code, limits=CodeLimits(allowed_modules=("af_tmp_probe",))).value == 42
    with pytest.raises(CodeError, match="ModuleNotFoundError"):
        run_code(code)  # not allowed: not there


def test_allowed_modules_are_the_only_third_party_code_inside() -> None:
    probe = textwrap.dedent(
        """
        import importlib
        def main(data):
            out = {}
            for name in data:
                try:
                    importlib.import_module(name)
                    out[name] = "ok"
                except ImportError as exc:
                    out[name] = type(exc).__name__
            return out
        """
    )
    names = ["typing_extensions", "annotated_types", "pydantic", "autoflow", "json"]
    closed = run_code(probe, names).value
    assert closed == {n: "ModuleNotFoundError" for n in names[:4]} | {"json": "ok"}
    opened = run_code(probe, names, CodeLimits(allowed_modules=("typing_extensions", "annotated_types", "json"))).value
    assert opened == {
        "typing_extensions": "ok",  # a single-file module
        "annotated_types": "ok",  # a package
        "pydantic": "ModuleNotFoundError",
        "autoflow": "ModuleNotFoundError",
        "json": "ok",
    }


@pytest.fixture
def http_server() -> Iterator[int]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from the host")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_network_is_none_unless_host_is_asked_for(http_server: int) -> None:
    fetch = textwrap.dedent(
        """
        import urllib.request
        def main(port):
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError as exc:
                return type(getattr(exc, "reason", exc)).__name__
        """
    )
    assert run_code(fetch, http_server).value == "ConnectionRefusedError"
    assert run_code(fetch, http_server, CodeLimits(network="host")).value == "hello from the host"


# -- killing -------------------------------------------------------------------------------
def test_cancellation_kills_the_whole_sandbox_within_a_second() -> None:
    marker, cancel = new_marker(), threading.Event()
    code = MARK_CODE + "import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(60)\n"
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            run_code(code, {"marker": marker}, CodeLimits(timeout=60), cancelled=cancel.is_set)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: len(marked(marker)) == 2, 20, "the sandbox's two processes")
    processes = marked(marker)
    started = time.monotonic()
    cancel.set()
    thread.join(5)
    assert isinstance(outcome[0], af.NodeCancelled)
    assert time.monotonic() - started < 1.0
    assert not alive(processes) and not zombies(marker)


def test_the_wall_clock_timeout_kills_the_code() -> None:
    marker = new_marker()
    started = time.monotonic()
    with pytest.raises(CodeTimeout, match=r"longer than its timeout of 0\.5s"):
        run_code(MARK_CODE + "while True:\n    pass\n", {"marker": marker}, CodeLimits(timeout=0.5))
    assert time.monotonic() - started < 3
    assert not marked(marker) and not zombies(marker)  # gone, and reaped, before run_code returned
    with pytest.raises(CodeTimeout, match="the node's timeout ran out"):
        run_code("import time\ntime.sleep(30)", limits=CodeLimits(timeout=30), time_limit=0.3)


def test_the_cpu_limit_ends_a_busy_loop() -> None:
    with pytest.raises(CodeLimitExceeded) as caught:
        run_code("while True:\n    pass\n", limits=CodeLimits(cpu_seconds=1, timeout=30))
    assert caught.value.limit == "cpu_seconds"
    assert "more than 1 s of CPU time" in str(caught.value)


# -- failing closed ------------------------------------------------------------------------
def test_without_bwrap_the_node_refuses_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFLOW_BWRAP", "/nonexistent/bwrap")
    assert check_sandbox().available is False
    with pytest.raises(SandboxUnavailable) as caught:
        run_code("result = 1")
    message = str(caught.value)
    assert "bubblewrap (bwrap) was not found" in message
    assert "apt-get install bubblewrap" in message and "AUTOFLOW_ALLOW_UNSANDBOXED_CODE=1" in message

    @af.workflow(name="code_no_bwrap")
    def flow(x: int):
        return code_execution(code="result = data", data=x)

    with af.Client(immediate=True) as client, pytest.raises(af.RunFailed) as failed:
        client.execute(flow, x=1).result(timeout=30)
    assert failed.value.error_type == "SandboxUnavailable"


#: Runs in an environment where user namespaces cannot be created (a real bwrap with
#: --disable-userns around it), as in a container whose seccomp profile forbids them.
_NO_USERNS = textwrap.dedent(
    """
    import json, os
    import autoflow as af
    from autoflow.nodes import code_execution
    from autoflow.nodes.sandbox import check_sandbox

    @af.workflow(name="code_no_userns")
    def flow(x: int):
        return code_execution(code="import os\\nresult = [data * 2, os.getuid()]", data=x)

    report = {"problem": check_sandbox().problem}
    with af.Client(immediate=True) as client:
        run = client.execute(flow, x=21)
        info = run.wait(timeout=60)
        report["status"] = info.status.value
        report["output"] = info.output
        report["error"] = info.error.message if info.error else None
        report["logs"] = [entry.message for entry in run.logs()]
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("allowed", [False, True])
def test_where_namespaces_are_forbidden_only_an_explicit_setting_runs_unsandboxed(
    allowed: bool, tmp_path: Path
) -> None:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    env = {"PATH": os.environ["PATH"], "AUTOFLOW_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    if allowed:
        env["AUTOFLOW_ALLOW_UNSANDBOXED_CODE"] = "1"
    jail = [bwrap, "--unshare-user", "--disable-userns", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    done = subprocess.run(
        [*jail, sys.executable, "-c", _NO_USERNS], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    report = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert "cannot create a sandbox here" in report["problem"]
    if allowed:
        assert report["status"] == "completed" and report["output"][0] == 42
        assert any("WITHOUT a sandbox" in line for line in report["logs"])
    else:
        assert report["status"] == "failed"
        assert "cannot sandbox the code" in report["error"] and "apt-get install bubblewrap" in report["error"]
