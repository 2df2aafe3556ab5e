"""whatsapp_send against a loopback server speaking the Cloud API's documented bodies."""

from __future__ import annotations

from typing import Any

import pytest

import autoflow as af
from tests.nodes.servers import FakeWhatsApp, HTTPServer
from tests.nodes.util import log_text, one_node

FAST = {"retries": 2, "backoff": {"base": 0.01, "factor": 1.0, "max": 0.01, "jitter": False}}


@pytest.fixture(autouse=True)
def _token(credential: Any) -> None:
    credential("wa", FakeWhatsApp.TOKEN)
    credential("wa_expired", "expired-token")


def _config(server: HTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "to": "+55 11 99999-0000",
        "phone_number_id": "1234567890",
        "credential": "wa",
        "api_url": server.url(""),
        "text": "Seu pedido saiu",
        **extra,
    }


def test_a_text_message(run_client: af.Client, whatsapp: tuple[FakeWhatsApp, HTTPServer]) -> None:
    api, server = whatsapp
    run = run_client.execute(one_node("whatsapp_send", _config(server)))
    info = run.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED, info.error
    (sent,) = api.messages
    assert info.output == {
        "message_id": sent["id"],
        "wa_id": "5511999990000",
        "to": "5511999990000",
        "status": "accepted",
    }
    assert sent["type"] == "text" and sent["text"] == {"preview_url": False, "body": "Seu pedido saiu"}
    assert sent["biz_opaque_callback_data"] == f"{run.id}:n"
    assert server.requests[0].path == "/v21.0/1234567890/messages"
    assert FakeWhatsApp.TOKEN not in log_text(run_client, run.id)


def test_a_template_message(run_client: af.Client, whatsapp: tuple[FakeWhatsApp, HTTPServer]) -> None:
    api, server = whatsapp
    template = {
        "name": "order_paid",
        "language": "pt_BR",
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}],
    }
    info = run_client.execute(one_node("whatsapp_send", _config(server, text=None, template=template))).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert api.messages[0]["template"] == {
        "name": "order_paid",
        "language": {"code": "pt_BR"},
        "components": template["components"],
    }


def test_throughput_errors_are_retried_after_a_wait(
    run_client: af.Client, whatsapp: tuple[FakeWhatsApp, HTTPServer]
) -> None:
    api, server = whatsapp
    run = run_client.execute(one_node("whatsapp_send", _config(server, to="15550001111"), FAST))
    info = run.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED and info.nodes["n"].attempt == 2 and len(api.messages) == 1
    assert "130429" in log_text(run_client, run.id) and "retrying in 1.00s" in log_text(run_client, run.id)


@pytest.mark.parametrize(
    ("extra", "code", "category"),
    [
        ({"to": "15550002222"}, "131047", "permanent"),
        ({"text": None, "template": {"name": "missing_template"}}, "132001", "permanent"),
        ({"credential": "wa_expired"}, "190", "auth"),
    ],
)
def test_permanent_and_auth_errors_fail_at_once(
    run_client: af.Client, whatsapp: tuple[FakeWhatsApp, HTTPServer], extra: dict[str, Any], code: str, category: str
) -> None:
    api, server = whatsapp
    info = run_client.execute(one_node("whatsapp_send", _config(server, **extra), FAST)).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert code in info.nodes["n"].error.message and category in info.nodes["n"].error.message
    assert not api.messages


def test_classification_table() -> None:
    from autoflow.nodes.whatsapp import classify

    assert [classify(c) for c in (130429, 131056, 4, 80007)] == ["retry_later"] * 4
    assert [classify(c) for c in (190, 10, 200)] == ["auth"] * 3
    assert [classify(c) for c in (131047, 131026, 132000, 100, None)] == ["permanent"] * 5


@pytest.mark.parametrize("bad", [{"text": None}, {"to": "call me"}, {"phone_number_id": "abc"}])
def test_bad_messages_fail_without_a_request(
    run_client: af.Client, whatsapp: tuple[FakeWhatsApp, HTTPServer], bad: dict[str, Any]
) -> None:
    _api, server = whatsapp
    info = run_client.execute(one_node("whatsapp_send", _config(server, **bad), FAST)).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1 and not server.requests
