"""Per-thread Redis connections used at the socket: a command out, its reply in.

A hot-path round trip through redis-py costs a connection-pool checkout, a retry layer,
an argument packer and, since redis-py reads with a socket timeout, a ``poll`` system
call before every read. On this path the command is packed by hiredis, written with one
``sendall`` and its reply parsed by a hiredis reader fed straight from ``recv_into``. The
socket blocks, its timeouts set in the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``): no
``poll`` per read, and a server that stops answering still ends in a TimeoutError.

redis-py still makes each connection (TCP or unix socket, AUTH, SELECT, client name),
so every URL option keeps working; a TLS connection is used through redis-py as before.

Each thread (and each forked process) has its own connection. Error replies come back
as redis-py's exception classes (NoScriptError, ResponseError, ...).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from hiredis import Reader as _Reader  # redis[hiredis] is a dependency
from hiredis import pack_command as _pack_command
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoflow import codec

__all__ = ["Lines"]

_MORE = object()  # the reader's "not enough data yet"
_BUFFER = 65536

log = logging.getLogger("autoflow.store")

#: Per thread: the servers it goes back to soon (``Lines.returning``), and the commands it
#: put off until then (``Lines.later``), by server.
_later = threading.local()


class _Line:
    """One connection: redis-py's (it connected and authenticated), and where the socket
    is plain TCP or unix, that socket used directly (``raw``)."""

    __slots__ = ("buf", "busy", "closed", "conn", "raw", "reader", "sock")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.busy = False  # a trip is under way (see Lines._exchange)
        self.closed = False
        self.reader: Any = None
        self.buf = bytearray(_BUFFER)
        conn.connect()
        sock = conn._sock
        self.sock: socket.socket = sock
        self.raw = type(sock) is socket.socket and _kernel_timeouts(sock, conn.socket_timeout)
        if not self.raw:  # TLS, or no kernel timeouts here: redis-py reads it
            return
        encoder = conn.encoder
        options: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": BaseParser.parse_error,
            "notEnoughData": _MORE,
            "errors": encoder.encoding_errors,
        }
        if encoder.decode_responses:
            options["encoding"] = encoder.encoding
        self.reader = _Reader(**options)

    def write(self, packed: bytes) -> None:
        if not self.raw:
            self.conn.send_packed_command(packed, check_health=False)
            return
        try:
            self.sock.sendall(packed)
        except OSError as exc:
            raise self._broken(exc, "writing to") from None

    def read(self) -> Any:
        """The next reply; an error reply is returned as its exception."""
        if not self.raw:
            try:
                return self.conn.read_response()
            except ResponseError as exc:
                return exc
        reader, sock, buf = self.reader, self.sock, self.buf
        reply = reader.gets()
        while reply is _MORE:
            try:
                n = sock.recv_into(buf)
            except OSError as exc:  # also a socket closed meanwhile by another thread (close())
                raise self._broken(exc, "reading from") from None
            if not n:
                raise self._broken(None, "reading from")
            reader.feed(buf, 0, n)
            reply = reader.gets()
        return reply

    def _broken(self, exc: OSError | None, doing: str) -> Exception:
        self.close()
        where = f"{doing} {self.conn._host_error()}"
        if isinstance(exc, (BlockingIOError, TimeoutError)):  # SO_RCVTIMEO/SO_SNDTIMEO ran out
            return RedisTimeoutError(f"Timeout {where}")
        if exc is None:
            return RedisConnectionError(f"Connection closed by server while {where}")
        return RedisConnectionError(f"Error {exc.errno} while {where}: {exc.strerror or exc}")

    def close(self) -> None:
        self.closed = True
        self.conn.disconnect()


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> bool:
    """Make ``sock`` blocking with ``timeout`` kept by the kernel (SO_RCVTIMEO/SO_SNDTIMEO,
    so Python need not poll before each read). False where the platform refuses that
    timeval (the socket is left as it was)."""
    if timeout:
        seconds = int(timeout)
        limit = struct.pack("ll", seconds, int((timeout - seconds) * 1e6))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        except OSError:
            return False
    sock.settimeout(None)
    return True


class _Holder:
    """Held in a thread's local storage: dropped with the thread, it closes its connection."""


