"""The pure parts of the sandbox, without bubblewrap: command lines, limits, the runner."""

from __future__ import annotations

import io
import json
import sys

from autoflow.nodes import sandbox_runner
from autoflow.nodes.sandbox import CodeLimits
from autoflow.nodes.sandbox_bwrap import RUNNER_PATH, SANDBOX_UID, drop_root_argv, sandbox_argv


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == flag]


def test_the_sandbox_unshares_everything_and_drops_everything() -> None:
    argv = sandbox_argv(
        "/usr/bin/bwrap",
        "/opt/py/bin/python3.11",
        binds=[("/opt/py", "/opt/py")],
        tmp_bytes=1 << 20,
        share_net=False,
        runner_fd=7,
        runner_args=["{}"],
    )
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--as-pid-1" in argv and "--clearenv" in argv and "--share-net" not in argv
    assert argv[argv.index("--uid") + 1] == argv[argv.index("--gid") + 1] == str(SANDBOX_UID)
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert ("/opt/py", "/opt/py") in _pairs(argv, "--ro-bind")
    assert not _pairs(argv, "--bind")  # nothing of the host is writable
    assert argv[argv.index("--ro-bind-data") + 1 : argv.index("--ro-bind-data") + 3] == ["7", RUNNER_PATH]
    assert argv[-6:] == ["/opt/py/bin/python3.11", "-I", "-S", "-B", RUNNER_PATH, "{}"]
    assert argv[argv.index("--remount-ro", argv.index("--ro-bind-data")) + 1] == "/"  # the root, last
    shared = sandbox_argv("b", "p", binds=[], tmp_bytes=1, share_net=True, runner_fd=3, runner_args=[])
    assert shared[1:3] == ["--unshare-all", "--share-net"]


def test_the_root_stage_shows_only_what_the_sandbox_binds() -> None:
    prefix = "/root/.pyenv/versions/3.11.7"
    sources = [prefix, f"{prefix}/lib/x.py", "/srv/site/mod", "/usr/bin/bwrap"]
    argv = drop_root_argv("/usr/bin/bwrap", "/usr/bin/setpriv", sources)
    binds = _pairs(argv, "--ro-bind")
    assert ("/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7") in binds
    assert ("/srv/site/mod", "/srv/site/mod") in binds
    assert not [b for b in binds if b[0].endswith("x.py") or b[0] == "/usr/bin/bwrap"]  # inside a bind already
    made = [argv[i + 3] for i, arg in enumerate(argv) if arg == "--perms" and argv[i + 2] == "--dir"]
    assert made == ["/root", "/root/.pyenv", "/root/.pyenv/versions", "/srv", "/srv/site"]
    assert all(argv[i + 1] == "0755" for i, arg in enumerate(argv) if arg == "--perms")
    tail = argv[argv.index("/usr/bin/setpriv") :]
    assert f"--reuid={SANDBOX_UID}" in tail and "--clear-groups" in tail and "--pdeathsig=KILL" in tail
    assert argv[1:4] == ["--die-with-parent", "--cap-add", "CAP_KILL"]


def test_limits_for_the_runner() -> None:
    sandboxed = CodeLimits(max_processes=4).for_runner(True)
    assert sandboxed["max_processes"] == 4 and sandboxed["die_with_parent"] is False and sandboxed["site"] is None
    plain = CodeLimits(allowed_modules=("numpy",)).for_runner(False)
    assert plain["max_processes"] is None and plain["die_with_parent"] is True and plain["site"] is None
    assert CodeLimits(allowed_modules=["numpy"]).allowed_modules == ("numpy",)  # type: ignore[arg-type]


def _run(code: str, data: object = None, **limits: object) -> dict[str, object]:
    settings = {"memory_mb": 256, "cpu_seconds": 5, "max_file_mb": 1, "max_output_kb": 1, **limits}
    out = io.BytesIO()
    saved = sys.stdout, sys.stderr  # the runner captures them, as it does inside the sandbox
    try:
        sandbox_runner.run(settings, io.BytesIO(json.dumps({"code": code, "data": data}).encode()), out)
    finally:
        sys.stdout, sys.stderr = saved
    reply: dict[str, object] = json.loads(out.getvalue())
    return reply


def test_the_runner_reports_results_errors_and_prints() -> None:
    done = _run("print('hi')\nresult = data + 1", 1)
    assert (done["ok"], done["stdout"], done["result"]) == (True, "hi\n", 2)
    assert isinstance(done["cpu"], float)
    failed = _run("def main(data):\n    raise KeyError(data)", "k")
    error = failed["error"]
    assert isinstance(error, dict)
    assert error["type"] == "KeyError" and error["line"] == 2 and failed["result"] is None
    assert error["traceback"].startswith('Traceback (most recent call last):\n  File "<code>", line 2, in main')
    too_big = _run("result = 'x' * 2000")
    assert isinstance(too_big["error"], dict) and "more than max_output_kb=1" in str(too_big["error"]["message"])
