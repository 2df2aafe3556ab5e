"""``send_email``: one message over SMTP (stdlib ``smtplib`` and ``email``).

Implicit TLS (port 465) or STARTTLS (required before credentials are sent), AUTH by
credential name, text and/or HTML bodies and attachments. Replies classify retries: a
4xx (421, 450, 451, 452) is transient and retried by the engine, a 5xx is permanent.
The ``Message-ID`` is derived from the run, node (and map item): a retried node sends
the same message, which receiving systems deduplicate by that id.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoflow.context import Context
from autoflow.define.node import Backoff
from autoflow.nodes.base import NodeError, builtin

__all__ = ["Attachment", "message_id", "send_email"]


class Attachment(BaseModel):
    """A file attached to a message: ``content`` (text) or ``content_base64`` (bytes).

    Example: ``{"filename": "invoice.csv", "content": "id,total\\n1,9.90", "content_type": "text/csv"}``."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=255)]
    content: str | None = None
    content_base64: str | None = None
    content_type: str = "application/octet-stream"

    @model_validator(mode="after")
    def _one_content(self) -> Attachment:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError(f"attachment {self.filename!r}: give content or content_base64")
        if "/" not in self.content_type:
            raise ValueError(f"attachment {self.filename!r}: content_type must be type/subtype")
        return self

    def payload(self) -> bytes:
        if self.content is not None:
            return self.content.encode()
        try:
            return base64.b64decode(self.content_base64 or "", validate=True)
        except ValueError:
            raise NodeError(f"attachment {self.filename!r}: content_base64 is not base64", retryable=False) from None


def message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID of the message a node sends: the same for every attempt."""
    local = re.sub(r"[^A-Za-z0-9.\-_]", "-", idempotency_key.replace(":", "."))
    return f"<{local}@{domain}>"


def _addresses(value: str | list[str] | None, field: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    for item in items:
        if "\r" in item or "\n" in item or "@" not in item:
            raise NodeError(f"send_email: {field} address {item!r} is not an e-mail address", retryable=False)
    return items


def _reply_error(code: int, text: str) -> NodeError:
    transient = 400 <= code < 500
    return NodeError(f"SMTP {code}: {text}", retryable=transient, code=str(code))


@builtin("send_email", retries=3, backoff=Backoff(base=2.0, factor=2.0, max=120.0, jitter=True))
def send_email(
    to: str | list[str],
    subject: str,
    sender: str,
    ctx: Context,
    text: str | None = None,
    html: str | None = None,
    cc: str | list[str] | None = None,
    bcc: str | list[str] | None = None,
    reply_to: str | None = None,
    attachments: list[Attachment] | None = None,
    headers: dict[str, str] | None = None,
    host: str = "localhost",
    port: Annotated[int, Field(ge=1, le=65535)] = 587,
    security: Literal["starttls", "tls", "none"] = "starttls",
    credential: str | None = None,
    ca_file: str | None = None,
    timeout: Annotated[float, Field(gt=0)] = 30.0,
    message_id_domain: str = "autoflow.local",
) -> dict[str, Any]:
    """Send one message; returns ``{"message_id", "accepted": [...], "refused": {addr:
    [code, text]}}``. ``credential`` names ``{"user": ..., "password": ...}`` (it may
    also carry ``host``/``port``); credentials are only sent over TLS.

    Example::

        {"id": "mail", "type": "send_email", "config": {
            "to": {"$expr": "nodes.webhook.data.body.email"}, "sender": "shop@example.com",
            "subject": "Thanks", "text": "We got your order.",
            "host": "smtp.example.com", "port": 587, "credential": "smtp"}}
    """
    if text is None and html is None:
        raise NodeError("send_email: give text, html or both", retryable=False)
    recipients = _addresses(to, "to") + _addresses(cc, "cc") + _addresses(bcc, "bcc")
    if not recipients:
        raise NodeError("send_email: no recipient", retryable=False)
    login = ctx.credential(credential) if credential else None
    if isinstance(login, dict):
        host, port = str(login.get("host", host)), int(login.get("port", port))
    if login is not None and security == "none":
        raise NodeError("send_email: refusing to send credentials without TLS (security='none')", retryable=False)
    mid = message_id(ctx.idempotency_key, message_id_domain)
    try:
        msg = EmailMessage()
        msg["From"] = _addresses(sender, "sender")[0]
        msg["To"] = ", ".join(_addresses(to, "to"))
        if cc:
            msg["Cc"] = ", ".join(_addresses(cc, "cc"))
        if reply_to:
            msg["Reply-To"] = _addresses(reply_to, "reply_to")[0]
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = mid
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(text if text is not None else "This message is HTML; open it in an HTML mail reader.")
        if html is not None:
            msg.add_alternative(html, subtype="html")
        for item in attachments or []:
            maintype, subtype = item.content_type.split("/", 1)
            msg.add_attachment(item.payload(), maintype=maintype, subtype=subtype, filename=item.filename)
    except (ValueError, TypeError) as exc:  # e.g. CR/LF in a header: header injection is refused
        raise NodeError(f"send_email: cannot build the message: {exc}", retryable=False) from None
    context = ssl.create_default_context(cafile=ca_file) if security != "none" else None
    try:
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            if security == "tls"
            else smtplib.SMTP(host, port, timeout=timeout)
        )
        with smtp:
            if security == "starttls":
                smtp.starttls(context=context)
            if isinstance(login, dict):
                smtp.login(str(login.get("user", "")), str(login.get("password", "")))
            elif isinstance(login, str):
                user, _, password = login.partition(":")
                smtp.login(user, password)
            refused = smtp.send_message(msg, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _text) in exc.recipients.items()}
        transient = all(400 <= c < 500 for c in codes.values())
        raise NodeError(
            f"SMTP refused every recipient: {', '.join(f'{a} ({c})' for a, c in codes.items())}",
            retryable=transient,
            code=str(max(codes.values())),
        ) from None
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        raise _reply_error(exc.smtp_code, text) from None
    except (smtplib.SMTPException, OSError) as exc:  # connection lost or refused, TLS failure: try again
        raise NodeError(f"SMTP {host}:{port}: {type(exc).__name__}: {exc}") from None
    bad = {addr: [code, reply.decode(errors="replace")] for addr, (code, reply) in refused.items()}
    if bad:
        ctx.log.warn(f"some recipients were refused: {', '.join(bad)}", data={"refused": bad})
    ctx.log.info(f"sent {mid} to {len(recipients) - len(bad)} recipient(s)")
    return {"message_id": mid, "accepted": [r for r in recipients if r not in bad], "refused": bad}