class Lines:
    """This thread's connection of a redis-py pool's server, used at the socket.

    Example::

        lines = Lines(redis.ConnectionPool.from_url("redis://localhost:6379/0"))
        lines.send("ZADD", "queue", 1, b"message")
        lines.send_many([("HGET", "h", "a"), ("HGET", "h", "b")])
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._lines: list[_Line] = []
        kwargs = pool.connection_kwargs
        #: The server (and database) of this pool: commands put off by one pool's user go
        #: ahead of the next trip of another pool to the same server (a store, a queue).
        self.server = tuple(kwargs.get(k) for k in ("host", "port", "path", "db", "username"))

    def returning(self) -> None:
        """This thread makes a round trip to this server again soon and at every turn (a
        queue consumer between messages): :meth:`later` may put commands off until then."""
        servers: set[tuple[Any, ...]] | None = getattr(_later, "servers", None)
        if servers is None:
            servers = _later.servers = set()
            _later.pending = {}
        servers.add(self.server)

    def later(self, command: tuple[Any, ...], done: Callable[[Any], None]) -> bool:
        """Put ``command`` (idempotent: a broken trip sends it again) off until this
        thread's next round trip to this server, on any Lines (it goes ahead of that
        trip's commands): one round trip less. ``done`` gets its reply (an error as its
        exception) as soon as it is read, while that trip is still under way (a send it
        makes on the same Lines goes on a spare connection). False where this thread makes
        no such trip soon (see :meth:`returning`): send the command now."""
        servers: set[tuple[Any, ...]] | None = getattr(_later, "servers", None)
        if servers is None or self.server not in servers:
            return False
        _later.pending.setdefault(self.server, []).append((command, done))
        return True

    def send(self, *command: Any, again_after_timeout: bool = True) -> Any:
        """Send one command and return its reply (an error reply is raised). A broken
        connection is replaced and the command sent once more (idempotent commands only);
        after a timeout too, unless ``again_after_timeout`` is False (a blocking pop: its
        reply may have been lost, not its effect)."""
        return self.send_packed(_pack(command), again_after_timeout=again_after_timeout)

    def send_packed(self, packed: bytes, *, again_after_timeout: bool = True) -> Any:
        """:meth:`send` of one command already packed (see :func:`pack_head`)."""
        try:
            reply = self._exchange(packed, 1)[0]
        except RedisTimeoutError:
            if not again_after_timeout:
                raise
            reply = self._exchange(packed, 1)[0]
        except RedisConnectionError:
            reply = self._exchange(packed, 1)[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def send_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` at once (one round trip) and read every reply. An error reply
        is returned as its exception, not raised: every reply is read first, so the
        connection stays in step. On a broken connection they are sent once more."""
        packed = b"".join([_pack(command) for command in commands])
        try:
            return self._exchange(packed, len(commands))
        except (RedisConnectionError, RedisTimeoutError):
            return self._exchange(packed, len(commands))

    def flush(self) -> None:
        """Send now what this thread put off for this server (a consumer thread that stops
        makes no further trip); a failure is logged (the reaper repeats bookkeeping)."""
        if getattr(_later, "servers", None) and _later.pending.get(self.server):
            try:
                self._exchange(b"", 0)
            except Exception:
                log.warning("sending put-off commands failed (the reaper repeats them)", exc_info=True)

    def _exchange(self, packed: bytes, count: int) -> list[Any]:
        line = self._line()
        spare = line.busy  # a put-off command's callback sends while this connection's trip is on
        if spare:
            line = self._open()
        held = _later.pending.pop(self.server, None) if getattr(_later, "servers", None) else None
        if held:  # commands this thread put off go first
            packed = b"".join([_pack(command) for command, _ in held]) + packed
        delivered = 0
        line.busy = True
        try:
            line.write(packed)
            if held:
                replies = [line.read() for _ in held]
                delivered = len(held)
                for (_, done), reply in zip(held, replies, strict=True):
                    _deliver(done, reply)
            if count == 1:
                return [line.read()]
            return [line.read() for _ in range(count)]
        except BaseException:
            line.close()  # replies may be left unread: the connection is out of step
            if held and delivered < len(held):  # not done yet: with the next trip (the retry)
                _later.pending[self.server] = held[delivered:] + _later.pending.get(self.server, [])
            raise
        finally:
            line.busy = False
            if spare:
                line.close()

    def _line(self) -> _Line:
        """This thread's connection (a new one in a new thread, a forked process, or after
        the last one broke). It is closed when the thread ends."""
        local = self._local
        line: _Line | None = getattr(local, "line", None)
        if line is None or local.pid != codec.current_pid() or line.closed:
            line = self._open()
            local.line, local.pid, local.holder = line, codec.current_pid(), _Holder()
            weakref.finalize(local.holder, line.close)
            with self._lock:  # forget the closed ones (a broken connection, a fork, a thread gone)
                self._lines = [old for old in self._lines if not old.closed] + [line]
        return line

    def _open(self) -> _Line:
        return _Line(self._pool.connection_class(**self._pool.connection_kwargs))

    def close(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for line in lines:
            line.close()


def _deliver(done: Callable[[Any], None], reply: Any) -> None:
    """Hand a put-off command its reply; its failure is logged, never raised into the
    trip that carried it (whose replies must all be read)."""
    try:
        done(reply)
    except Exception:
        log.exception("handling the reply of a command sent ahead of a round trip failed")


def pack_head(head: Sequence[Any]) -> bytes:
    """The RESP bytes of the first arguments of a command, without the count that leads
    a command: a part that repeats (a function and a run's keys), packed once, for
    :func:`pack_with_head`."""
    packed = _pack(tuple(head))
    return packed[packed.index(b"\r\n") + 2 :]


def pack_with_head(head: bytes, head_count: int, args: Sequence[Any]) -> bytes:
    """The RESP bytes of a command: ``head`` (``head_count`` arguments, see
    :func:`pack_head`) followed by ``args``."""
    if not args:
        return b"*%d\r\n%s" % (head_count, head)
    rest = _pack(tuple(args))
    return b"*%d\r\n%s%s" % (head_count + len(args), head, rest[rest.index(b"\r\n") + 2 :])


def _pack(command: tuple[Any, ...]) -> bytes:
    """The RESP bytes of one command (hiredis packs str, bytes, int and float)."""
    try:
        return _pack_command(command)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise DataError(f"a Redis command argument cannot be sent: {exc}") from None
