"""Calling a node function with a timeout and a cancellation signal.

Two strategies, chosen by the worker kind:

* :class:`ThreadInvoker` (thread workers, embedded, immediate): the function runs in the
  worker thread, cooperatively cancelled through ``ctx``; a synchronous function with a
  timeout runs on a helper thread the worker stops waiting for when the time is up. A
  synchronous function cannot be stopped from outside in CPython, so it keeps running in
  the background and its result is discarded (the documented limit of thread workers).
  ``async def`` nodes are really cancelled and timed out.
* :class:`SignalInvoker` (process workers, main thread): the function runs in place and
  is interrupted by ``SIGALRM`` for timeouts and cancellation, so it really stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from autoflow.errors import NodeCancelled

__all__ = ["Invoker", "NodeTimeout", "SignalInvoker", "ThreadInvoker"]

_CANCEL_GRACE = 0.2  # seconds a cooperative node gets to stop by itself


class NodeTimeout(TimeoutError):
    """A node attempt ran past its ``timeout``. ``still_running`` is set (an Event not yet
    set) when the function could not be stopped and goes on in the background."""

    still_running: threading.Event | None = None


def _abandoned(exc: BaseException, call: _Call) -> BaseException:
    """Mark ``exc`` as leaving ``call`` running: whoever holds a resource for it (a
    concurrency slot) keeps it until ``call.done`` is set."""
    exc.still_running = call.done  # type: ignore[attr-defined]
    return exc


class Invoker(Protocol):
    def call(self, fn: Callable[[], Any], *, is_async: bool, timeout: float | None, cancel: threading.Event) -> Any:
        """Run ``fn`` (returning a value, or an awaitable when ``is_async``); raise
        NodeTimeout after ``timeout`` seconds, NodeCancelled once ``cancel`` is set."""

    def interrupt(self) -> None:
        """Wake the call in progress so it notices ``cancel`` (called from another thread)."""


async def _guard(awaitable: Awaitable[Any], timeout: float | None, cancel: threading.Event) -> Any:
    task = asyncio.ensure_future(awaitable)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
        done, _ = await asyncio.wait({task}, timeout=wait)
        if done:
            return task.result()
        if cancel.is_set() or (deadline is not None and time.monotonic() >= deadline):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # let it run its cleanup; its outcome no longer matters
            if cancel.is_set():
                raise NodeCancelled("the run was cancelled")
            raise NodeTimeout(f"timed out after {timeout:g}s")


def _run(fn: Callable[[], Any], is_async: bool, timeout: float | None, cancel: threading.Event) -> Any:
    if is_async:
        return asyncio.run(_guard(fn(), timeout, cancel))
    return fn()


class _Call:
    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _Helper:
    """A daemon thread that runs calls handed to it, one at a time."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._call: _Call | None = None
        self.busy = False
        threading.Thread(target=self._loop, name="autoflow-node", daemon=True).start()

    def submit(self, call: _Call) -> None:
        with self._cv:
            self.busy = True
            self._call = call
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._call is None:
                    self._cv.wait()
                call, self._call = self._call, None
            try:
                call.value = call.fn()
            except BaseException as exc:  # handed back to the waiting worker thread
                call.error = exc
            with self._cv:
                self.busy = False
            call.done.set()


class ThreadInvoker:
    """Runs calls in the worker thread, except synchronous calls with a timeout, which
    go to a per-worker-thread helper so the worker can give up on them.

    ``async def`` nodes are really cancelled (and timed out) on their event loop. A
    synchronous node that ignores cancellation is settled by the heartbeat's watchdog
    (see ``heartbeat.py``); the worker thread stays busy until the function returns.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def _helper(self) -> _Helper:
        helper: _Helper | None = getattr(self._local, "helper", None)
        if helper is None or helper.busy:  # busy: an abandoned call still runs on it
            helper = _Helper()
            self._local.helper = helper
        return helper

    def call(self, fn: Callable[[], Any], *, is_async: bool, timeout: float | None, cancel: threading.Event) -> Any:
        if timeout is None or is_async:
            return _run(fn, is_async, timeout, cancel)
        call = _Call(fn)  # synchronous, with a timeout: the helper runs it, we watch
        self._helper().submit(call)
        deadline = time.monotonic() + timeout
        while not call.done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if call.done.is_set():
                    break
                raise _abandoned(
                    NodeTimeout(f"timed out after {timeout:g}s (thread workers cannot stop it; result discarded)"), call
                )
            if call.done.wait(min(0.1, remaining)):
                break
            if cancel.is_set():
                if call.done.wait(_CANCEL_GRACE):
                    break
                raise _abandoned(
                    NodeCancelled("the run was cancelled (node abandoned; thread workers cannot stop it)"), call
                )
        if call.error is not None:
            raise call.error
        return call.value

    def interrupt(self) -> None:
        """Nothing to do: the waiting worker thread polls ``cancel`` every 0.1 s."""


class SignalInvoker:
    """Runs calls in the main thread and interrupts them with SIGALRM (process workers).

    The handler is installed once and stays: it does nothing outside a call, so a late
    signal can never fall through to SIGALRM's default action (ending the process).
    """

    def __init__(self) -> None:
        self._installed = False
        self._active = False
        self._cancel: threading.Event | None = None
        self._deadline: float | None = None
        self._timeout: float | None = None

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if not self._active:
            return
        if self._cancel is not None and self._cancel.is_set():
            raise NodeCancelled("the run was cancelled")
        if self._deadline is not None and time.monotonic() >= self._deadline - 0.001:
            raise NodeTimeout(f"timed out after {self._timeout:g}s")

    def call(self, fn: Callable[[], Any], *, is_async: bool, timeout: float | None, cancel: threading.Event) -> Any:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("SignalInvoker only works in the main thread")
        if not self._installed:
            signal.signal(signal.SIGALRM, self._on_alarm)
            self._installed = True
        if cancel.is_set():
            raise NodeCancelled("the run was cancelled")
        self._cancel, self._timeout = cancel, timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._active = True
        try:
            if timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            return _run(fn, is_async, timeout, cancel)
        finally:
            self._active = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def interrupt(self) -> None:
        if self._active:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)
