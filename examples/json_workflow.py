"""A whole seed-style workflow written as JSON with library nodes only (order_intake.json).

    webhook -> validation -> condition_if -> http_request (big orders) / send_email (small)
            -> database_save -> logger

Needs ``pip install 'autoflow[database,validation]'`` (and ``aiosmtpd`` for the e-mail
branch). Runs on the embedded SQLite backend, or on Redis with ``--redis URL``. The CRM is
a small HTTP server started here on 127.0.0.1, the SMTP server an aiosmtpd on 127.0.0.1,
the shop database a SQLite file; the run is started as the webhook service would start it
(``trigger="webhook"``). The DAG is written to ``order_intake.svg``.

    python examples/json_workflow.py
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import autoflow as af

HERE = Path(__file__).resolve().parent


def crm_server() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            print(f"  CRM got {body.decode()} (Idempotency-Key {self.headers.get('Idempotency-Key')})")
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def smtp_server() -> Any:
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        return None

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            print(f"  SMTP got a message for {envelope.rcpt_tos}")
            return "250 OK"

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL (default: the embedded SQLite backend)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="autoflow-json-"))
    shop = folder / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, email TEXT, total REAL, route TEXT, message_id TEXT)"
        )
    os.environ["AUTOFLOW_CREDENTIAL_SHOP_DB"] = f"sqlite:///{shop}"  # a credential, never in the definition
    os.environ.setdefault("AUTOFLOW_HOME", str(folder / "home"))

    definition = json.loads((HERE / "order_intake.json").read_text())
    wf = af.Workflow.from_dict(definition)
    (folder / "order_intake.svg").write_text(wf.to_svg())
    print(f"{wf}: DAG drawn to {folder / 'order_intake.svg'}")

    crm, smtp = crm_server(), smtp_server()
    inputs = {"crm_url": f"http://127.0.0.1:{crm.server_address[1]}", "smtp_port": smtp.port if smtp else 1}
    orders = [{"id": "A-100", "email": "ana@example.com", "total": 250}]
    if smtp is not None:
        orders.append({"id": "B-7", "email": "bo@example.com", "total": 19.9})
    with af.Client(args.redis, workers=4) if args.redis else af.Client() as client:
        for order in orders:
            request = {"method": "POST", "path": "/orders", "headers": {}, "query": {}, "body": order}
            run = client.execute(wf, inputs, trigger="webhook", trigger_data=request)
            print(f"run {run.id}: {run.result(timeout=60)['message']}")
    with sqlite3.connect(shop) as db:
        for row in db.execute("SELECT * FROM orders ORDER BY order_id"):
            print("  row", row)
    crm.shutdown()
    if smtp is not None:
        smtp.stop()


if __name__ == "__main__":
    main()
