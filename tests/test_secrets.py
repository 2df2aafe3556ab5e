"""Secrets never leave the process, and workers with AUTOFLOW_SECRET run only signed runs
(issue 7, items 12 and 13)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import autoflow as af
from autoflow import codec
from autoflow.engine.shipping import blob_key, code_hash, pack
from autoflow.store.base import NewRun, Store
from autoflow.store.redis import RedisStore
from tests.conftest import free_port, start_redis

# Canaries: secrets that appear only inside node code, errors, logs and configuration.
PASSWORD = "c@n/ary-pw:1"  # a Redis password with '@', '/' and ':'
SIGNING = "canary-signing-key-2"
IN_ERROR = "canary-in-error-3"
IN_HEADER = "canary-in-header-4"
IN_APIKEY = "canary-api-key-5"
IN_LOG = "canary-in-log-6"
IN_TOKEN = "canary-token-7"
IN_INPUT = "canary-input-8"
CANARIES = (PASSWORD, SIGNING, IN_ERROR, IN_HEADER, IN_APIKEY, IN_LOG, IN_TOKEN, IN_INPUT)

SIDE_EFFECTS: list[int] = []


@af.node(retries=1, backoff=af.Backoff(base=0.01))
def leaky(x: int, ctx: af.Context) -> int:
    ctx.log.info(f"connecting with password={IN_LOG}", data={"token": IN_TOKEN, "nested": {"api_key": IN_APIKEY}})
    ctx.log.warn("headers", data={"headers": {"Authorization": f"Bearer {IN_HEADER}", "X-Api-Key": IN_APIKEY}})
    raise RuntimeError(
        f"request failed: {{'password': '{IN_ERROR}', 'user': 'bob'}} Authorization: Bearer {IN_HEADER} "
        f"X-Api-Key: {IN_APIKEY} url=redis://:{PASSWORD}@db:6379/0"
    )


@af.workflow(name="secret_leaky")
def leaky_flow(x: int = 1):
    return leaky(x)


@af.node
def effect(x: int) -> int:
    SIDE_EFFECTS.append(x)
    return x * 10


@af.workflow(name="secret_effect")
def effect_flow(x: int = 1):
    return effect(x)


@af.workflow(name="secret_input")
def typed_flow(api_key: int, password: str = "x"):
    return effect(api_key)


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server with a password containing '@', '/' and ':'."""
    url, stop = start_redis(tmp_path_factory.mktemp("protected"), "--requirepass", PASSWORD)
    port = url.rsplit(":", 1)[1].split("/")[0]
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    stop()


def _all_redis_bytes(url: str) -> bytes:
    r = redis.Redis.from_url(codec.quote_url_password(url))
    out: list[bytes] = []
    for key in r.scan_iter(count=1000):
        out.append(key)
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out.extend(
                str(b).encode() if not isinstance(b, bytes) else b for pair in r.hgetall(key).items() for b in pair
            )
        elif kind == b"list":
            out.extend(r.lrange(key, 0, -1))
        elif kind == b"set":
            out.extend(r.smembers(key))
        elif kind == b"zset":
            out.extend(m for m in r.zrange(key, 0, -1))
        elif kind == b"stream":
            out.extend(repr(r.xrange(key)).encode())
    r.close()
    return b"\n".join(x if isinstance(x, bytes) else str(x).encode() for x in out)


