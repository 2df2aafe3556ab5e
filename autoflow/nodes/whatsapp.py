"""``whatsapp_send``: a text or template message through the WhatsApp Cloud API.

``POST {api_url}/{api_version}/{phone_number_id}/messages`` with a bearer token (a
credential). The answer's ``messages[0].id`` (a ``wamid``) is the node's result; delivery
statuses arrive later through the messages webhook. Graph API errors are classed by
``error.code``: *retry later* (throughput, pair rate and API rate limits: retried after a
wait), *auth* (expired or missing token, permissions: fails at once, fix the credential)
and *permanent* (invalid recipient, 24-hour window, template errors: fails at once).
The run/node key travels as ``biz_opaque_callback_data``, so webhook statuses and any
duplicate can be traced to the node that sent them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autoflow import codec
from autoflow.context import Context
from autoflow.define.node import Backoff
from autoflow.nodes.base import NodeError, builtin
from autoflow.nodes.http import client_for, safe_url

__all__ = ["ERROR_CLASSES", "Template", "classify", "whatsapp_send"]

#: Graph API error codes and what to do about them (seconds to wait for retry-later ones).
RETRY_LATER = {4: 60.0, 80007: 60.0, 130429: 1.0, 131056: 6.0, 131048: 60.0, 2: 5.0, 131000: 5.0, 133016: 60.0}
AUTH = {0, 3, 10, 190, 200, 299}
ERROR_CLASSES = ("retry_later", "auth", "permanent")


def classify(code: int | None) -> Literal["retry_later", "auth", "permanent"]:
    """The class of a Graph API error code."""
    if code in RETRY_LATER:
        return "retry_later"
    if code in AUTH or (code is not None and 200 <= code <= 299):
        return "auth"
    return "permanent"


class WhatsAppError(NodeError):
    """A Graph API error: ``code``, ``category`` (retry_later, auth, permanent), ``details``."""

    def __init__(self, message: str, *, code: int | None, status_code: int, details: str | None) -> None:
        self.category = classify(code)
        super().__init__(
            message,
            retryable=self.category == "retry_later" or (code is None and status_code >= 500),
            retry_after=RETRY_LATER.get(code or -1),
            status_code=status_code,
            code=code,
        )
        self.details = details


class Template(BaseModel):
    """A pre-approved template: ``name``, ``language`` (e.g. ``pt_BR``) and its
    ``components`` as the Cloud API takes them (header/body/button parameters).

    Example: ``{"name": "order_paid", "language": "pt_BR", "components": [{"type": "body",
    "parameters": [{"type": "text", "text": "42"}]}]}``."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=512)]
    language: str = "en_US"
    components: list[dict[str, Any]] | None = None


def _recipient(value: str) -> str:
    digits = re.sub(r"[\s\-().+]", "", value)
    if not re.fullmatch(r"\d{6,15}", digits):
        raise NodeError(f"whatsapp_send: {value!r} is not a phone number in international format", retryable=False)
    return digits


@builtin("whatsapp_send", retries=3, backoff=Backoff(base=1.0, factor=2.0, max=60.0, jitter=True))
def whatsapp_send(
    to: str,
    phone_number_id: str,
    credential: str,
    ctx: Context,
    text: str | None = None,
    preview_url: bool = False,
    template: Template | None = None,
    api_url: str = "https://graph.facebook.com",
    api_version: str = "v21.0",
    timeout: Annotated[float, Field(gt=0)] = 30.0,
) -> dict[str, Any]:
    """Send ``text`` (inside the 24-hour customer window) or a ``template`` to ``to``;
    returns ``{"message_id": "wamid...", "wa_id", "to", "status": "accepted"}``.

    Example::

        {"id": "notify", "type": "whatsapp_send", "config": {
            "to": {"$expr": "nodes.webhook.data.body.phone"}, "phone_number_id": "1234567890",
            "credential": "whatsapp", "template": {"name": "order_paid", "language": "pt_BR"}}}
    """
    if (text is None) == (template is None):
        raise NodeError("whatsapp_send: give text or template (one of them)", retryable=False)
    if not re.fullmatch(r"[0-9]{1,30}", phone_number_id):
        raise NodeError("whatsapp_send: phone_number_id is the numeric id of the sending number", retryable=False)
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": _recipient(to),
        "biz_opaque_callback_data": ctx.idempotency_key,
    }
    if template is None:
        body.update(type="text", text={"preview_url": preview_url, "body": text})
    else:
        spec: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if template.components:
            spec["components"] = template.components
        body.update(type="template", template=spec)
    token = ctx.credential(credential)
    token = str(token.get("token", "")) if isinstance(token, dict) else str(token)
    url = f"{api_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
    import httpx  # imported on first use: import autoflow stays cheap

    try:
        response = client_for(ctx.http_transport).post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )
    except httpx.ConnectError as exc:
        raise NodeError(f"whatsapp_send: cannot connect to {safe_url(url)}: {exc}") from None
    except httpx.HTTPError as exc:  # the message may have gone out: a retry may duplicate it
        raise NodeError(f"whatsapp_send: {type(exc).__name__} talking to {safe_url(url)}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400 or not isinstance(answer, dict) or "messages" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code") if isinstance(error.get("code"), int) else None
        details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
        message = error.get("message") or response.text[:200]
        raise WhatsAppError(
            f"whatsapp_send: {response.status_code} error {code} ({classify(code)}): "
            f"{codec.redact_text(str(message))}" + (f" - {details}" if details else ""),
            code=code,
            status_code=response.status_code,
            details=details,
        )
    contact = (answer.get("contacts") or [{}])[0]
    wamid = answer["messages"][0].get("id")
    ctx.log.info(f"whatsapp message {wamid} accepted")
    return {"message_id": wamid, "wa_id": contact.get("wa_id"), "to": body["to"], "status": "accepted"}
