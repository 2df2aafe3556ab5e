"""``payment_process``: take a payment through a Stripe-style provider API.

``POST {api_url}/v1/payment_intents`` (form-encoded, as Stripe takes it) with a secret key
(a credential) and an ``Idempotency-Key`` derived from the run, the node and the map
item: a retried or re-delivered node replays the provider's saved result instead of
charging twice. Amounts are integers in minor units (cents) with an ISO 4217 currency.
States that need the customer (``requires_action``, 3-D Secure) are returned as data;
declines are permanent errors; 409 (the same key still in flight), 429 and 5xx are retried.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from autoflow import codec
from autoflow.context import Context
from autoflow.define.node import Backoff
from autoflow.nodes.base import NodeError, builtin
from autoflow.nodes.http import client_for, retry_after, safe_url

__all__ = ["payment_process"]


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError("currency is a three-letter ISO 4217 code such as 'usd' or 'brl'")
    return value.lower()


def _form(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    """Stripe's form encoding of nested values: ``metadata[order]=42``."""
    if isinstance(value, dict):
        for k, v in value.items():
            _form(f"{prefix}[{k}]", v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _form(f"{prefix}[{i}]", v, out)
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    elif value is not None:
        out.append((prefix, str(value)))


class PaymentError(NodeError):
    """The provider refused: ``type`` (card_error, invalid_request_error, idempotency_error,
    api_error, ...), ``code`` and ``decline_code``."""

    def __init__(self, message: str, *, kind: str, code: Any, decline_code: Any, **rest: Any) -> None:
        super().__init__(message, code=code, **rest)
        self.type = kind
        self.decline_code = decline_code


@builtin("payment_process", retries=4, backoff=Backoff(base=0.5, factor=2.0, max=30.0, jitter=True))
def payment_process(
    amount: Annotated[int, Field(gt=0, le=99_999_999)],
    currency: Annotated[str, AfterValidator(_currency)],
    credential: str,
    ctx: Context,
    customer: str | None = None,
    payment_method: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    confirm: bool = True,
    capture_method: Literal["automatic", "manual"] = "automatic",
    idempotency_key: str | None = None,
    api_url: str = "https://api.stripe.com",
    timeout: Annotated[float, Field(gt=0)] = 30.0,
) -> dict[str, Any]:
    """Create (and confirm) a payment of ``amount`` minor units of ``currency``; returns
    ``{"id", "status", "amount", "currency", "requires_action", "next_action",
    "idempotency_key", "replayed"}``. The idempotency key defaults to
    ``af:<run_id>:<node_id>`` (a map item's node id ends in ``[i]``); give one to tie the charge to a business key.

    Example::

        {"id": "charge", "type": "payment_process", "config": {
            "amount": 1999, "currency": "brl", "credential": "stripe",
            "payment_method": {"$expr": "nodes.webhook.data.body.pm"}}}
    """
    key = idempotency_key or f"af:{ctx.idempotency_key}"
    if len(key) > 255:
        raise NodeError("payment_process: the idempotency key is longer than 255 characters", retryable=False)
    fields: list[tuple[str, str]] = []
    params = {
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "payment_method": payment_method,
        "description": description,
        "metadata": {"autoflow_run": ctx.run_id, "autoflow_node": ctx.node_id, **(metadata or {})},
        "confirm": confirm,
        "capture_method": capture_method,
    }
    for name, value in params.items():
        _form(name, value, fields)
    secret = ctx.credential(credential)
    secret = str(secret.get("key", secret.get("token", ""))) if isinstance(secret, dict) else str(secret)
    url = f"{api_url.rstrip('/')}/v1/payment_intents"
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
    import httpx  # imported on first use: import autoflow stays cheap

    try:
        response = client_for(ctx.http_transport).post(url, data=dict(fields), headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:  # the same key on the next attempt makes this safe to retry
        raise NodeError(f"payment_process: {type(exc).__name__} talking to {safe_url(url)}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    status = response.status_code
    if status >= 400:
        error = answer.get("error") if isinstance(answer, dict) else None
        error = error if isinstance(error, dict) else {}
        kind = str(error.get("type") or "api_error")
        retryable = status in (409, 429) or status >= 500
        raise PaymentError(
            f"payment_process: {status} {kind}: {codec.redact_text(str(error.get('message') or response.text[:200]))}",
            kind=kind,
            code=error.get("code"),
            decline_code=error.get("decline_code"),
            retryable=retryable,
            retry_after=retry_after(response) or (0.5 if status == 409 else None),
            status_code=status,
        )
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    state = str(answer.get("status"))
    ctx.log.info(f"payment {answer.get('id')} {state}" + (" (replayed)" if replayed else ""))
    return {
        "id": answer.get("id"),
        "status": state,
        "amount": answer.get("amount"),
        "currency": answer.get("currency"),
        "requires_action": state == "requires_action",
        "next_action": answer.get("next_action"),
        "idempotency_key": key,
        "replayed": replayed,
    }
