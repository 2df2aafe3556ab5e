"""Loopback servers for the node library's tests: real sockets, no mocks.

* :class:`HTTPServer` -- a threaded HTTP server on 127.0.0.1 whose routes are Python
  callables; it records every request.
* :class:`FakeWhatsApp` -- the WhatsApp Cloud API's ``/{version}/{phone_id}/messages``
  with its documented success and Graph API error bodies.
* :class:`FakePayments` -- a Stripe-style ``/v1/payment_intents`` implementing Stripe's
  idempotency rules: the first result for a key is saved and replayed
  (``Idempotent-Replayed: true``), the same key with other parameters is a 400
  ``idempotency_error``, the same key while its first request runs is a 409.
* :class:`SMTPRecorder` -- aiosmtpd on 127.0.0.1, optionally with STARTTLS and AUTH,
  recording messages; recipients at ``bounce.test`` get 550, at ``later.test`` 451.

They run in threads of the test process (the chaos test kills workers, not servers).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain; charset=utf-8")
        return json.dumps(self.body).encode(), "application/json"


Handler = Callable[[Request], Response]


class HTTPServer:
    """``server.route("GET", "/items", handler)``; ``server.url("/items")``; ``server.requests``."""

    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        self.delay = delay  # seconds each request takes before its handler runs
        self.routes: dict[tuple[str, str], Handler] = {}
        self.fallback: Handler | None = None
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        outer = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the client died while sending: no request to act on
                    self.close_connection = True  # (as a real server: a cut body is never processed)
                    return
                request = Request(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with outer.lock:
                    outer.requests.append(request)
                if outer.delay:
                    time.sleep(outer.delay)  # the work happens even if the client is gone meanwhile
                handler = outer.routes.get((self.command, parts.path)) or outer.fallback
                response = handler(request) if handler else Response(404, {"error": "no route"})
                data, content_type = response.encoded()
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", content_type)
                    for name, value in response.headers.items():
                        if name.lower() != "content-type":
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client is gone (killed): nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- WhatsApp Cloud API ---------------------------------------------------------------------
def graph_error(code: int, message: str, status: int = 400, details: str | None = None) -> Response:
    """A Graph API error body, as documented (``error.code`` + ``error_data.details``)."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"}
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return Response(status, {"error": error})


