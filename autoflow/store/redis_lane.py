"""How the Redis store reaches the server on its hot path.

Each thread (and each forked process) has a connection of its own: a transition is one
command sent and one reply read, without the pool's checkout, retry and bookkeeping layers
or redis-py's argument packer (hiredis packs the command itself). Transitions run as the
functions of ``redis_scripts.RunScripts`` where the server has them, else as scripts; the
store's global scripts (admission, bookkeeping, rate and concurrency limits) as scripts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoflow import codec
from autoflow.store.redis_scripts import RunScripts, function_missing

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency; redis-py's packer otherwise
    _pack_command = None  # type: ignore[assignment]

__all__ = ["RedisLane", "lost_script"]


class RedisLane:
    """Per-thread connections of one client, and the Lua it runs: ``run_scripts`` (over one
    run's keys) and ``global_scripts``, both named after their file in ``lua/``."""

    def __init__(self, client: Any, run_scripts: Iterable[str], global_scripts: Iterable[str]) -> None:
        self._client = client
        self._pool = client.connection_pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self._run = RunScripts(client, run_scripts)
        lua = resources.files("autoflow.store").joinpath("lua")
        #: Every script by name (a run script in its EVALSHA form), for redis-py pipelines.
        self.scripts: dict[str, Script] = dict(self._run.scripts)
        for name in global_scripts:
            self.scripts[name] = client.register_script(lua.joinpath(f"{name}.lua").read_text())

    def function(self, name: str) -> str | None:
        """The function that runs transition ``name``, or None where scripts are used."""
        return self._run.function(name)

    def use_scripts(self) -> None:
        """Send transitions as scripts (EVALSHA) even where the server has functions."""
        self._run.use_scripts()

    def call(self, name: str, keys: Sequence[str], *args: Any) -> Any:
        """Run transition or global script ``name`` over ``keys``; a server that lost the
        functions or scripts (it restarted) gets them again."""
        function = self._run.function(name)
        if function is not None:
            try:
                return self.send("FCALL", function, len(keys), *keys, *args)
            except ResponseError as exc:
                if not function_missing(exc):
                    raise
                if self._run.load():
                    return self.send("FCALL", function, len(keys), *keys, *args)
                # the server cannot take the functions any more: the script below
        script = self.scripts[name]
        try:
            return self.send("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return script(keys=list(keys), args=list(args))

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
        """Send one command on this thread's connection and read its reply. A broken
        connection is replaced and the command sent once more."""
        conn = self._conn()
        packed = _pack(conn, command)
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            conn.disconnect()
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()

    def send_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once (one round trip, like a pipeline without redis-py's
        per-command layers) and read every reply. An error reply is returned as its
        exception, not raised: every reply is read first, so the connection stays in step.
        On a broken connection they are sent once more (send idempotent commands only)."""
        conn = self._conn()
        packed = [chunk for command in commands for chunk in _pack(conn, command)]
        try:
            conn.send_packed_command(packed, check_health=False)
            return [_reply(conn) for _ in commands]
        except (RedisConnectionError, RedisTimeoutError):
            conn.disconnect()
            conn.send_packed_command(packed, check_health=False)
            return [_reply(conn) for _ in commands]

    def _conn(self) -> Any:
        """This thread's connection (a new one in a new thread or a forked process)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != codec.current_pid():
            conn = local.conn = self._pool.connection_class(**self._pool.connection_kwargs)
            local.pid = codec.current_pid()
            with self._lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.disconnect()


def lost_script(reply: Any) -> bool:
    """An error reply saying the server lacks a script or function (it restarted)."""
    return isinstance(reply, NoScriptError) or (isinstance(reply, ResponseError) and function_missing(reply))


def _reply(conn: Any) -> Any:
    try:
        return conn.read_response()
    except ResponseError as exc:
        return exc


def _pack(conn: Any, command: tuple[Any, ...]) -> list[bytes]:
    """The RESP bytes of one command. hiredis packs str, bytes, int and float itself, at a
    third of the cost of redis-py's packer (which wraps it) on the hot path."""
    if _pack_command is None:  # pragma: no cover - redis[hiredis] is a dependency
        return list(conn.pack_command(*command))
    try:
        return [_pack_command(command)]
    except TypeError as exc:
        raise DataError(f"a Redis command argument cannot be sent: {exc}") from None
