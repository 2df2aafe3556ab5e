"""Workflows for the service quick start (docker-compose, the README): the API, workers
and webhooks find them by importing this module (``autoflow serve examples.service_flows``).

``orders`` takes a webhook's JSON body (or ``inputs`` over the API) and totals the order.
"""

from __future__ import annotations

from typing import Any

import autoflow as af


@af.node
def validate_order(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("an order needs a list of items")
    return body


@af.node
def total(order: dict[str, Any], ctx: af.Context) -> dict[str, Any]:
    amount = sum(float(item.get("price", 0)) * int(item.get("qty", 1)) for item in order["items"])
    ctx.log.info("order totalled", data={"items": len(order["items"]), "total": amount})
    return {"order": order.get("id"), "total": round(amount, 2)}


@af.workflow
def orders(body: Any = None):
    return total(validate_order(body))