class FakeWhatsApp:
    """``POST /{version}/{phone_number_id}/messages``. Token ``good-token`` is valid,
    ``expired-token`` gives error 190. Recipient ``15550001111`` is throttled (130429)
    the first ``throttle`` times; ``15550002222`` is outside the 24-hour window for text
    (131047); template ``missing_template`` gives 132001."""

    TOKEN = "good-token"

    def __init__(self, throttle: int = 1) -> None:
        self.messages: list[dict[str, Any]] = []
        self.throttle = throttle
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[2] != "messages" or request.method != "POST":
            return graph_error(100, "Unsupported request", 400)
        auth = request.headers.get("authorization", "")
        if auth == "Bearer expired-token":
            return graph_error(190, "Error validating access token: Session has expired", 401)
        if auth != f"Bearer {self.TOKEN}":
            return graph_error(190, "Invalid OAuth access token", 401)
        body = request.json()
        if (
            body.get("messaging_product") != "whatsapp"
            or not body.get("to")
            or body.get("type") not in ("text", "template")
        ):
            return graph_error(100, "(#100) Invalid parameter", 400)
        to = body["to"]
        with self.lock:
            if to == "15550001111" and self.throttle > 0:
                self.throttle -= 1
                return graph_error(130429, "Rate limit hit", 400, "Cloud API message throughput has been reached.")
            if to == "15550002222" and body["type"] == "text":
                return graph_error(131047, "Re-engagement message", 400, "More than 24 hours have passed.")
            if body["type"] == "template" and body["template"]["name"] == "missing_template":
                return graph_error(132001, "Template name does not exist in the translation", 404)
            wamid = f"wamid.{uuid.uuid4().hex}"
            self.messages.append({"id": wamid, "phone_number_id": parts[1], **body})
        return Response(
            200,
            {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": wamid}]},
        )


# -- Stripe-style payments ------------------------------------------------------------------
class FakePayments:
    """``POST /v1/payment_intents`` with Stripe's idempotency rules (see the module doc).
    ``payment_method``: ``pm_card_visa`` succeeds, ``pm_card_threeDSecure2Required`` needs
    action, ``pm_card_chargeDeclined`` is declined (402, saved like any result),
    ``pm_card_slow`` takes ``slow_seconds`` (to test the concurrent-request rule)."""

    KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

    def __init__(self, slow_seconds: float = 0.5) -> None:
        self.slow_seconds = slow_seconds
        self.charges: list[dict[str, Any]] = []
        self.saved: dict[str, tuple[str, Response]] = {}
        self.first_params: dict[str, dict[str, str]] = {}  # by key: to show what differed
        self.in_flight: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        if request.path != "/v1/payment_intents" or request.method != "POST":
            return self._error(404, "invalid_request_error", "Unrecognized request URL")
        if request.headers.get("authorization") != f"Bearer {self.KEY}":
            return self._error(401, "invalid_request_error", "Invalid API Key provided")
        params = request.form()
        key = request.headers.get("idempotency-key")
        fingerprint = hashlib.sha256(json.dumps(sorted(params.items())).encode()).hexdigest()
        if key:
            with self.lock:
                if key in self.in_flight:
                    return self._error(
                        409, "idempotency_error", "There is currently another in-progress request using this key"
                    )
                saved = self.saved.get(key)
                if saved is not None:
                    if saved[0] != fingerprint:
                        first = self.first_params.get(key, {})
                        differ = sorted(k for k in {*first, *params} if first.get(k) != params.get(k))
                        return self._error(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same parameters "
                            f"they were first used with (differing: {differ}: "
                            f"{[(first.get(k), params.get(k)) for k in differ]})",
                        )
                    replay = saved[1]
                    return Response(replay.status, replay.body, {**replay.headers, "Idempotent-Replayed": "true"})
                self.in_flight.add(key)
        try:
            response = self._create(params)
        finally:
            if key:
                with self.lock:
                    self.in_flight.discard(key)
                    self.saved[key] = (fingerprint, response)
                    self.first_params.setdefault(key, dict(params))
        return response

    def _create(self, params: dict[str, str]) -> Response:
        if not params.get("amount", "").isdigit() or len(params.get("currency", "")) != 3:
            return self._error(400, "invalid_request_error", "Missing required param: amount or currency")
        method = params.get("payment_method", "pm_card_visa")
        if method == "pm_card_slow":
            time.sleep(self.slow_seconds)
        if method == "pm_card_chargeDeclined":
            return Response(
                402,
                {
                    "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": "generic_decline",
                        "message": "Your card was declined.",
                    }
                },
            )
        intent = {
            "id": f"pi_{uuid.uuid4().hex[:24]}",
            "object": "payment_intent",
            "amount": int(params["amount"]),
            "currency": params["currency"],
            "metadata": {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[")},
            "status": "requires_action" if method == "pm_card_threeDSecure2Required" else "succeeded",
            "next_action": {"type": "use_stripe_sdk"} if method == "pm_card_threeDSecure2Required" else None,
        }
        with self.lock:
            self.charges.append(intent)
        return Response(200, intent)

    @staticmethod
    def _error(status: int, kind: str, message: str) -> Response:
        return Response(status, {"error": {"type": kind, "message": message}})


# -- SMTP -------------------------------------------------------------------------------------
class SMTPRecorder:
    """aiosmtpd on 127.0.0.1 (plain, STARTTLS, or implicit TLS; optional AUTH): ``messages``
    holds ``{"rcpts", "message_id", "subject", "parsed"}``."""

    def __init__(
        self,
        *,
        tls_context: Any = None,
        auth: tuple[str, str] | None = None,
        port: int | None = None,
        implicit_tls: Any = None,
    ) -> None:
        from email import message_from_bytes

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class _Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
                if address.endswith("@bounce.test"):
                    return "550 5.1.1 No such user"
                if address.endswith("@later.test"):
                    return "451 4.3.0 Try again later"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                parsed = message_from_bytes(envelope.original_content or envelope.content)
                with outer.lock:
                    outer.messages.append(
                        {
                            "rcpts": list(envelope.rcpt_tos),
                            "message_id": parsed["Message-ID"],
                            "subject": parsed["Subject"],
                            "parsed": parsed,
                        }
                    )
                return "250 Message accepted for delivery"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and auth is not None
                and (data.login.decode(), data.password.decode()) == auth
            )
            return AuthResult(success=ok, handled=False)

        self.port = port or free_port()
        kwargs: dict[str, Any] = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        if auth is not None:
            kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=tls_context is not None)
        if implicit_tls is not None:  # SMTPS (port 465 style): TLS from the first byte
            kwargs["ssl_context"] = implicit_tls
        self.controller = Controller(_Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
