"""Watching one child process: feed its stdin, drain stdout/stderr with bounds, and kill
its whole process group on cancellation, at a deadline or when it says too much.

Used by ``autoflow.nodes.sandbox`` for the code sandbox; it knows nothing of sandboxes and
reports what happened as an :class:`Ended` (the caller turns that into errors).

Example::

    proc = subprocess.Popen(argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, start_new_session=True)
    ended = Watch(proc, deadline=time.monotonic() + 5, max_stdout=1 << 20).run(b"input")
    ended.stop            # Stop.EXITED, or why it was killed
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

__all__ = ["Ended", "Stop", "Watch"]

log = logging.getLogger("autoflow.sandbox")

_POLL = 0.05  # seconds between checks of cancellation and the deadline
_STDERR_KEEP = 64 * 1024
_GRACE = 0.25  # seconds to keep reading the pipes after the child itself exited


class Stop(str, enum.Enum):
    """How a watched process ended."""

    EXITED = "exited"  # by itself
    CANCELLED = "cancelled"  # killed: ``cancelled()`` said so
    DEADLINE = "deadline"  # killed: the deadline passed
    OUTPUT = "output"  # killed: stdout passed ``max_stdout``


@dataclass(frozen=True)
class Ended:
    """A finished process: how it stopped, its exit code (negative: a signal), its
    stdout (up to ``max_stdout`` bytes) and the first 64 KiB of stderr."""

    stop: Stop
    returncode: int | None
    stdout: bytes
    stderr: bytes


class Watch:
    """Watches ``proc`` (started with three pipes and ``start_new_session=True``).

    The process group is killed with SIGKILL when ``cancelled()`` returns True (polled
    every 50 ms), at ``deadline`` (a ``time.monotonic()`` value) or when stdout passes
    ``max_stdout`` bytes — and in any case if :meth:`run` is left by an exception (a
    SIGALRM of a process worker, for instance): nothing outlives the call. ``stop(pid)``,
    if given, is tried first: it ends the process some gentler way (a sandbox kills its
    innermost process, so that every parent reaps its child and no zombie is left), and
    the group is killed only if the process is still there half a second later.
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        deadline: float,
        max_stdout: int,
        cancelled: Callable[[], bool] = lambda: False,
        stop: Callable[[int], None] | None = None,
    ) -> None:
        self.proc = proc
        self.stop = stop
        self.deadline = deadline
        self.max_stdout = max_stdout
        self.cancelled = cancelled
        self._out = bytearray()
        self._err = bytearray()
        self._stop = Stop.EXITED

    def run(self, payload: bytes) -> Ended:
        try:
            self._pump(payload)
            while self._stop is Stop.EXITED and not self._reap(os.WNOHANG):
                self._check()
                time.sleep(0.005)
        finally:
            self.kill()
        return Ended(self._stop, self.proc.returncode, bytes(self._out), bytes(self._err))

    def _check(self) -> None:
        if self.cancelled():
            self.kill(Stop.CANCELLED)
        elif time.monotonic() >= self.deadline:
            self.kill(Stop.DEADLINE)

    def _pump(self, payload: bytes) -> None:
        proc = self.proc
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:
            raise ValueError("Watch needs a process started with stdin, stdout and stderr pipes")
        with selectors.DefaultSelector() as sel:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                os.set_blocking(stream.fileno(), False)
            sel.register(proc.stdout, selectors.EVENT_READ, (proc.stdout, self._out))
            sel.register(proc.stderr, selectors.EVENT_READ, (proc.stderr, self._err))
            sel.register(proc.stdin, selectors.EVENT_WRITE)
            view = memoryview(payload)
            exited: float | None = None
            while sel.get_map() and self._stop is Stop.EXITED:
                self._check()
                if exited is None and self._reap(os.WNOHANG):
                    exited = time.monotonic()
                elif exited is not None and time.monotonic() - exited > _GRACE:
                    break  # a descendant holds the pipes open after the child ended: stop reading
                for key, _ in sel.select(_POLL):
                    if key.fileobj is proc.stdin:
                        view = self._feed(sel, proc.stdin, view)
                    elif self._stop is Stop.EXITED:
                        self._drain(sel, *key.data)

    def _feed(self, sel: selectors.BaseSelector, stdin: IO[bytes], view: memoryview) -> memoryview:
        try:
            sent = os.write(stdin.fileno(), view[: 1 << 16])
        except BlockingIOError:
            return view
        except BrokenPipeError:  # the child is gone: its exit status tells why
            sent = len(view)
        view = view[sent:]
        if not view:
            sel.unregister(stdin)
            stdin.close()
        return view

    def _drain(self, sel: selectors.BaseSelector, stream: IO[bytes], buffer: bytearray) -> None:
        try:
            chunk = os.read(stream.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            sel.unregister(stream)
            stream.close()
        elif buffer is self._out:
            buffer += chunk
            if len(buffer) > self.max_stdout:
                self.kill(Stop.OUTPUT)
        elif len(buffer) < _STDERR_KEEP:
            buffer += chunk[: _STDERR_KEEP - len(buffer)]

    def _reap(self, flags: int) -> bool:
        """Collect the exit status once the process ended; True if it did."""
        if self.proc.returncode is not None:
            return True
        try:
            pid, status = os.waitpid(self.proc.pid, flags)
        except ChildProcessError:  # reaped elsewhere
            self.proc.returncode = -1
            return True
        if pid == 0:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def kill(self, why: Stop | None = None) -> None:
        """SIGKILL the process group (a sandbox's inner processes die with its bwrap), reap
        the leader, close the pipes. ``why`` is recorded as the way the process stopped."""
        if why is not None and self._stop is Stop.EXITED and self.proc.returncode is None:
            self._stop = why
            log.info("process %d killed: %s", self.proc.pid, why.value)
        if self.proc.returncode is None and self.stop is not None:
            self.stop(self.proc.pid)
            until = time.monotonic() + _GRACE * 2
            while not self._reap(os.WNOHANG) and time.monotonic() < until:
                time.sleep(0.005)
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:  # no group left to signal: make sure of the leader itself
                with contextlib.suppress(OSError):
                    self.proc.kill()
            self._reap(0)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()
