"""Webhook deliveries: Standard Webhooks signatures, checked over the raw body.

A sender signs ``"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256 and sends
``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(``v1,<base64>``, several separated by spaces while it rotates keys). A delivery is
accepted when one signature matches one of the receiver's secrets (several during a key
rotation on this side) and the timestamp is within five minutes of now. The delivery id
then deduplicates: a provider retrying the same delivery gets the run of the first.

Secrets are ``whsec_<base64 key>`` (as Standard Webhooks, Svix) or any other text, used
as UTF-8 bytes. Pure functions and one small class: no I/O.

Example::

    verifier = Verifier(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
    delivery = verifier.verify(request_headers, raw_body)   # or WebhookRejected
    client.execute(wf, inputs, trigger="webhook",
                   idempotency_key=delivery_key("acme", "orders", delivery.id))
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoflow import codec
from autoflow.errors import AutoflowError

__all__ = ["TOLERANCE_SECONDS", "Delivery", "Verifier", "WebhookRejected", "delivery_key", "sign"]

#: How far a delivery's timestamp may be from now, either way (Standard Webhooks: 5 min).
TOLERANCE_SECONDS = 300
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


class WebhookRejected(AutoflowError, ValueError):
    """A delivery failed verification. ``reason`` says why without echoing secrets;
    ``missing`` is True when a required header was absent (a 400, not a 401)."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: its id (for deduplication) and timestamp."""

    id: str
    timestamp: int


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ webhook secret must be base64 after the prefix") from None
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery (what a sender puts in ``webhook-signature``)."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def delivery_key(organization_id: str | None, workflow_id: str, delivery_id: str, *, test: bool = False) -> str:
    """The idempotency key of a delivery: one run per (organization, workflow, id, mode)."""
    mode = "webhook-test" if test else "webhook"
    return f"{mode}:{organization_id or ''}:{workflow_id}:{delivery_id}"


class Verifier:
    """Checks deliveries against one or more secrets (more than one while rotating).

    Example::

        Verifier(["whsec_new...", "whsec_old..."]).verify(headers, body)
    """

    def __init__(self, secrets: Sequence[str], *, tolerance: float = TOLERANCE_SECONDS) -> None:
        if not secrets:
            raise ValueError("a webhook verifier needs at least one secret")
        self._keys = [_key(s) for s in secrets]
        for secret in secrets:  # never shown in logs or errors, whatever the context
            codec.register_secret(secret)
            codec.register_secret(secret.removeprefix("whsec_"))
        self.tolerance = tolerance

    def __repr__(self) -> str:  # never the secrets
        return f"<Verifier {len(self._keys)} secret(s), tolerance {self.tolerance:g}s>"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Delivery:
        """The delivery if its signature and timestamp hold; else :class:`WebhookRejected`.
        ``headers`` are looked up case-insensitively; ``body`` is the raw request body."""
        lower = {k.lower(): v for k, v in headers.items()}
        msg_id, stamp, signatures = (lower.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
        for name, value in (("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", signatures)):
            if not value:
                raise WebhookRejected(f"missing header {name}", missing=True)
        if not _ID.match(msg_id):
            raise WebhookRejected("header webhook-id must be 1-200 characters of A-Z a-z 0-9 _ . : -")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise WebhookRejected("header webhook-timestamp must be unix seconds") from None
        now = time.time() if now is None else now
        if timestamp < now - self.tolerance:
            raise WebhookRejected("header webhook-timestamp is too old (more than 5 minutes)")
        if timestamp > now + self.tolerance:
            raise WebhookRejected("header webhook-timestamp is in the future (more than 5 minutes)")
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = [hmac.new(k, signed, hashlib.sha256).digest() for k in self._keys]
        for candidate in signatures.split():
            version, _, value = candidate.partition(",")
            if version != "v1":
                continue
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if any(hmac.compare_digest(given, e) for e in expected):
                return Delivery(msg_id, timestamp)
        raise WebhookRejected("no valid signature in header webhook-signature")
