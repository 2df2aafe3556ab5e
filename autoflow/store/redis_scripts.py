"""The Lua of the Redis store: run transitions as a Redis function library, else scripts.

A run transition is the shared helpers (``lua/lib.lua`` then ``lua/lib_flow.lua``, one
chunk: see :func:`helpers`) plus the transition's own file.
Sent as a script (EVALSHA), the helpers come with every call and Redis re-declares them
each time (~5 µs of its CPU per call, more than a tenth of a chain step's). On Redis 7 and
later they are loaded once as a function library (``FUNCTION LOAD``) and each transition
is a function called with ``FCALL``; servers without functions, or clients not allowed to
load them (ACL), keep the scripts. Any other refusal (the library does not compile: a bug
in our Lua) is a BackendError: the scripts would only hide it at a cost. Both forms run
the same text: each call starts with ``begin(keys, args)``, which resets the helpers'
per-call state.

The library and its functions are named after the hash of their text, so workers of two
autoflow versions on one server each call their own. A server that lost the library
(restarted without persistence) gets it again on the next call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from importlib import resources
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoPermissionError, ResponseError

from autoflow import codec
from autoflow.errors import BackendError

__all__ = ["RunScripts", "function_missing", "functions_unavailable"]

log = logging.getLogger("autoflow.store")


def function_missing(exc: ResponseError) -> bool:
    """True for the server's reply to a call of a function it does not have (any more)."""
    return "function not found" in str(exc).lower()


def functions_unavailable(exc: ResponseError) -> bool:
    """True for a ``FUNCTION LOAD`` refused because functions are not there for this client:
    a server without them (Redis < 7) or with FUNCTION renamed or disabled ("unknown
    command"/"unknown subcommand"), or a user whose ACL forbids them (NOPERM)."""
    if isinstance(exc, NoPermissionError):
        return True
    text = str(exc).lower().removeprefix("err ")
    return text.startswith(("unknown command", "unknown subcommand"))


#: The files of the shared helpers, in the order they are joined (each uses the locals of
#: those before it).
HELPERS = ("lib.lua", "lib_flow.lua")


def helpers() -> str:
    """The text of the shared helpers every transition runs after."""
    lua = resources.files("autoflow.store").joinpath("lua")
    return "\n".join(lua.joinpath(name).read_text() for name in HELPERS)


class RunScripts:
    """The run transitions ``names`` of one client: scripts, and functions once loaded."""

    def __init__(self, client: Any, names: Iterable[str], *, url: str) -> None:
        lua = resources.files("autoflow.store").joinpath("lua")
        lib = helpers()
        bodies = {name: lua.joinpath(f"{name}.lua").read_text() for name in names}
        # As scripts: the helpers see the script's KEYS and ARGV through locals of the same name.
        self.scripts: dict[str, Script] = {
            name: client.register_script(f"local KEYS, ARGV = KEYS, ARGV\n{lib}\nbegin(KEYS, ARGV)\n{body}")
            for name, body in bodies.items()
        }
        tag = hashlib.sha1((lib + "".join(bodies[n] for n in sorted(bodies))).encode()).hexdigest()[:12]
        self.function_names = {name: f"autoflow_{tag}_{name}" for name in bodies}
        registrations = "".join(
            f"redis.register_function('{self.function_names[name]}', function(keys, args)\n"
            f"begin(keys, args)\n{body}\nend)\n"
            for name, body in bodies.items()
        )
        self.library_name = f"autoflow_{tag}"
        self.library = f"#!lua name={self.library_name}\nlocal KEYS, ARGV\n{lib}\n{registrations}"
        self._client = client
        self._url = url  # for errors (without its password)
        self._lock = threading.Lock()
        self._loaded: bool | None = None  # None: not tried yet; False: this server has no functions for us

    def function(self, name: str) -> str | None:
        """The function to FCALL for transition ``name``, or None to EVALSHA its script
        (also for a name that is no transition)."""
        if self._loaded is None:
            self.load()
        return self.function_names.get(name) if self._loaded else None

    def use_scripts(self) -> None:
        """Run every transition as a script from now on (as on a server without functions)."""
        self._loaded = False

    def reload(self) -> None:
        """Load the library again if transitions run as functions (a server lost it)."""
        if self._loaded:
            self.load()

    def load(self) -> bool:
        """Load the library (again: after a server lost it). False where the server has no
        functions or does not let this client load them (see :func:`functions_unavailable`);
        the scripts are used then. Any other refusal raises BackendError quoting the server."""
        with self._lock:
            try:
                self._client.execute_command("FUNCTION", "LOAD", "REPLACE", self.library)
                self._loaded = True
            except ResponseError as exc:
                if not functions_unavailable(exc):
                    reason = f"Redis refused autoflow's function library {self.library_name!r} (FUNCTION LOAD): {exc}"
                    raise BackendError(self._url, codec.redact_text(reason)) from None
                self._loaded = False
                log.info("Redis functions unavailable (%s): running transitions as scripts", exc)
        return self._loaded
