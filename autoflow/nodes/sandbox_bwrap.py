"""The bubblewrap command lines of the code sandbox (pure: values in, argv out).

:func:`sandbox_argv` is the sandbox itself: every namespace unshared (user, PID, network,
mount, IPC, UTS, cgroup), uid/gid 65534 with no capabilities and no further user
namespaces, a read-only root holding only ``/usr`` (with ``/bin``, ``/lib``... as on the
host), the interpreter's prefix and the allowed modules, fresh ``/proc`` and ``/dev``,
size-capped ``/tmp`` and ``/dev/shm``, a cleared environment, a new session, and death
with its parent. :func:`drop_root_argv` is the stage a root worker puts in front of it.

Example::

    argv = sandbox_argv("/usr/bin/bwrap", "/usr/bin/python3.11", binds=[], tmp_bytes=64 << 20,
                        share_net=False, runner_fd=5, runner_args=["{}"])
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from autoflow.errors import InputError

__all__ = [
    "NETWORK_FILES",
    "RUNNER_PATH",
    "SANDBOX_UID",
    "SITE_PATH",
    "drop_root_argv",
    "module_binds",
    "python_prefix",
    "sandbox_argv",
    "visible",
]

#: nobody/nogroup: the sandbox's uid and gid inside and, for root workers, outside too.
SANDBOX_UID = 65534
#: Where the runner script and the allowed modules appear inside the sandbox.
RUNNER_PATH = "/run/autoflow/runner.py"
SITE_PATH = "/run/autoflow/site"
#: Host files bound read-only with ``network="host"`` (name resolution, CA certificates).
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/ssl", "/etc/pki")

_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _top_level(args: list[str]) -> None:
    """/usr, and /bin, /lib, ... as on the host: symlinks (merged /usr) or read-only binds."""
    args += ["--ro-bind", "/usr", "/usr"]
    for path in _TOP_LEVEL:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]


def visible(path: str) -> bool:
    """Whether ``path`` is inside what every sandbox binds anyway (``/usr``, ``/lib``...)."""
    return path == "/usr" or path.startswith("/usr/") or any(path.startswith(p + "/") for p in _TOP_LEVEL)


def python_prefix(python: str) -> str:
    """The installation prefix of an interpreter at ``<prefix>/bin/pythonX.Y``."""
    return os.path.dirname(os.path.dirname(python))


def module_binds(names: Sequence[str]) -> list[tuple[str, str]]:
    """``(host path, sandbox path)`` of each allowed third-party module (a package
    directory or a single file, installed in a ``site-packages`` directory) and of the
    shared libraries its wheel vendors. The standard library needs no bind."""
    binds: list[tuple[str, str]] = []
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.match(name):
            raise InputError(f"code_execution: allowed_modules: {name!r} is not a top-level module name")
        if name in sys.stdlib_module_names:
            continue  # the standard library is always there
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise InputError(
                f"code_execution: allowed_modules names {name!r}, which is not installed where the worker runs"
            )
        locations = list(spec.submodule_search_locations or [])
        if len(locations) > 1 or (not locations and not spec.origin) or spec.origin in ("built-in", "frozen"):
            raise InputError(f"code_execution: allowed_modules: {name!r} is not a plain module or package")
        source = os.path.realpath(locations[0] if locations else str(spec.origin))
        if os.path.basename(os.path.dirname(source)) not in ("site-packages", "dist-packages"):
            # Only installed distributions: a module on the worker's own path (its working
            # directory, PYTHONPATH) could be a settings file holding its secrets.
            raise InputError(
                f"code_execution: allowed_modules: {name!r} is not an installed package (it is at {source})"
            )
        binds.append((source, f"{SITE_PATH}/{os.path.basename(source)}"))
        vendored = os.path.join(os.path.dirname(source), f"{name}.libs")
        if os.path.isdir(vendored):
            binds.append((os.path.realpath(vendored), f"{SITE_PATH}/{name}.libs"))
    return binds


def sandbox_argv(
    bwrap: str,
    python: str,
    *,
    binds: Sequence[tuple[str, str]],
    tmp_bytes: int,
    share_net: bool,
    runner_fd: int,
    runner_args: Sequence[str],
) -> list[str]:
    """The sandbox: ``python -I -S -B RUNNER runner_args`` under bwrap, the runner's text
    read from ``runner_fd``, each ``(source, target)`` of ``binds`` read-only."""
    args = [bwrap, "--unshare-all"]
    if share_net:
        args.append("--share-net")
    uid = str(SANDBOX_UID)
    args += ["--unshare-user", "--uid", uid, "--gid", uid, "--disable-userns", "--cap-drop", "ALL"]
    # --as-pid-1: the interpreter is the namespace's init; bwrap's own init would be left a zombie.
    args += ["--die-with-parent", "--new-session", "--as-pid-1", "--hostname", "sandbox"]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    args += ["--setenv", "LANG", "C.UTF-8"]
    _top_level(args)
    tmp = str(tmp_bytes)
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    args += ["--size", tmp, "--tmpfs", "/dev/shm", "--size", tmp, "--tmpfs", "/tmp"]
    # The binds come after the tmpfs mounts: an interpreter or a module that lives under
    # /tmp (a checkout's virtualenv) is then shown on top of the empty /tmp, not hidden.
    for source, target in binds:
        args += ["--ro-bind", source, target]
    args += ["--ro-bind-data", str(runner_fd), RUNNER_PATH, "--chdir", "/tmp", "--remount-ro", "/"]
    return [*args, python, "-I", "-S", "-B", RUNNER_PATH, *runner_args]


def drop_root_argv(bwrap: str, setpriv: str, sources: Sequence[str]) -> list[str]:
    """For a root worker, the stage in front of :func:`sandbox_argv`: a privileged bwrap
    that shows the host paths the sandbox binds (every directory above them traversable,
    e.g. an interpreter under ``/root``), then ``setpriv`` to the real user ``nobody`` with
    no capabilities. The sandbox then runs as ``nobody`` outside its namespace too, so
    ``RLIMIT_NPROC`` applies (the kernel exempts uid 0) and an escape lands on ``nobody``.

    Death with the worker must cross the change of user: a parent-death signal is sent
    with the dying parent's credentials, and bwrap's monitor (root without capabilities)
    may not signal ``nobody``. So a shell holding CAP_KILL stays between the two: it dies
    with the outer bwrap (same user), and the inner bwrap dies with it."""
    args = [bwrap, "--die-with-parent", "--cap-add", "CAP_KILL"]
    _top_level(args)
    # The sandbox mounts a new /proc, which the kernel allows only where a full one is
    # visible. /tmp first: sources under /tmp (a virtualenv there) are bound on top of it.
    args += ["--bind", "/proc", "/proc", "--dev", "/dev", "--size", str(1 << 20), "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    shown: list[str] = []
    for source in sorted(set(sources)):
        if visible(source) or any(source.startswith(parent + "/") for parent in shown):
            continue
        shown.append(source)
        parts = Path(source).parts[1:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/" + "/".join(parts[:depth])
            if directory not in made and not visible(directory):
                made.add(directory)
                args += ["--perms", "0755", "--dir", directory]
        args += ["--ro-bind", source, source]
    args += ["/bin/sh", "-c", '"$@"; exit $?', "sh"]  # not exec: the shell stays as the parent
    uid = str(SANDBOX_UID)
    drop = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--pdeathsig=KILL"]
    return [*args, setpriv, *drop, "--"]
