"""How the Redis store reaches the server on its hot path.

Each thread (and each forked process) has a connection of its own, used at the socket
(``redis_line.Lines``): a transition is one command sent and one reply read. Transitions run as the
functions of ``redis_scripts.RunScripts`` where the server has them, else as scripts; the
store's global scripts (admission, bookkeeping, rate and concurrency limits) as scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

from autoflow.store.redis_line import Lines, pack_head, pack_with_head
from autoflow.store.redis_scripts import RunScripts, function_missing

__all__ = ["RedisLane", "lost_script"]


class RedisLane:
    """Per-thread connections of one client, and the Lua it runs: ``run_scripts`` (over one
    run's keys) and ``global_scripts``, both named after their file in ``lua/``. ``url``
    (without its password) names the server in errors."""

    def __init__(self, client: Any, run_scripts: Iterable[str], global_scripts: Iterable[str], *, url: str) -> None:
        self._client = client
        self._lines = Lines(client.connection_pool)
        self._run = RunScripts(client, run_scripts, url=url)
        lua = resources.files("autoflow.store").joinpath("lua")
        #: Every script by name (a run script in its EVALSHA form), for redis-py pipelines.
        self.scripts: dict[str, Script] = dict(self._run.scripts)
        for name in global_scripts:
            self.scripts[name] = client.register_script(lua.joinpath(f"{name}.lua").read_text())
        # The packed start of a transition's FCALL (function, keys) by function and keys:
        # the same for every transition of a run, packed once (packing its 14 arguments
        # again cost ~45,000 instructions of a worker's step).
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}

    def function(self, name: str) -> str | None:
        """The function that runs transition ``name``, or None where scripts are used."""
        return self._run.function(name)

    def use_scripts(self) -> None:
        """Send transitions as scripts (EVALSHA) even where the server has functions."""
        self._run.use_scripts()

    def load(self) -> bool:
        """Load the transitions' function library now (see ``RunScripts.load``): False where
        scripts are used; BackendError if the server refuses the library itself."""
        return self._run.load()

    def call(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        """Run transition or global script ``name`` over ``keys``; a server that lost the
        functions or scripts (it restarted) gets them again."""
        function = self._run.function(name)
        if function is not None:
            packed = self._fcall(function, keys, args)
            try:
                return self._lines.send_packed(packed)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
                if self._run.load():
                    return self._lines.send_packed(packed)
                # the server cannot take the functions any more: the script below
        script = self.scripts[name]
        try:
            return self.send("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return script(keys=list(keys), args=list(args))

    def _fcall(self, function: str, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        """``FCALL function len(keys) *keys *args``, packed, its start from the cache."""
        at = (function, tuple(keys))
        head = self._heads.get(at)
        if head is None:
            if len(self._heads) >= 4096:  # runs come and go: start again
                self._heads.clear()
            head = self._heads[at] = pack_head(("FCALL", function, len(keys), *keys))
        return pack_with_head(head, 3 + len(keys), args)

    def command(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The command that runs ``name`` (FCALL or EVALSHA), to send in a batch."""
        function = self._run.function(name)
        if function is not None:
            return ("FCALL", function, len(keys), *keys, *args)
        return ("EVALSHA", self.scripts[name].sha, len(keys), *keys, *args)

    def reload(self, *names: str) -> None:
        """Load the functions (where in use) and the scripts ``names`` again."""
        self._run.reload()
        for name in names:
            self._client.script_load(self.scripts[name].script)

    def send(self, *command: Any) -> Any:
        """Send one command on this thread's connection and read its reply (see
        ``redis_line.Lines``)."""
        return self._lines.send(*command)

    def send_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once and read every reply, errors returned, not raised
        (see ``redis_line.Lines.send_many``; send idempotent commands only)."""
        return self._lines.send_many(commands)

    @property
    def server(self) -> tuple[Any, ...]:
        """The server (and database) these connections reach (``redis_line.Lines.server``)."""
        return self._lines.server

    def later(self, command: tuple[Any, ...], done: Callable[[Any], None]) -> bool:
        """Put ``command`` off until this thread's next round trip to the server (see
        ``redis_line.Lines.later``); False: send it now."""
        return self._lines.later(command, done)

    def close(self) -> None:
        self._lines.close()


def lost_script(reply: Any) -> bool:
    """An error reply saying the server lacks a script or function (it restarted)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ResponseError) and function_missing(reply))
