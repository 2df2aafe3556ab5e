"""Shipping node code by value (opt-in): run a notebook's nodes on remote workers.

Trust model — read this before turning it on:

* ``af.Client(url, ship_code=True)`` pickles (with cloudpickle) the functions of the
  workflow's nodes that live in ``__main__`` (a notebook or script), signs them with
  HMAC-SHA256 under ``AUTOFLOW_SECRET`` and stores them under the hash of their content;
  each run records that hash (in its signed record), so a run executes exactly the code
  it was submitted with: an edited cell ships new code under a new hash.
* A worker unpickles shipped code only when started with ``--accept-code`` **and** the
  signature verifies with its own ``AUTOFLOW_SECRET``. Unpickling runs arbitrary code:
  whoever holds the secret can run code on every worker that accepts code. Treat the
  secret like a root password, give it only to people you would give a shell on the
  workers, and keep Redis private (AUTH/ACL, no public network).
* Workers without ``--accept-code`` never unpickle anything; such nodes fail with an
  error that says how to enable it. Queue messages stay JSON either way.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from autoflow.define.node import Node
from autoflow.errors import WorkflowError

try:  # optional: pip install 'autoflow[notebook]'
    import cloudpickle
except ImportError:  # pragma: no cover - exercised only without the extra
    cloudpickle = None

__all__ = ["CodeRefused", "blob_key", "code_hash", "pack", "unpack"]

_CONTEXT = b"autoflow-code:"


class CodeRefused(WorkflowError):
    """Shipped code that this worker will not run (not accepted, or bad signature)."""


def blob_key(code: str) -> str:
    """Where shipped code whose content hash is ``code`` is stored."""
    return f"code:{code}"


def code_hash(blob: bytes) -> str:
    """The content hash of a packed blob: the name runs refer to it by."""
    return hashlib.sha256(blob).hexdigest()[:32]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(hashlib.sha256(_CONTEXT + secret).digest(), payload, hashlib.sha256).hexdigest().encode()


def pack(nodes: Mapping[str, Node[Any, Any]], secret: bytes | None) -> bytes:
    """Sign and pickle ``{registry key: node}`` (function + options, by value)."""
    if cloudpickle is None:
        raise WorkflowError("ship_code needs cloudpickle: pip install 'autoflow[notebook]'")
    if not secret:
        raise WorkflowError(
            "ship_code needs AUTOFLOW_SECRET (the same on the client and the workers) to sign "
            "the code it sends; see the trust model in docs/notebook.md"
        )
    payload: bytes = cloudpickle.dumps({key: (node.fn, node.options) for key, node in nodes.items()})
    return _mac(secret, payload) + b"." + payload


def unpack(blob: bytes, secret: bytes | None, code: str | None = None) -> dict[str, Node[Any, Any]]:
    """Verify and unpickle shipped code; CodeRefused if the signature (or, given ``code``,
    the content hash) does not match."""
    if code is not None and not hmac.compare_digest(code_hash(blob), code):
        raise CodeRefused(f"shipped code {code} does not match its content hash (it was changed)")
    if cloudpickle is None:
        raise CodeRefused("this worker cannot load shipped code: cloudpickle is not installed")
    if not secret:
        raise CodeRefused("this worker has no AUTOFLOW_SECRET, so it cannot verify shipped code")
    mac, sep, payload = blob.partition(b".")
    if not sep or not hmac.compare_digest(mac, _mac(secret, payload)):
        raise CodeRefused("shipped code has a bad signature: AUTOFLOW_SECRET differs from the sender's")
    shipped = cloudpickle.loads(payload)  # verified: signed by a holder of the secret
    nodes: dict[str, Node[Any, Any]] = {}
    for key, (fn, options) in shipped.items():
        made: Node[Any, Any] = Node(fn, options)
        made.key = key
        nodes[key] = made
    return nodes
