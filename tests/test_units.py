"""Small pure pieces: public surface, codec, planner, schema checks, settings, errors."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import types
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel

import autoflow as af
from autoflow import codec, models
from autoflow.context import CancelEvent
from autoflow.define.schema import check_json_schema, compatible
from autoflow.engine.planner import retry_delay
from autoflow.models import ErrorInfo, LogLevel, NodeInfo, NodeStatus, trusted
from autoflow.store.base import engine_log, log_text
from autoflow.store.rules import Decision, Rule, decide, final_status


def test_public_names_match_all() -> None:
    exported = {
        name for name in dir(af) if not name.startswith("_") and not isinstance(getattr(af, name), types.ModuleType)
    }
    assert sorted(af.__all__) == af.__all__
    assert exported == set(af.__all__)


class Model(BaseModel):
    a: int


@dataclasses.dataclass
class Pair:
    left: int
    right: list[int]


def test_to_json_value_converts_what_it_can_and_names_what_it_cannot() -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert codec.to_json_value({"m": Model(a=1), "p": Pair(1, [2]), "t": (1, 2), "d": when}) == {
        "m": {"a": 1},
        "p": {"left": 1, "right": [2]},
        "t": [1, 2],
        "d": "2026-01-01T00:00:00+00:00",
    }
    with pytest.raises(af.OutputError, match=r"out\['x'\]\[1\] is a builtins.object"):
        codec.to_json_value({"x": [1, object()]}, where="out")
    with pytest.raises(af.OutputError, match="keys must be str"):
        codec.to_json_value({1: 2})
    with pytest.raises(ValueError):
        codec.dumps(math.nan)


def test_redaction_of_secrets() -> None:
    assert codec.redact({"password": "x", "nested": {"Authorization": "Bearer abc"}, "ok": 1}) == {
        "password": "***",
        "nested": {"Authorization": "***"},
        "ok": 1,
    }
    text = "Bearer abcdef123456 and password=hunter2 at redis://:s3cret@host:6379/0 key sk_live_123456789"
    cleaned = codec.redact_text(text)
    for secret in ("abcdef123456", "hunter2", "s3cret", "sk_live_123456789"):
        assert secret not in cleaned


def test_run_ids_sort_in_creation_order() -> None:
    ids = [codec.new_run_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_error_info_keeps_type_and_traceback() -> None:
    try:
        raise KeyError("token=abcdefgh")
    except KeyError as exc:
        info = codec.error_info(exc, "n1")
    assert info.type == "KeyError" and info.node_id == "n1"
    assert "Traceback" in info.traceback and "abcdefgh" not in info.traceback


@pytest.mark.parametrize(
    ("rule", "tally", "expected"),
    [
        (Rule.ALL_SUCCESS, (2, 1, 0, 0), Decision.WAIT),
        (Rule.ALL_SUCCESS, (2, 2, 0, 0), Decision.READY),
        (Rule.ALL_SUCCESS, (3, 1, 1, 0), Decision.SKIP),  # decided before the last parent ends
        (Rule.ALL_SUCCESS, (2, 1, 0, 1), Decision.READY),  # a join after a branch not taken
        (Rule.ALL_SUCCESS, (2, 0, 0, 1), Decision.WAIT),
        (Rule.ALL_SUCCESS, (2, 0, 0, 2), Decision.SKIP),
        (Rule.ALL_DONE, (2, 0, 1, 0), Decision.WAIT),
        (Rule.ALL_DONE, (2, 0, 1, 1), Decision.READY),
        (Rule.ONE_SUCCESS, (3, 1, 0, 0), Decision.READY),
        (Rule.ONE_SUCCESS, (2, 0, 1, 1), Decision.SKIP),
        (Rule.ONE_FAILED, (3, 0, 1, 0), Decision.READY),
        (Rule.ONE_FAILED, (2, 2, 0, 0), Decision.SKIP),
        (Rule.ALL_FAILED, (2, 0, 2, 0), Decision.READY),
        (Rule.ALL_FAILED, (2, 1, 0, 0), Decision.SKIP),
        (Rule.NONE_FAILED, (2, 1, 0, 1), Decision.READY),
        (Rule.NONE_FAILED, (2, 1, 1, 0), Decision.SKIP),
    ],
)
def test_trigger_rules(rule: Rule, tally: tuple[int, int, int, int], expected: Decision) -> None:
    assert decide(rule, *tally) is expected


def test_planner_rejects_bad_tallies_and_ends_runs() -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        decide("all_success", 1, 1, 1, 0)
    with pytest.raises(ValueError):
        decide("sometimes", 1, 0, 0, 0)
    assert final_status(True, 0) is af.RunStatus.CANCELLED
    assert final_status(False, 1) is af.RunStatus.FAILED
    assert final_status(False, 0) is af.RunStatus.COMPLETED
    opts = af.NodeOptions(retries=1, backoff=af.Backoff(base=2, jitter=False))
    assert retry_delay(opts, 1) == 2.0 and retry_delay(opts, 2) is None


def test_type_compatibility_is_lenient_but_catches_clear_mismatches() -> None:
    assert compatible(int, float) and compatible(Model, dict) and compatible(datetime, str)
    assert compatible(int | None, int) and compatible(list[int], list[str])  # elements checked at run time
    assert not compatible(str, int) and not compatible(dict, list) and not compatible(bool, int)
    assert check_json_schema("x", {"type": "integer"}) == "expected integer, got str"
    assert check_json_schema(True, {"type": "integer"}) is not None
    assert check_json_schema("b", {"enum": ["a"]}) is not None
    assert check_json_schema(3, {"type": ["integer", "null"]}) is None


def test_settings_from_environment_and_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_HOST", "cache")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss")
    monkeypatch.setenv("REDIS_DB", "3")
    monkeypatch.setenv("WORKFLOW_CONCURRENCY", "7")
    monkeypatch.setenv("AUTOFLOW_HOME", str(tmp_path))
    s = af.Settings()
    assert s.resolved_redis_url == "redis://:p%40ss@cache:6379/3"
    assert s.workflow_concurrency == 7 and s.node_concurrency == 10 and s.home == tmp_path
    monkeypatch.setenv("AUTOFLOW_REDIS_URL", "redis://elsewhere:1/0")
    assert af.Settings().resolved_redis_url == "redis://elsewhere:1/0"
    assert af.Settings(workflow_concurrency=2).workflow_concurrency == 2
    with pytest.raises(ValueError):
        af.Settings(workflow_concurrency=0)
    monkeypatch.delenv("REDIS_HOST")
    monkeypatch.delenv("AUTOFLOW_REDIS_URL")
    assert af.Settings().resolved_redis_url is None
    assert "p@ss" not in repr(s)


def test_error_tree() -> None:
    assert issubclass(af.WorkflowError, ValueError) and issubclass(af.InputError, ValueError)
    assert issubclass(af.NotFoundError, LookupError) and issubclass(af.OutputError, TypeError)
    assert issubclass(af.RunTimeout, TimeoutError) and issubclass(af.BackendError, ConnectionError)
    for cls in (af.WorkflowError, af.InputError, af.RunFailed, af.RunCancelled, af.BackendError):
        assert issubclass(cls, af.AutoflowError)
    exc = af.RunFailed("r1", "n1", "ValueError", "boom", "tb")
    assert "r1" in str(exc) and "'n1'" in str(exc) and exc.traceback == "tb"


def test_unreachable_redis_is_a_quick_backend_error(tmp_path: Path) -> None:
    from tests.conftest import free_port

    url = f"redis://:secretpw@127.0.0.1:{free_port()}/0"
    with pytest.raises(af.BackendError) as caught:
        af.Client(url, settings=af.Settings(home=tmp_path))
    assert "127.0.0.1" in str(caught.value) and "secretpw" not in str(caught.value)
    with pytest.raises(af.BackendError, match="unknown scheme"):
        af.Client("mysql://x", settings=af.Settings(home=tmp_path))


def test_fencing_tokens_are_unique_in_a_forked_child() -> None:
    """A forked worker must not repeat its parent's tokens (a token tells attempts apart)."""
    parent = {codec.new_token() for _ in range(3)}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report three tokens and leave at once
        os.write(write, " ".join(codec.new_token() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    child = set(os.read(read, 4096).decode().split())
    os.waitpid(pid, 0)
    assert len(parent) == 3 and len(child) == 3 and not parent & child
    assert {t[:12] for t in parent} != {t[:12] for t in child}  # another random prefix


def test_the_cached_process_id_follows_a_fork() -> None:
    """codec.current_pid (the hot path's fork check, without a system call) is the child's
    own id in a forked child."""
    assert codec.current_pid() == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, f"{codec.current_pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    cached, real = os.read(read, 4096).decode().split()
    os.waitpid(pid, 0)
    assert cached == real == str(pid)


def test_a_cancel_event_behaves_as_a_threading_event() -> None:
    """The executor's per-attempt CancelEvent makes its condition only when needed."""
    event = CancelEvent()
    assert not event.is_set() and "_lazy_cond" not in event.__dict__
    assert event.wait(0.01) is False
    waker = threading.Timer(0.05, event.set)
    waker.start()
    assert event.wait(5) is True and event.is_set()
    waker.join()
    event.clear()
    assert not event.is_set()
    unwaited = CancelEvent()
    unwaited.set()
    assert unwaited.is_set() and unwaited.wait(0) is True


@pytest.mark.parametrize(
    ("message", "node_id"),
    [
        ("completed in 0.1 ms", "noop_7"),
        ("run completed", None),
        ('say "hi"', "x"),
        ("a\\b", "n[3]"),
        ("line\nbreak", "n"),
        ("é ünïcode", "n"),
        ("tab\tx", "n"),
        ("ok", 'we"ird'),
    ],
)
def test_an_engine_record_is_written_as_the_encoder_writes_it(message: str, node_id: str | None) -> None:
    record = engine_log(LogLevel.INFO, message, node_id, 1796129193.2685916)
    assert record.json() == codec.dumps(record) == log_text(record)
    assert json.loads(record.json()) == record


def _node_values() -> dict[str, object]:
    return {
        "id": "a", "type": "fn", "status": NodeStatus.FAILED, "attempt": 2, "stall_count": 1,
        "started_at": datetime(2026, 1, 1, tzinfo=timezone.utc), "finished_at": None,
        "output": None, "error": ErrorInfo(type="ValueError", message="bad"),
        "items_total": None, "items_done": 0, "child_run_id": None,
    }  # fmt: skip


def test_trusted_models_are_the_models_model_construct_makes() -> None:
    assert models._TRUSTED_LAYOUT  # this pydantic takes the fast path
    made, expected = trusted(NodeInfo, **_node_values()), NodeInfo.model_construct(**_node_values())
    assert type(made) is NodeInfo
    assert made == expected and repr(made) == repr(expected)
    assert made.model_dump_json() == expected.model_dump_json()
    assert made.model_fields_set == expected.model_fields_set
    assert made.duration is None and made.error is not None and made.error.message == "bad"
    with pytest.raises(ValueError):  # still frozen
        made.attempt = 3  # type: ignore[misc]
    assert made.model_copy(update={"attempt": 3}).attempt == 3


def test_trusted_fills_defaults_through_model_construct_when_a_field_is_left_out() -> None:
    values = _node_values()
    del values["items_done"], values["type"]
    made = trusted(NodeInfo, **values)
    assert made.items_done == 0 and made.type == ""
    assert made == NodeInfo.model_construct(**values)
