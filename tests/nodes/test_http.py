"""http_request against a real HTTP server on a loopback socket."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import pytest

import autoflow as af
from tests.nodes.servers import HTTPServer, Request, Response
from tests.nodes.util import log_text, one_node, run

CANARY = "tok-canary-7f3a9c1e55"


def test_get_returns_the_json_body_with_query_and_headers(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/items", lambda r: Response(200, {"items": [1, 2], "q": r.query}))
    info = run(
        run_client,
        "http_request",
        {"url": http_server.url("/items"), "query": {"status": "open"}, "headers": {"X-Trace": "t1"}},
    )
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert info.output == {"items": [1, 2], "q": {"status": "open"}}
    assert http_server.requests[0].headers["x-trace"] == "t1"


def test_full_response_and_text_format(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/t", lambda r: Response(201, "hello", {"X-Mine": "1"}))
    info = run(run_client, "http_request", {"url": http_server.url("/t"), "response": "full"})
    assert info.output["status"] == 201 and info.output["body"] == "hello" and info.output["headers"]["x-mine"] == "1"


@pytest.mark.parametrize(
    ("config", "check"),
    [
        ({"json_body": {"a": 1}}, lambda r: r.json() == {"a": 1} and "json" in r.headers["content-type"]),
        ({"form": {"a": "1", "b": "x y"}}, lambda r: r.form() == {"a": "1", "b": "x y"}),
        (
            {"body": "<x/>", "content_type": "application/xml"},
            lambda r: r.body == b"<x/>" and r.headers["content-type"] == "application/xml",
        ),
    ],
)
def test_bodies(
    run_client: af.Client, http_server: HTTPServer, config: dict[str, Any], check: Callable[[Request], bool]
) -> None:
    http_server.route("POST", "/in", lambda r: Response(200, {"ok": True}))
    info = run(run_client, "http_request", {"url": http_server.url("/in"), "method": "POST", **config})
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert check(http_server.requests[0])


@pytest.mark.parametrize(
    ("auth", "secret", "expected"),
    [
        ({"type": "bearer", "credential": "api"}, CANARY, ("authorization", f"Bearer {CANARY}")),
        ({"type": "header", "credential": "api", "name": "X-Key"}, CANARY, ("x-key", CANARY)),
        (
            {"type": "basic", "credential": "api"},
            {"user": "bob", "password": CANARY},
            ("authorization", "Basic " + base64.b64encode(f"bob:{CANARY}".encode()).decode()),
        ),
    ],
)
def test_auth_by_credential_and_the_secret_never_leaks(
    run_client: af.Client,
    http_server: HTTPServer,
    credential: Any,
    auth: dict[str, Any],
    secret: Any,
    expected: tuple[str, str],
) -> None:
    credential("api", secret)
    # The server echoes what it got in an error: the node's error and logs must not show it.
    http_server.route("GET", "/echo", lambda r: Response(400, f"bad request, you sent {r.headers.get(expected[0])}"))
    wf = one_node("http_request", {"url": http_server.url("/echo"), "auth": auth})
    assert CANARY not in str(wf.to_dict())
    run_ = run_client.execute(wf)
    info = run_.wait(timeout=30)
    assert info.status is af.RunStatus.FAILED
    assert http_server.requests[0].headers[expected[0]] == expected[1]
    assert "400" in info.nodes["n"].error.message
    stored = info.model_dump_json() + log_text(run_client, run_.id)
    assert CANARY not in stored


def test_query_auth(run_client: af.Client, http_server: HTTPServer, credential: Any) -> None:
    credential("api", CANARY)
    http_server.route("GET", "/q", lambda r: Response(200, {"ok": r.query.get("key") == CANARY}))
    info = run(
        run_client,
        "http_request",
        {"url": http_server.url("/q"), "auth": {"type": "query", "credential": "api", "name": "key"}},
    )
    assert info.output == {"ok": True}


def test_a_missing_credential_fails_at_once_naming_it(run_client: af.Client, http_server: HTTPServer) -> None:
    info = run(
        run_client, "http_request", {"url": http_server.url("/"), "auth": {"type": "bearer", "credential": "nowhere"}}
    )
    assert info.status is af.RunStatus.FAILED
    assert info.nodes["n"].attempt == 1
    assert (
        "'nowhere'" in info.nodes["n"].error.message and "AUTOFLOW_CREDENTIAL_NOWHERE" in info.nodes["n"].error.message
    )


def _flaky(statuses: list[int], headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    left = list(statuses)
    lock = threading.Lock()

    def handle(request: Request) -> Response:
        with lock:
            status = left.pop(0) if left else 200
        return Response(status, {"status": status}, (headers or {}) if status != 200 else {})

    return handle


FAST = {"retries": 3, "backoff": {"base": 0.01, "factor": 1.0, "max": 0.01, "jitter": False}}


def test_retries_5xx_honouring_retry_after(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/f", _flaky([503], {"Retry-After": "1"}))
    run_ = run_client.execute(one_node("http_request", {"url": http_server.url("/f")}, FAST))
    info = run_.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED and info.nodes["n"].attempt == 2
    assert "retrying in 1.00s" in log_text(run_client, run_.id)  # Retry-After beat the 0.01 s backoff


def test_429_408_and_5xx_are_retried_404_is_not(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/a", _flaky([429, 408, 502]))
    info = run_client.execute(one_node("http_request", {"url": http_server.url("/a")}, FAST)).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED and info.nodes["n"].attempt == 4
    http_server.route("GET", "/b", _flaky([404]))
    info = run_client.execute(one_node("http_request", {"url": http_server.url("/b")}, FAST)).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert "404" in info.nodes["n"].error.message


def test_a_post_is_retried_only_with_an_idempotency_key(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("POST", "/p", _flaky([503, 503]))
    info = run_client.execute(one_node("http_request", {"url": http_server.url("/p"), "method": "POST"}, FAST)).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    run_ = run_client.execute(
        one_node("http_request", {"url": http_server.url("/p"), "method": "POST", "idempotency_key": True}, FAST)
    )
    info = run_.wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED and info.nodes["n"].attempt == 2
    keys = {r.headers["idempotency-key"] for r in http_server.requests if "idempotency-key" in r.headers}
    assert keys == {f"{run_.id}:n"}  # the same key on every attempt


def test_never_error_returns_the_failure_as_data(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/e", lambda r: Response(500, {"oops": 1}))
    info = run(run_client, "http_request", {"url": http_server.url("/e"), "never_error": True, "response": "full"})
    assert info.status is af.RunStatus.COMPLETED and info.output["status"] == 500 and info.output["body"] == {"oops": 1}


def test_connect_errors_are_retried(run_client: af.Client) -> None:
    from tests.nodes.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/nothing"
    info = run_client.execute(one_node("http_request", {"url": url, "method": "POST"}, {**FAST, "retries": 1})).wait(
        timeout=30
    )
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 2
    assert "cannot connect" in info.nodes["n"].error.message


def test_timeout(run_client: af.Client, http_server: HTTPServer) -> None:
    release = threading.Event()
    http_server.route("GET", "/slow", lambda r: (release.wait(5), Response(200, {}))[1])
    info = run_client.execute(
        one_node("http_request", {"url": http_server.url("/slow"), "timeout": 0.2}, {"retries": 0})
    ).wait(timeout=30)
    release.set()
    assert info.status is af.RunStatus.FAILED and "ReadTimeout" in info.nodes["n"].error.message


def test_pagination_by_parameter_collects_items(run_client: af.Client, http_server: HTTPServer) -> None:
    pages = {"1": [1, 2], "2": [3, 4], "3": [5]}
    http_server.route("GET", "/p", lambda r: Response(200, {"data": pages.get(r.query.get("page", "1"), [])}))
    config = {"url": http_server.url("/p"), "pagination": {"mode": "param", "param": "page", "items": "body.data"}}
    info = run(run_client, "http_request", config)
    assert info.output == [1, 2, 3, 4, 5]
    assert [r.query["page"] for r in http_server.requests] == ["1", "2", "3", "4"]  # the empty 4th page stops it


def test_pagination_by_next_url_with_stop_condition_and_max_pages(
    run_client: af.Client, http_server: HTTPServer
) -> None:
    def page(r: Request) -> Response:
        n = int(r.query.get("n", "1"))
        return Response(200, {"n": n, "next": f"/next?n={n + 1}", "last": n == 3})

    http_server.route("GET", "/next", page)
    config = {
        "url": http_server.url("/next"),
        "pagination": {"mode": "next_url", "next_url": "body.next", "stop_when": "body.last"},
    }
    assert [p["n"] for p in run(run_client, "http_request", config).output] == [1, 2, 3]
    config["pagination"] = {"mode": "next_url", "next_url": "body.next", "max_pages": 2}
    assert [p["n"] for p in run(run_client, "http_request", config).output] == [1, 2]


def test_the_response_size_is_capped(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/big", lambda r: Response(200, "x" * 5000))
    info = run(run_client, "http_request", {"url": http_server.url("/big"), "max_response_bytes": 1000})
    assert info.status is af.RunStatus.FAILED and "max_response_bytes=1000" in info.nodes["n"].error.message
    assert info.nodes["n"].attempt == 1


def test_network_policy(run_client: af.Client, http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    http_server.route("GET", "/", lambda r: Response(200, {}))
    monkeypatch.setenv("AUTOFLOW_HTTP_DENY", "loopback")
    info = run(run_client, "http_request", {"url": http_server.url("/")})
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1
    assert "127.0.0.1" in info.nodes["n"].error.message and "AUTOFLOW_HTTP_DENY" in info.nodes["n"].error.message
    monkeypatch.delenv("AUTOFLOW_HTTP_DENY")
    monkeypatch.setenv("AUTOFLOW_HTTP_ALLOW", "10.0.0.0/8")
    info = run(run_client, "http_request", {"url": f"http://localhost:{http_server.port}/"})
    assert info.status is af.RunStatus.FAILED and "AUTOFLOW_HTTP_ALLOW" in info.nodes["n"].error.message
    assert not http_server.requests  # nothing was sent


def test_the_connection_goes_to_the_address_that_was_checked(
    run_client: af.Client, http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to an allowed address for the check and to another
    one right after. The request must reach the checked address, resolved once."""
    import socket

    real = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        answers.append(host)
        target = "127.0.0.1" if len(answers) == 1 else "10.255.255.1"  # the second answer: elsewhere
        return real(target, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setenv("AUTOFLOW_HTTP_ALLOW", "loopback")
    http_server.route("GET", "/pinned", lambda r: Response(200, {"host": r.headers.get("host")}))
    info = run(run_client, "http_request", {"url": f"http://rebind.test:{http_server.port}/pinned", "timeout": 3})
    assert info.status is af.RunStatus.COMPLETED, info.error
    assert info.output == {"host": f"rebind.test:{http_server.port}"}  # the name, in the Host header
    assert answers == ["rebind.test"]  # resolved once: by the check


def test_a_redirect_to_the_metadata_address_is_blocked(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route(
        "GET", "/r", lambda r: Response(302, "", {"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    info = run(run_client, "http_request", {"url": http_server.url("/r")})
    assert info.status is af.RunStatus.FAILED and "169.254.169.254" in info.nodes["n"].error.message


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"url": "http://x", "method": "FETCH"}, "method"),
        ({"url": "http://x", "pagination": {"mode": "next_url"}}, "next_url"),
        ({"url": "http://x", "auth": {"type": "digest", "credential": "a"}}, "auth"),
        ({"url": "http://x", "timeout": 0}, "timeout"),
        ({"method": "GET"}, "url"),
    ],
)
def test_bad_config_is_refused_when_the_definition_is_built(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(af.WorkflowError, match=fragment) as caught:
        one_node("http_request", config)
    assert "'n'" in str(caught.value)


def test_from_python(run_client: af.Client, http_server: HTTPServer) -> None:
    from autoflow.nodes import http_request

    http_server.route("GET", "/py", lambda r: Response(200, {"v": 7}))

    @af.workflow
    def fetch_py(url: str):
        return http_request(url)

    assert run_client.execute(fetch_py, url=http_server.url("/py")).result(timeout=30) == {"v": 7}
    assert http_request(http_server.url("/py")) == {"v": 7}  # a plain call outside a workflow


def test_retry_on_limits_retries_to_the_listed_statuses(run_client: af.Client, http_server: HTTPServer) -> None:
    http_server.route("GET", "/s", _flaky([500, 500]))
    options = {**FAST, "retry_on": [503]}
    info = run_client.execute(one_node("http_request", {"url": http_server.url("/s")}, options)).wait(timeout=30)
    assert info.status is af.RunStatus.FAILED and info.nodes["n"].attempt == 1  # 500 is not listed
    http_server.route("GET", "/t", _flaky([503]))
    info = run_client.execute(one_node("http_request", {"url": http_server.url("/t")}, options)).wait(timeout=30)
    assert info.status is af.RunStatus.COMPLETED and info.nodes["n"].attempt == 2


def test_a_secret_echoed_in_the_response_is_not_stored(
    run_client: af.Client, http_server: HTTPServer, credential: Any
) -> None:
    credential("api", CANARY)
    http_server.route("GET", "/me", lambda r: Response(200, {"you_sent": r.headers.get("authorization")}))
    info = run(
        run_client, "http_request", {"url": http_server.url("/me"), "auth": {"type": "bearer", "credential": "api"}}
    )
    assert info.status is af.RunStatus.COMPLETED and info.output == {"you_sent": "Bearer ***"}


def test_retry_keeps_a_library_node() -> None:
    from autoflow.nodes import http_request, retry
    from autoflow.nodes.base import LibraryNode

    wrapped = retry(http_request, attempts=2)
    assert isinstance(wrapped, LibraryNode) and wrapped.key == "http_request" and wrapped.options.retries == 1


def test_an_injected_transport_is_used_and_still_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam tests and embedders use (``Context(http_transport=...)``, ``Executor(http_transport=...)``):
    the node's requests go through it, behind the same network policy."""
    import httpx

    from autoflow.nodes import http_request

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"via": "transport"})

    ctx = af.Context("r", "n", http_transport=httpx.MockTransport(answer))
    assert http_request("http://127.0.0.1:9/x", ctx=ctx) == {"via": "transport"} and seen == ["http://127.0.0.1:9/x"]
    monkeypatch.setenv("AUTOFLOW_HTTP_DENY", "loopback")
    with pytest.raises(af.nodes.NodeError, match="AUTOFLOW_HTTP_DENY"):
        http_request("http://127.0.0.1:9/y", ctx=ctx)
    assert len(seen) == 1


def test_cancelling_a_run_stops_a_request_in_flight(settings: af.Settings, http_server: HTTPServer) -> None:
    import time

    arrived, release = threading.Event(), threading.Event()

    def hang(request: Request) -> Response:
        arrived.set()
        release.wait(20)
        return Response(200, {})

    http_server.route("GET", "/hang", hang)
    with af.Client(settings=settings) as client:  # embedded: worker threads
        run_ = client.execute(one_node("http_request", {"url": http_server.url("/hang"), "timeout": 20}))
        assert arrived.wait(20)
        started = time.monotonic()
        run_.cancel()
        info = run_.wait(timeout=10)
        elapsed = time.monotonic() - started
        release.set()
    assert info.status is af.RunStatus.CANCELLED and elapsed < 5.0, elapsed  # ~0.5 s: the watchdog settles it
