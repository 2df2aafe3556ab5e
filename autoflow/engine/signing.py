"""What a worker with ``AUTOFLOW_SECRET`` agrees to execute.

Threat model (docs/reliability.md, "Who can make workers run what"): whoever can write
to the store (Redis) but does not hold the secret must not be able to make workers run a
node with inputs of their choosing, nor someone else's shipped code. So, when a secret is
set:

* queue messages are signed (``dispatch.JsonSerializer``): a forged one is dropped;
* a run record is signed when it is created (by a client, or by a worker starting a
  sub-workflow): its id, workflow, definition digest, inputs, shipped-code hash and
  parent; a worker verifies the signature when it claims a node and fails the node with
  :class:`SignatureError` (never runs it) when it does not match;
* a definition is checked against its digest before use, so a record cannot point a
  signed digest at other content;
* shipped code is signed too and stored by the hash of its content (``shipping``).

Not covered (Redis access control is the defence there): deleting or rewriting state
(denial of service), replaying work that was already signed, altering a recorded node
output that later nodes read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from autoflow.errors import WorkflowError
from autoflow.store.base import Claim, NewRun

__all__ = ["KEYCHECK_BLOB", "SignatureError", "keycheck", "sign_run", "verify_claim", "verify_definition"]

#: Where workers publish the fingerprint of their secret (see :func:`keycheck`).
KEYCHECK_BLOB = "keycheck"

_CONTEXT = b"autoflow-run:"


class SignatureError(WorkflowError):
    """A run or definition that this worker will not execute: not signed with its secret,
    or changed since it was signed."""


def _key(secret: bytes) -> bytes:
    return hashlib.sha256(_CONTEXT + secret).digest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _payload(run_id: str, workflow: str, digest: str, inputs: Mapping[str, Any], code: str | None) -> bytes:
    return _canonical([run_id, workflow, digest, inputs, code or ""]).encode("utf-8", "surrogatepass")


def sign_run(secret: bytes | None, run: NewRun) -> str | None:
    """The signature of a run about to be created (None without a secret)."""
    if not secret:
        return None
    payload = _payload(run.id, run.workflow, run.digest, run.inputs, run.code)
    return hmac.new(_key(secret), payload, hashlib.sha256).hexdigest()


def verify_claim(secret: bytes | None, claim: Claim) -> None:
    """Raise SignatureError unless the claimed run was signed with ``secret`` (no-op
    for a worker without a secret)."""
    if not secret:
        return
    if not claim.signature:
        raise SignatureError(
            f"run {claim.run_id} was created without AUTOFLOW_SECRET, and this worker only runs "
            "signed runs: submit it from a client with the workers' AUTOFLOW_SECRET"
        )
    payload = _payload(claim.run_id, claim.workflow, claim.digest, claim.inputs, claim.code)
    expected = hmac.new(_key(secret), payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, claim.signature):
        raise SignatureError(
            f"run {claim.run_id} is not signed with this worker's AUTOFLOW_SECRET (a different secret, "
            "or the run record was changed after it was created)"
        )


def verify_definition(definition: Mapping[str, Any], digest: str) -> None:
    """Raise SignatureError if ``definition`` is not the one its digest names."""
    actual = hashlib.sha256(_canonical(definition).encode()).hexdigest()[:32]
    if not hmac.compare_digest(actual, digest):
        raise SignatureError(f"the definition stored under digest {digest} does not match it (it was changed)")


def keycheck(secret: bytes | None) -> str:
    """A fingerprint of a secret (or of its absence) that says whether two processes share
    it without revealing it."""
    if not secret:
        return "none"
    return hmac.new(_key(secret), b"keycheck", hashlib.sha256).hexdigest()[:16]
