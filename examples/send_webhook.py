"""Send a signed webhook delivery (Standard Webhooks), as a provider would.

    AUTOFLOW_WEBHOOK_SECRET=whsec_... python examples/send_webhook.py \\
        http://localhost:8000/hooks/orders/created '{"id": "A1", "items": [{"price": 9.5, "qty": 2}]}' [--wait 10]

Prints the answer: 202 with the run id (or, with --wait, 200 with the result). Sending
the same delivery twice (--id) starts one run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import httpx

from autoflow.triggers.webhooks import sign


def main() -> int:
    parser = argparse.ArgumentParser(description="send a signed webhook delivery")
    parser.add_argument("url")
    parser.add_argument("body", help="the JSON body")
    parser.add_argument("--id", default=None, help="the delivery id (default: a new one)")
    parser.add_argument("--wait", type=float, default=None, help="ask the server to wait for the result")
    args = parser.parse_args()
    secret = os.environ.get("AUTOFLOW_WEBHOOK_SECRET", "").split()
    if not secret:
        print("set AUTOFLOW_WEBHOOK_SECRET (the receiver's secret)", file=sys.stderr)
        return 2
    msg_id = args.id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    body = args.body.encode()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret[0], msg_id, timestamp, body),
        "content-type": "application/json",
    }
    params = {"wait": args.wait} if args.wait else None
    reply = httpx.post(args.url, content=body, headers=headers, params=params, timeout=(args.wait or 0) + 10)
    print(reply.status_code, reply.text)
    return 0 if reply.status_code < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
