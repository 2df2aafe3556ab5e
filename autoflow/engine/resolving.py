"""What a claimed node refers to: its run's signature, its workflow's definition, its function.

Each is found once and kept in a bounded cache: a run's signature is checked once per run,
a definition parsed once per digest, code shipped by value unpacked once per content hash.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from autoflow import codec
from autoflow.define.definition import NodeSpec, parse_definition
from autoflow.define.node import Node, resolve_node
from autoflow.define.workflow import WorkflowRegistry
from autoflow.engine.shipping import CodeRefused, blob_key, unpack
from autoflow.engine.signing import verify_claim, verify_definition
from autoflow.errors import NotFoundError
from autoflow.store.base import Claim, Store

__all__ = ["Resolving"]


class _Plan:
    """A parsed definition: node specs and the nodes used as when= conditions."""

    def __init__(self, specs: dict[str, NodeSpec]) -> None:
        self.specs = specs
        self.conditions = {s.when[0] for s in specs.values() if s.when}


class Resolving:
    """Definitions and functions of :class:`~autoflow.engine.executor.Executor`, and the
    caches behind them (set up by its constructor)."""

    store: Store
    registry: WorkflowRegistry
    secret: bytes | None
    accepts_code: bool
    _code_secret: bytes | None
    _lock: threading.Lock
    _plans: OrderedDict[str, _Plan]
    _verified: OrderedDict[tuple[str, str | None], None]  # see _verify
    _shipped: OrderedDict[str, dict[str, Node[Any, Any]]]

    def _verify(self, claim: Claim) -> None:
        """Check the run's signature once per run and signature (its signed facts are the
        same for every node of the run; an HMAC per node would be a fifth of a step)."""
        if not self.secret:
            return
        seen = (claim.run_id, claim.signature)
        with self._lock:
            if seen in self._verified:
                return
        verify_claim(self.secret, claim)
        with self._lock:
            self._verified[seen] = None
            while len(self._verified) > 1024:
                self._verified.popitem(last=False)

    def _plan(self, claim: Claim) -> _Plan:
        plan = self._plans.get(claim.digest)  # a dict read needs no lock; the cache keeps the newest 256
        if plan is not None:
            return plan
        body = self.store.get_definition(claim.digest)
        if body is None:
            raise NotFoundError(f"definition {claim.digest} of workflow {claim.workflow!r} is missing")
        definition = codec.loads(body)
        verify_definition(definition, claim.digest)
        plan = _Plan(parse_definition(definition)[0])
        with self._lock:
            self._plans[claim.digest] = plan
            while len(self._plans) > 256:
                self._plans.popitem(last=False)
        return plan

    def _node(self, node_type: str, code: str | None) -> Node[Any, Any]:
        """The function of ``node_type``: built-in, registered, else shipped with the run
        (found by the hash of the code's content, so edited code is never confused with
        an earlier version, nor one user's code with another's)."""
        try:
            return resolve_node(self.registry, node_type)
        except NotFoundError as missing:
            if code is None:
                raise
            with self._lock:
                shipped = self._shipped.get(code)
            if shipped is None:
                blob = self.store.get_blob(blob_key(code))
                if blob is None:
                    raise
                if not self.accepts_code:
                    raise CodeRefused(
                        f"{missing}. It was shipped by value, but this worker does not accept code: "
                        "start it with `autoflow worker ... --accept-code` and the sender's AUTOFLOW_SECRET"
                    ) from None
                shipped = unpack(blob, self._code_secret, code)
                with self._lock:
                    self._shipped[code] = shipped
                    while len(self._shipped) > 64:
                        self._shipped.popitem(last=False)
            if node_type not in shipped:
                raise
            return shipped[node_type]
