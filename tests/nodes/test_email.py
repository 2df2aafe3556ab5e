"""send_email against aiosmtpd on a loopback port (plain, and STARTTLS with AUTH)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import autoflow as af
from autoflow.nodes import send_email
from tests.nodes.servers import SMTPRecorder
from tests.nodes.util import log_text, one_node

PASSWORD = "mail-canary-pw-0451"
FAST = {"retries": 2, "backoff": {"base": 0.01, "factor": 1.0, "max": 0.01, "jitter": False}}


def _mail(smtp: SMTPRecorder, **extra: Any) -> dict[str, Any]:
    return {
        "to": "ana@example.test",
        "sender": "shop@example.test",
        "subject": "Your order",
        "text": "Thanks!",
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "none",
        **extra,
    }


def test_text_html_attachment_and_a_message_id_per_run_and_node(run_client: af.Client, smtp: SMTPRecorder) -> None:
    config = _mail(
        smtp,
        html="<p>Thanks!</p>",
        cc=["bo@example.test"],
        attachments=[{"filename": "a.txt", "content": "hello", "content_type": "text/plain"}],
    )
    run = run_client.execute(one_node("send_email", config))
    info = run.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert info.output["message_id"] == f"<{run.id}.n@autoflow.local>"
    (message,) = smtp.messages
    assert message["message_id"] == info.output["message_id"]
    assert sorted(message["rcpts"]) == ["ana@example.test", "bo@example.test"]
    parts = {p.get_content_type() for p in message["parsed"].walk()}
    assert {"text/plain", "text/html"} <= parts
    assert any(p.get_filename() == "a.txt" for p in message["parsed"].walk())


def test_a_resend_carries_the_same_message_id(smtp: SMTPRecorder) -> None:
    ctx = af.Context("run1", "mail")
    first = send_email(**_mail(smtp), ctx=ctx)
    second = send_email(**_mail(smtp), ctx=af.Context("run1", "mail", attempt=2))
    assert first["message_id"] == second["message_id"] == "<run1.mail@autoflow.local>"
    assert {m["message_id"] for m in smtp.messages} == {"<run1.mail@autoflow.local>"}


def test_starttls_and_auth_with_a_credential(
    run_client: af.Client, smtp_tls: SMTPRecorder, certificate: tuple[Path, Path], credential: Any
) -> None:
    credential("smtp", {"user": "bot", "password": PASSWORD})
    config = _mail(smtp_tls, security="starttls", credential="smtp", ca_file=str(certificate[0]))
    info = run_client.execute(one_node("send_email", config)).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert len(smtp_tls.messages) == 1
    assert PASSWORD not in str(one_node("send_email", config).to_dict())


def test_implicit_tls(run_client: af.Client, certificate: tuple[Path, Path]) -> None:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    server = SMTPRecorder(implicit_tls=context)  # (aiosmtpd offers AUTH only after STARTTLS)
    try:
        config = _mail(server, security="tls", ca_file=str(certificate[0]))
        info = run_client.execute(one_node("send_email", config)).wait(timeout=30)
        assert info.status is af.RunStatus.COMPLETED, info.error
        assert len(server.messages) == 1
        # Without the CA the server's certificate is refused: a TLS failure, never sent in clear.
        config = _mail(server, security="tls")
        info = run_client.execute(one_node("send_email", config, {"retries": 0})).wait(timeout=30)
        assert info.status is af.RunStatus.FAILED and "CERTIFICATE_VERIFY_FAILED" in info.nodes["n"].error.message
        assert len(server.messages) == 1
    finally:
        server.close()


def test_a_wrong_password_fails_at_once_and_never_shows(
    run_client: af.Client, smtp_tls: SMTPRecorder, certificate: tuple[Path, Path], credential: Any
) -> None:
    credential("smtp", {"user": "bot", "password": PASSWORD + "-wrong"})
    config = _mail(smtp_tls, security="starttls", credential="smtp", ca_file=str(certificate[0]))
    run = run_client.execute(one_node("send_email", config, FAST))
    info = run.wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert "535" in info.nodes["n"].error.message
    assert PASSWORD not in info.model_dump_json() + log_text(run_client, run.id)
    assert not smtp_tls.messages


def test_tls_is_required_for_credentials(run_client: af.Client, smtp: SMTPRecorder, credential: Any) -> None:
    credential("smtp", {"user": "bot", "password": PASSWORD})
    info = run_client.execute(one_node("send_email", _mail(smtp, credential="smtp"))).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and "without TLS" in info.nodes["n"].error.message


def test_5xx_is_permanent_4xx_is_retried(run_client: af.Client, smtp: SMTPRecorder) -> None:
    info = run_client.execute(one_node("send_email", _mail(smtp, to="x@bounce.test"), FAST)).wait(timeout=30)
    assert (
        info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1 and "550" in info.nodes["n"].error.message
    )
    info = run_client.execute(one_node("send_email", _mail(smtp, to="x@later.test"), FAST)).wait(timeout=30)
    assert (
        info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 3 and "451" in info.nodes["n"].error.message
    )
    assert not smtp.messages


def test_a_partly_refused_message_is_sent_and_reports_the_refusal(run_client: af.Client, smtp: SMTPRecorder) -> None:
    info = run_client.execute(one_node("send_email", _mail(smtp, to=["ok@example.test", "no@bounce.test"]))).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.COMPLETED
    assert info.output["accepted"] == ["ok@example.test"] and list(info.output["refused"]) == ["no@bounce.test"]


def test_header_injection_is_refused(run_client: af.Client, smtp: SMTPRecorder) -> None:
    info = run_client.execute(one_node("send_email", _mail(smtp, subject="Hi\r\nBcc: evil@example.test"))).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert not smtp.messages


def test_a_closed_port_is_retried(run_client: af.Client) -> None:
    from tests.nodes.servers import free_port

    config = {
        "to": "a@b.test",
        "sender": "c@d.test",
        "subject": "s",
        "text": "t",
        "host": "127.0.0.1",
        "port": free_port(),
        "security": "none",
    }
    info = run_client.execute(one_node("send_email", config, {**FAST, "retries": 1})).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 2


@pytest.mark.parametrize("bad", [{"port": 0}, {"security": "ssl"}, {"attachments": [{"filename": "x"}]}])
def test_bad_config_is_refused_when_the_definition_is_built(bad: dict[str, Any]) -> None:
    base = {"to": "a@b.test", "sender": "c@d.test", "subject": "s", "text": "t"}
    with pytest.raises(af.WorkflowError):
        one_node("send_email", {**base, **bad})
