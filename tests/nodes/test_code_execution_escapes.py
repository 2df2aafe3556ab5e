"""The escape corpus: what hostile code tries, and what the sandbox lets it reach.

Each payload runs in a real sandbox and reports what it found; the test then checks the
host side too (the Redis key was not written, the file not created, no process left).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

import autoflow as af
from autoflow.nodes import code_execution
from autoflow.nodes.sandbox import CodeLimitExceeded, CodeLimits, CodeTimeout, check_sandbox, run_code
from autoflow.nodes.sandbox_bwrap import SANDBOX_UID
from tests.nodes.sandbox_fixtures import (  # noqa: F401
    MARK_CODE,
    alive,
    children_named,
    marked,
    need_bwrap,
    need_service,
    new_marker,
    plant_canary,
    wait_until,
    zombies,
)

pytestmark = pytest.mark.usefixtures("need_bwrap")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    return plant_canary(monkeypatch)


def test_the_subclass_walk_reaches_os_system_but_only_inside(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = textwrap.dedent(
        """
        def main(target):
            wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "_wrap_close"][0]
            system = wrap.__init__.__globals__["system"]
            status = system(f"id > /tmp/id; cat /etc/shadow > /tmp/shadow 2>&1; touch {target} 2> /tmp/touch")
            return {
                "status": status,
                "id": open("/tmp/id").read(),
                "shadow": open("/tmp/shadow").read(),
                "touch": open("/tmp/touch").read(),
            }
        """
    )
    found = run_code(payload, str(target)).value
    assert found["id"].startswith("uid=65534 gid=65534")  # nobody, not the worker's user
    assert "No such file or directory" in found["shadow"]  # there is no /etc
    assert "No such file or directory" in found["touch"]
    assert not target.exists()


def test_shadow_and_the_workers_secrets_are_out_of_reach(canary: str) -> None:
    home = os.environ["AUTOFLOW_HOME"]
    payload = textwrap.dedent(
        """
        import os

        def read(path, limit=1 << 20):
            try:
                with open(path, "rb") as f:
                    return f.read(limit)
            except OSError as exc:
                return type(exc).__name__.encode()

        def main(data):
            out = {"shadow": read("/etc/shadow").decode(), "home": read(data["home"] + "/secret.txt").decode()}
            out["top"] = sorted(os.listdir("/"))
            blobs = [repr(dict(os.environ)).encode()]
            for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
                blobs += [read(f"/proc/{pid}/environ"), read(f"/proc/{pid}/cmdline")]
            skip = ("/usr", "/proc", "/sys", "/dev", data["prefix"])
            seen = []
            for top in out["top"]:
                path = "/" + top
                if os.path.islink(path) or path in skip:
                    continue
                for folder, dirs, files in os.walk(path):
                    dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
                    for name in files:
                        seen.append(os.path.join(folder, name))
                        blobs.append(read(os.path.join(folder, name)))
            out["files"] = seen
            out["leaked"] = any(data["canary"].encode() in blob for blob in blobs)
            return out
        """
    )
    prefix = os.path.dirname(os.path.dirname(check_sandbox().python))
    found = run_code(payload, {"home": home, "prefix": prefix, "canary": canary}).value
    assert found["shadow"] == "FileNotFoundError"
    assert found["home"] == "FileNotFoundError"
    assert found["leaked"] is False
    expected = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "proc", "dev", "tmp", "run"}
    assert set(found["top"]) <= expected | {prefix.split("/")[1]}
    assert found["files"] == ["/run/autoflow/runner.py"]  # besides /usr and the interpreter: nothing


def test_a_run_that_hunts_for_the_secret_stores_no_trace_of_it(canary: str, settings: af.Settings) -> None:
    payload = textwrap.dedent(
        """
        import os
        def main(data):
            print("env:", dict(os.environ))
            init = open("/proc/1/environ", "rb").read().decode(errors="replace")
            raise RuntimeError(f"found: {init} {os.environ.get('AUTOFLOW_SECRET')}")
        """
    )

    @af.workflow(name="code_secret_hunt")
    def hunt(x: int):
        return code_execution(code=payload, data=x)

    with af.Client(settings=settings.model_copy(update={"secret": SecretStr(canary)})) as client:
        run = client.execute(hunt, x=1)
        with pytest.raises(af.RunFailed) as failed:
            run.result(timeout=60)
        stored = json.dumps(run.status().model_dump(mode="json")) + json.dumps(
            [entry.model_dump(mode="json") for entry in run.logs()]
        )
    assert failed.value.error_type == "CodeError" and "found:" in failed.value.message
    assert "env: {'PATH'" in stored
    assert canary not in stored and canary not in str(failed.value) and canary not in failed.value.traceback


def _redis_has(url: str, key: str) -> bool:
    """Whether ``key`` exists on the Redis at ``url``, which the host must reach (the control)."""
    with redis.Redis.from_url(url, socket_timeout=2) as client:
        client.ping()
        return bool(client.exists(key))


def test_loopback_redis_postgres_and_mariadb_are_unreachable(redis_url: str) -> None:
    key = f"pwned-{uuid.uuid4().hex}"
    test_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    ports = {"redis-test": test_port, "redis": 6379, "postgres": 5432, "mariadb": 3306}
    payload = textwrap.dedent(
        """
        import socket
        def main(data):
            out = {}
            for name, port in data["ports"].items():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                        s.sendall(f"SET {data['key']} 1\\r\\n".encode())
                        out[name] = "connected"
                except OSError as exc:
                    out[name] = type(exc).__name__
            return out
        """
    )
    found = run_code(payload, {"ports": ports, "key": key}).value
    assert found == {name: "ConnectionRefusedError" for name in ports}
    # The services are there for the host, and the key was written nowhere.
    assert not _redis_has(redis_url, key)
    for name, port in (("redis", 6379), ("postgres", 5432), ("mariadb", 3306)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            need_service(f"{name} is not listening on 127.0.0.1:{port}")
    assert not _redis_has("redis://127.0.0.1:6379/0", key)


def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing() -> None:
    marker = new_marker()
    payload = MARK_CODE + textwrap.dedent(
        """
        import os, time
        forks = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(600)  # children stay, holding their slot
                forks += 1
        except OSError as exc:
            result = [forks, type(exc).__name__]
        """
    )
    forks, error = run_code(payload, {"marker": marker}, CodeLimits(max_processes=8)).value
    assert (forks, error) == (7, "BlockingIOError")  # the interpreter plus seven
    assert not marked(marker) and not zombies(marker)


def test_a_memory_bomb_hits_the_memory_limit() -> None:
    for bomb in ("x = bytearray(10**10)", "x = [b'x' * 10**6 for _ in range(10**4)]"):
        with pytest.raises(CodeLimitExceeded) as caught:
            run_code(bomb, limits=CodeLimits(memory_mb=128))
        assert caught.value.limit == "memory_mb" and "128 MiB" in str(caught.value)


def test_an_infinite_loop_is_killed_at_the_timeout() -> None:
    marker = new_marker()
    with pytest.raises(CodeTimeout):
        run_code(MARK_CODE + "while True:\n    pass\n", {"marker": marker}, CodeLimits(timeout=0.5))
    assert not marked(marker) and not zombies(marker)


def test_writing_2_gib_fails_early_everywhere() -> None:
    payload = textwrap.dedent(
        """
        import os
        def attempt(path, size, count):
            try:
                for i in range(count):
                    with open(f"{path}{i}", "wb") as f:
                        for _ in range(size):
                            f.write(b"x" * (1 << 20))
                return "wrote all"
            except OSError as exc:
                return os.strerror(exc.errno)
        def main(data):
            return {
                "one 2 GiB file": attempt("/tmp/big", 2048, 1),
                "many small files": attempt("/tmp/part", 8, 256),
                "shared memory": attempt("/dev/shm/part", 8, 256),
                "root": attempt("/big", 1, 1),
                "usr": attempt("/usr/big", 1, 1),
            }
        """
    )
    found = run_code(payload, limits=CodeLimits(max_file_mb=16, tmp_mb=64)).value
    assert found == {
        "one 2 GiB file": "File too large",  # RLIMIT_FSIZE
        "many small files": "No space left on device",  # the size of /tmp
        "shared memory": "No space left on device",
        "root": "Read-only file system",
        "usr": "Read-only file system",
    }


def test_the_environment_does_not_leak(canary: str) -> None:
    found = run_code("import os\nresult = dict(os.environ)").value
    assert set(found) <= {"PATH", "HOME", "LANG", "PWD", "LC_CTYPE"}
    assert canary not in json.dumps(found)


def test_no_capabilities_no_new_privileges_no_new_namespaces() -> None:
    payload = textwrap.dedent(
        """
        import ctypes, os
        def main(data):
            lines = open("/proc/self/status").read().splitlines()
            status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
            libc = ctypes.CDLL(None, use_errno=True)
            unshared = libc.unshare(0x10000000)  # CLONE_NEWUSER
            return {"eff": status["CapEff"], "bnd": status["CapBnd"], "nnp": status["NoNewPrivs"],
                    "unshare": [unshared, os.strerror(ctypes.get_errno())], "uid": os.getuid()}
        """
    )
    found = run_code(payload).value
    assert found["eff"] == found["bnd"] == "0000000000000000"
    assert found["nnp"] == "1" and found["uid"] == 65534
    assert found["unshare"][0] == -1


def test_the_worker_cannot_be_traced_or_signalled() -> None:
    payload = textwrap.dedent(
        """
        import ctypes, os, signal
        def main(pid):
            libc = ctypes.CDLL(None, use_errno=True)
            traced = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
            trace_error = os.strerror(ctypes.get_errno())
            try:
                os.kill(pid, signal.SIGKILL)
                killed = "sent"
            except OSError as exc:
                killed = type(exc).__name__
            return {"ptrace": [traced, trace_error], "kill": killed, "visible": os.path.exists(f"/proc/{pid}")}
        """
    )
    found = run_code(payload, os.getpid()).value
    assert found == {"ptrace": [-1, "No such process"], "kill": "ProcessLookupError", "visible": False}


_WORKER = textwrap.dedent(
    """
    import sys
    from autoflow.nodes.sandbox import CodeLimits, run_code
    code = "open('/proc/self/comm', 'w').write(data)\\nimport os, time\\n"
    code += "if os.fork() == 0:\\n    os.setsid()\\ntime.sleep(600)"
    run_code(code, sys.argv[1], CodeLimits(timeout=600))
    """
)


def test_the_sandbox_does_not_outlive_its_worker() -> None:
    marker = new_marker()
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, marker], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    try:
        wait_until(lambda: len(marked(marker)) == 2, 30, "the sandbox's two processes")
        sandbox = marked(marker) | children_named(worker.pid, "bwrap")
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies; nothing tells the sandbox
        worker.wait(10)
        took = wait_until(lambda: not alive(sandbox), 5, "the sandbox to die with its worker")
        assert took < 1.0
    finally:
        worker.kill()
        worker.wait(10)


_NON_ROOT_WORKER = textwrap.dedent(
    """
    import json, sys
    from autoflow.nodes.sandbox import CodeLimits, check_sandbox, run_code
    forks = "import os, time\\nn = 0\\ntry:\\n    while True:\\n        if os.fork() == 0:\\n"
    forks += "            time.sleep(30)\\n        n += 1\\nexcept OSError:\\n    result = n"
    report = {
        "drops_root": check_sandbox().drops_root,
        "uid": run_code("import os\\nresult = os.getuid()").value,
        "forks": run_code(forks, limits=CodeLimits(max_processes=4)).value,
    }
    print(json.dumps(report), flush=True)
    sleeper = "open('/proc/self/comm', 'w').write(data)\\nimport time\\ntime.sleep(600)"
    run_code(sleeper, sys.argv[1], CodeLimits(timeout=600))
    """
)


def _hidden_ancestor(path: str) -> str | None:
    """The one ancestor of ``path`` that other users cannot enter (``/root`` for a pyenv
    interpreter installed by root), or None if they can enter them all."""
    closed = [str(p) for p in Path(path).parents if p != Path("/") and not os.stat(p).st_mode & 0o001]
    if len(closed) > 1:
        pytest.skip(f"{path} sits under several directories closed to other users: {closed}")
    return closed[0] if closed else None


def test_a_non_root_worker_runs_one_stage_with_its_limits_and_takes_it_down(tmp_path: Path) -> None:
    """The recommended production setup (CI runs as root): the worker as an ordinary user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a worker as another user")
    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)
    home.chmod(0o777)
    mounts = ""
    hidden = _hidden_ancestor(sys.base_prefix)
    if hidden is not None:  # show `nobody` the interpreter where it is, in a mount namespace of the test's own
        inner = Path(sys.base_prefix).relative_to(hidden).parts[0]
        shown = tmp_path / "shown"
        (shown / inner).mkdir(parents=True)
        shown.chmod(0o755)
        mounts = f"mount --bind {hidden}/{inner} {shown}/{inner} && mount --rbind {shown} {hidden} && "
    for path in (ROOT, Path(sys.executable).parent):
        if _hidden_ancestor(str(path / "x")) is not None:
            pytest.skip(f"{path} is closed to other users")
    marker = new_marker()
    env = f"env -i PATH=/usr/bin:/bin HOME={home} AUTOFLOW_HOME={home}"
    drop = f"setpriv --reuid={SANDBOX_UID} --regid={SANDBOX_UID} --clear-groups"
    script = f'{mounts}exec {drop} {env} {sys.executable} -c "$0" {marker}'
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, _NON_ROOT_WORKER],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        report = json.loads(worker.stdout.readline())
        assert report == {"drops_root": False, "uid": 65534, "forks": 3}  # RLIMIT_NPROC holds: 3 + the interpreter
        wait_until(lambda: bool(marked(marker)), 30, "the sandbox to start")
        sandbox = marked(marker) | children_named(worker.pid, "bwrap")
        os.kill(worker.pid, signal.SIGKILL)  # unshare, sh, setpriv and env all exec'd: this is the worker
        worker.wait(10)
        assert wait_until(lambda: not alive(sandbox), 5, "the sandbox to die with its worker") < 1.0
    finally:
        worker.kill()
        worker.wait(10)
        if worker.stdout is not None:
            worker.stdout.close()
