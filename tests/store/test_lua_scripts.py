"""Static checks of the Redis transitions' Lua (autoflow/store/lua/).

``put()`` in lib.lua holds one node state back so that the next ``put()`` writes both in
one ``HSET``; ``save()`` writes what is left. A transition that returned after a write
without ``save()`` would lose that state, silently, so every return that follows a write
must have a ``save()`` between them (``maybe_finish`` saves too).
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from autoflow.store.redis_scripts import HELPERS

LUA = resources.files("autoflow.store").joinpath("lua")
SCRIPTS = sorted(p.name for p in LUA.iterdir() if p.name.endswith(".lua") and p.name not in HELPERS)
# The helpers that write node states (through put()).
WRITES = re.compile(
    r"\b(put|take|queue|skip|settle|requeue|release|completed|fail_node|cancel_node|item_done|item_failed)\("
)
SAVES = re.compile(r"\b(save|maybe_finish)\(")
RETURN = re.compile(r"^\s*(?:if .* then\s+)?return\b|\breturn\b.*\bend\s*$")


def _unsaved_return(lines: list[str]) -> tuple[int, int] | None:
    """(line of a return, line of the state write before it) for a return with no save()
    in between; None if every return is saved."""
    unsaved = None  # the line of a write not followed by a save yet
    for number, line in enumerate(lines, 1):
        code = line.split("--", 1)[0]
        if WRITES.search(code):
            unsaved = number
        if SAVES.search(code):
            unsaved = None
        if RETURN.search(code) and unsaved is not None:
            return number, unsaved
    return None


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_return_after_a_state_write_saves_first(name: str) -> None:
    found = _unsaved_return(LUA.joinpath(name).read_text().splitlines())
    assert found is None, f"{name}:{found[0]} returns after the state write on line {found[1]} without save()"


def test_the_check_finds_a_return_without_save() -> None:
    assert _unsaved_return(["local s = get(node)", "put(node, s)", "if x then return 1 end"]) == (3, 2)
    assert _unsaved_return(["put(node, s)", "save()", "return 1"]) is None


def test_the_scripts_are_found() -> None:
    assert {"complete.lua", "fail.lua", "claim.lua", "cancel_run.lua", "reap.lua"} <= set(SCRIPTS)