def _sqlite_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def _exercise(client: af.Client) -> str:
    """Everything that might leak a canary: a failing node's error, logs, str(RunFailed),
    input validation, the settings repr and backend errors."""
    shown: list[str] = [repr(client.settings), repr(client), str(client.backend.url)]
    with pytest.raises(af.RunFailed) as caught:
        client.execute(leaky_flow, x=1).result(timeout=20)
    shown += [str(caught.value), caught.value.message, caught.value.traceback]
    for entry in client.runs(limit=5):
        info = client.status(entry.id)
        shown.append(info.model_dump_json())
        shown += [e.model_dump_json() for e in client.logs(entry.id)]
    with pytest.raises(af.InputError) as refused:
        client.execute(typed_flow, api_key=IN_INPUT)  # a secret-looking input of the wrong type
    shown.append(str(refused.value))
    with pytest.raises(af.BackendError) as down:
        af.Client(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0", settings=client.settings)
    shown.append(str(down.value))
    return "\n".join(shown)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_canary_secrets_appear_in_no_stored_byte_log_or_error(
    kind: str, protected_redis: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = af.Settings(
        home=tmp_path / "home", namespace=f"canary{kind}", secret=SIGNING, lease_seconds=2.0, requeue_seconds=2.0
    )
    url = protected_redis if kind == "redis" else None
    with af.Client(url, settings=settings, workers=2) as client:
        shown = _exercise(client)
    stored = _all_redis_bytes(protected_redis) if kind == "redis" else _sqlite_bytes(tmp_path / "home")
    logged = "\n".join(record.getMessage() + str(record.exc_info or "") for record in caplog.records)
    logged += caplog.text
    for canary in CANARIES:
        for where, text in (("stored data", stored.decode("utf-8", "replace")), ("errors", shown), ("logs", logged)):
            assert canary not in text, f"{canary!r} leaked into the {where}"
    assert "***" in shown  # the errors still say that something was there


def test_redaction_covers_the_forms_secrets_take() -> None:
    for text in (
        "{'password': 'hunter22'}",
        '{"api_key": "hunter22"}',
        "X-Api-Key: hunter22",
        "Authorization: hunter22",
        "Authorization: Bearer hunter22",
        "token=hunter22&x=1",
        "redis://:hun@ter/22@host:6379/0",
        "https://user:hunter22@example.com/x",
    ):
        assert "hunter22" not in codec.redact_text(text) and "ter/22" not in codec.redact_text(text), text
    for text in ("Basic dXNlcjpwYXNz", "Authorization: Bearer abc.def.ghi", "Authorization: bearer abcdefgh"):
        assert "dXNlcjpwYXNz" not in codec.redact_text(text) and "abc" not in codec.redact_text(text), text
    for prose in ("this token lacks the admin scope", "a basic understanding of bearer tokens"):
        assert codec.redact_text(prose) == prose  # wording is not mangled
    assert codec.redact({"Password": "x", "X-Api-Key": "y", "author": "kept"}) == {
        "Password": "***",
        "X-Api-Key": "***",
        "author": "kept",
    }


# -- 12. workers with a secret run only signed runs -------------------------------------


@pytest.fixture
def signed(redis_url: str, settings: af.Settings) -> Iterator[af.Client]:
    client = af.Client(redis_url, settings=settings.model_copy(update={"secret": af.Settings(secret="s3cret").secret}))
    client.workers = 2
    yield client
    client.close()


def _unsigned_run(store: Store, workflow: af.Workflow, inputs: dict[str, Any], code: str | None = None) -> str:
    """What someone who can write to Redis but lacks the secret can create."""
    from autoflow.engine.planner import node_seeds

    store.put_definition(workflow.digest, codec.dumps(workflow.to_dict()))
    run = NewRun(
        id=codec.new_run_id(),
        workflow=workflow.name,
        digest=workflow.digest,
        inputs=inputs,
        output=workflow.output,
        created_at=time.time(),
        code=code,
    )
    run_id = store.create_run(run, node_seeds(workflow.specs))
    store.admit(50)
    return run_id


def test_a_run_created_without_the_secret_is_not_executed(signed: af.Client) -> None:
    assert signed.execute(effect_flow, x=1).result(timeout=20) == 10  # signed: runs
    SIDE_EFFECTS.clear()
    run_id = _unsigned_run(signed.backend.store, effect_flow, {"x": 666})
    with pytest.raises(af.RunFailed, match="without AUTOFLOW_SECRET") as caught:
        signed.result(run_id, timeout=20)
    assert caught.value.error_type == "SignatureError"
    assert 666 * 10 not in SIDE_EFFECTS and 666 not in SIDE_EFFECTS  # the function never ran


def test_a_signed_run_whose_inputs_were_changed_is_not_executed(signed: af.Client) -> None:
    signed.start()
    store = signed.backend.store
    assert isinstance(store, RedisStore)
    settings_one = signed.settings.model_copy(update={"workflow_concurrency": 1})
    store.r.sadd(store._g("active"), "a-run-holding-the-only-slot")  # the new run waits: pending
    run = af.Client(signed.url, settings=settings_one, workers=0).execute(effect_flow, x=3)
    assert signed.status(run.id).status is af.RunStatus.PENDING
    store.r.hset(store._keys(run.id)[0], "inputs", codec.dumps({"x": 999}))  # tampered in Redis
    store.r.srem(store._g("active"), "a-run-holding-the-only-slot")
    store.admit(50)
    with pytest.raises(af.RunFailed, match="not signed with this worker's AUTOFLOW_SECRET"):
        signed.result(run.id, timeout=20)
    assert 999 not in SIDE_EFFECTS


def cube_fn(x: int) -> int:
    SIDE_EFFECTS.append(x)
    return x**3


def test_someone_elses_shipped_code_cannot_be_rerun_with_other_inputs(signed: af.Client) -> None:
    cube_fn.__module__ = "__main__"
    cube = af.node(cube_fn)

    @af.workflow(name="secret_shipped")
    def shipped(x: int = 2):
        return cube(x)

    store = signed.backend.store
    blob = pack({cube.key: cube}, b"s3cret")  # the victim's signed code, stored by content
    store.put_blob(blob_key(code_hash(blob)), blob)
    SIDE_EFFECTS.clear()
    run_id = _unsigned_run(store, shipped, {"x": 7}, code=code_hash(blob))
    with pytest.raises(af.RunFailed, match="AUTOFLOW_SECRET"):
        signed.result(run_id, timeout=20)
    assert SIDE_EFFECTS == []


def test_a_client_with_another_secret_is_told_at_once(signed: af.Client, settings: af.Settings) -> None:
    signed.execute(effect_flow, x=1).result(timeout=20)  # the workers announced their secret
    for secret in ("not the one", None):
        other = af.Client(
            signed.url,
            settings=settings.model_copy(
                update={"secret": af.Settings(secret=secret or "x").secret if secret else None}
            ),
            workers=0,
        )
        with pytest.raises(af.ConfigError, match="AUTOFLOW_SECRET"):
            other.execute(effect_flow, x=1)
        other.close()


@pytest.mark.parametrize("text", ["x" * 50_000, "a-b.c_" * 10_000, "password " * 5_000, '"' * 50_000, "://a:" * 10_000])
def test_redaction_takes_linear_time(text: str) -> None:
    started = time.perf_counter()
    codec.redact_text(text)
    assert time.perf_counter() - started < 0.5  # a log line must never stall a worker
