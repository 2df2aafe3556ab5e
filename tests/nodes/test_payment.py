"""payment_process against a loopback provider that implements Stripe's idempotency rules."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import autoflow as af
from autoflow.nodes import payment_process
from tests.nodes.servers import FakePayments, HTTPServer
from tests.nodes.util import log_text, one_node

FAST = {"retries": 3, "backoff": {"base": 0.01, "factor": 1.0, "max": 0.01, "jitter": False}}


@pytest.fixture(autouse=True)
def _key(credential: Any) -> None:
    credential("stripe", FakePayments.KEY)


def _config(server: HTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "amount": 1999,
        "currency": "BRL",
        "credential": "stripe",
        "api_url": server.url(""),
        "payment_method": "pm_card_visa",
        "metadata": {"order": "42"},
        **extra,
    }


def test_a_charge_with_a_derived_idempotency_key(
    run_client: af.Client, payments: tuple[FakePayments, HTTPServer]
) -> None:
    api, server = payments
    run = run_client.execute(one_node("payment_process", _config(server)))
    info = run.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED, info.error
    (charge,) = api.charges
    assert info.output["id"] == charge["id"] and info.output["status"] == "succeeded" and not info.output["replayed"]
    assert charge["amount"] == 1999 and charge["currency"] == "brl" and charge["metadata"]["order"] == "42"
    assert server.requests[0].headers["idempotency-key"] == f"af:{run.id}:n"
    assert FakePayments.KEY not in log_text(run_client, run.id) + info.model_dump_json()


def test_a_repeated_attempt_replays_instead_of_charging_again(payments: tuple[FakePayments, HTTPServer]) -> None:
    api, server = payments
    first = payment_process(**_config(server), ctx=af.Context("run1", "charge"))
    again = payment_process(**_config(server), ctx=af.Context("run1", "charge", attempt=2))
    assert again["id"] == first["id"] and again["replayed"] and len(api.charges) == 1


def test_the_same_key_with_other_parameters_is_refused(payments: tuple[FakePayments, HTTPServer]) -> None:
    api, server = payments
    payment_process(**_config(server), ctx=af.Context("run1", "charge"))
    with pytest.raises(af.nodes.NodeError) as caught:
        payment_process(**_config(server, amount=2999), ctx=af.Context("run1", "charge"))
    assert caught.value.status_code == 400 and not caught.value.retryable and "idempotency_error" in str(caught.value)
    assert len(api.charges) == 1


def test_a_concurrent_request_with_the_same_key_gets_409_then_the_replay(
    payments: tuple[FakePayments, HTTPServer],
) -> None:
    api, server = payments
    config = _config(server, payment_method="pm_card_slow")
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(payment_process(**config, ctx=af.Context("r", "a"))))
    first.start()
    waiting = threading.Event()
    while not api.in_flight and not waiting.wait(0.005):
        pass
    with pytest.raises(af.nodes.NodeError) as caught:  # a re-delivered attempt while the first still runs
        payment_process(**config, ctx=af.Context("r", "a", attempt=2))
    assert caught.value.status_code == 409 and caught.value.retryable and caught.value.retry_after == 0.5
    first.join(10)
    again = payment_process(**config, ctx=af.Context("r", "a", attempt=3))  # the engine's retry
    assert again["replayed"] and again["id"] == results[0]["id"] and len(api.charges) == 1


def test_requires_action_is_data_a_decline_is_permanent(
    run_client: af.Client, payments: tuple[FakePayments, HTTPServer]
) -> None:
    _api, server = payments
    info = run_client.execute(
        one_node("payment_process", _config(server, payment_method="pm_card_threeDSecure2Required"))
    ).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED
    assert info.output["requires_action"] and info.output["next_action"] == {"type": "use_stripe_sdk"}
    info = run_client.execute(
        one_node("payment_process", _config(server, payment_method="pm_card_chargeDeclined"), FAST)
    ).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert "card_error" in info.nodes["n"].error.message


def test_each_map_item_gets_its_own_key(run_client: af.Client, payments: tuple[FakePayments, HTTPServer]) -> None:
    api, server = payments
    wf = af.Workflow.from_dict(
        {
            "name": "charge_each",
            "inputs": {"amounts": {"type": "array"}},
            "nodes": [
                {
                    "id": "c",
                    "type": "payment_process",
                    "config": {**_config(server), "amount": {"$input": "amounts"}},
                    "map": {"over": "amount", "max_parallel": None},
                },
            ],
            "edges": [],
            "output": "c",
        }
    )
    run = run_client.execute(wf, amounts=[100, 200, 300])
    out = run.result(timeout=30)
    assert [o["amount"] for o in out] == [100, 200, 300] and len(api.charges) == 3
    assert {r.headers["idempotency-key"] for r in server.requests} == {f"af:{run.id}:c[{i}]" for i in range(3)}


@pytest.mark.parametrize("bad", [{"amount": 0}, {"amount": 19.99}, {"currency": "reais"}])
def test_amounts_are_positive_integers_in_minor_units(bad: dict[str, Any]) -> None:
    with pytest.raises(af.WorkflowError):
        one_node("payment_process", {"amount": 100, "currency": "usd", "credential": "stripe", **bad})
