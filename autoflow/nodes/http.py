"""``http_request``: one HTTP call (or a paginated series) with httpx.

Methods, headers, query, JSON / form / raw bodies, auth by credential name (basic,
bearer, header, query), per-request timeouts, pagination with a stop condition and a hard
page limit, body-only or full responses, a "never error" mode, a response size cap and
a policy of target networks (``AUTOFLOW_HTTP_ALLOW`` / ``AUTOFLOW_HTTP_DENY``).

Retries are the engine's (the node's ``retries``/``backoff`` options): the node raises a
:class:`~autoflow.nodes.NodeError` that says whether a retry can help -- connect errors
always; 408/425/429/5xx and timeouts only for idempotent methods or with an idempotency
key -- and how long ``Retry-After`` asks to wait.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoflow import codec
from autoflow.context import Context
from autoflow.define.node import Backoff
from autoflow.nodes.base import NodeError, builtin

if TYPE_CHECKING:  # httpx is imported when a node first makes a request (import autoflow stays cheap)
    import httpx

__all__ = ["Auth", "NetworkPolicy", "Pagination", "client_for", "http_request", "retry_after", "safe_url"]

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)
ALLOW_ENV, DENY_ENV = "AUTOFLOW_HTTP_ALLOW", "AUTOFLOW_HTTP_DENY"

_NAMED_NETS = {
    "loopback": ("127.0.0.0/8", "::1/128"),
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "100.64.0.0/10"),
    "link-local": ("169.254.0.0/16", "fe80::/10"),
    "metadata": ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32"),
    "unspecified": ("0.0.0.0/8", "::/128"),
    "all": ("0.0.0.0/0", "::/0"),
}
#: Denied unless AUTOFLOW_HTTP_DENY says otherwise: cloud metadata and link-local addresses.
DEFAULT_DENY = "link-local,metadata,unspecified"


class Auth(BaseModel):
    """Authentication by credential name (the secret is resolved on the worker).

    ``basic``: the credential is ``{"user": ..., "password": ...}`` or ``"user:password"``;
    ``bearer``: a token (or ``{"token": ...}``); ``header``: the value of header ``name``
    (default ``X-API-Key``); ``query``: the value of query parameter ``name``.

    Example: ``{"type": "header", "credential": "crm", "name": "X-Api-Key"}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["basic", "bearer", "header", "query"]
    credential: str
    name: str | None = None


class Pagination(BaseModel):
    """Follow pages until ``stop_when`` holds, the items run out, or ``max_pages``.

    ``mode="next_url"``: ``next_url`` (JMESPath over ``{"body", "headers", "status"}``)
    gives the next page's URL; ``mode="param"``: query parameter ``param`` counts from
    ``start`` by ``step``. ``items`` (JMESPath into each body) collects the items of all
    pages into one list; ``stop_when`` (JMESPath over ``{"body", "headers", "status",
    "page"}``) ends the series when truthy; without it an empty ``items`` page ends it.

    Example: ``{"mode": "next_url", "next_url": "body.links.next", "items": "body.data",
    "max_pages": 50}``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["next_url", "param"]
    next_url: str | None = None
    param: str | None = None
    start: int = 1
    step: int = 1
    items: str | None = None
    stop_when: str | None = None
    max_pages: int = Field(100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _complete(self) -> Pagination:
        if self.mode == "next_url" and not self.next_url:
            raise ValueError("mode 'next_url' needs next_url (a JMESPath to the next page's URL)")
        if self.mode == "param" and not self.param:
            raise ValueError("mode 'param' needs param (the query parameter that counts pages)")
        for name in ("next_url", "items", "stop_when"):
            source = getattr(self, name)
            if source:
                try:
                    jmespath.compile(source)
                except JMESPathError as exc:
                    raise ValueError(f"{name}: {source!r} does not parse as JMESPath: {exc}") from None
        return self


def _jmespath(source: str, data: dict[str, Any]) -> Any:
    """A JMESPath over a response view (``body``, ``headers``, ``status``, ``page``)."""
    try:
        return jmespath.search(source, data)
    except JMESPathError as exc:
        raise NodeError(f"pagination expression {source!r} failed: {exc}", retryable=False) from None


class NetworkPolicy:
    """Which target addresses HTTP nodes may reach, from ``AUTOFLOW_HTTP_ALLOW`` (if set,
    only these) and ``AUTOFLOW_HTTP_DENY`` (default: link-local, cloud metadata,
    unspecified). Entries are CIDRs or the names loopback, private, link-local, metadata,
    unspecified, all; deny wins. The host's addresses are checked before each connection,
    redirects included.

    Example::

        # AUTOFLOW_HTTP_DENY=loopback,private,link-local,metadata,unspecified
        NetworkPolicy.from_env().check(httpx.URL("http://10.0.0.5/"))   # NodeError, not retried
    """

    def __init__(self, allow: str | None, deny: str | None) -> None:
        self.allow = None if allow is None else self._parse(allow, ALLOW_ENV)
        self.deny = self._parse(DEFAULT_DENY if deny is None else deny, DENY_ENV)

    @staticmethod
    def _parse(text: str, env: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        nets = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            for cidr in _NAMED_NETS.get(entry, (entry,)):
                try:
                    nets.append(ipaddress.ip_network(cidr, strict=False))
                except ValueError:
                    raise NodeError(f"{env}: {entry!r} is neither a CIDR nor one of {sorted(_NAMED_NETS)}") from None
        return nets

    @classmethod
    def from_env(cls) -> NetworkPolicy:
        key = (os.environ.get(ALLOW_ENV), os.environ.get(DENY_ENV))
        cached = _policies.get(key)
        if cached is None:
            cached = _policies[key] = cls(*key)
        return cached

    def check(self, url: httpx.URL) -> str:
        """Resolve ``url``'s host and check every address; returns the first one (the
        address to connect to)."""
        host = url.host
        try:
            infos = socket.getaddrinfo(
                host, url.port or (443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise NodeError(f"cannot resolve host {host!r}: {exc}", retryable=True) from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if any(address in net for net in self.deny):
                raise NodeError(
                    f"{safe_url(url)}: {host} resolves to {address}, which {DENY_ENV} blocks", retryable=False
                )
            if self.allow is not None and not any(address in net for net in self.allow):
                raise NodeError(
                    f"{safe_url(url)}: {host} resolves to {address}, which is not in {ALLOW_ENV}", retryable=False
                )
        if not infos:
            raise NodeError(f"cannot resolve host {host!r}: no address", retryable=True)
        return str(infos[0][4][0]).split("%")[0]


_policies: dict[tuple[str | None, str | None], NetworkPolicy] = {}


def _guarded(inner: httpx.BaseTransport) -> httpx.BaseTransport:
    """A transport that checks every request's target (redirects too) against the network policy."""
    import httpx

    class GuardedTransport(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            address = NetworkPolicy.from_env().check(request.url)
            if request.url.scheme == "http" and _is_name(request.url.host):
                # Connect to the address that was checked, not to a second DNS answer (DNS
                # rebinding); the Host header keeps the name. HTTPS keeps the name: the
                # certificate check stops a name that now points elsewhere.
                request = httpx.Request(
                    request.method,
                    request.url.copy_with(host=address),
                    headers=request.headers,
                    stream=request.stream,
                    extensions=request.extensions,
                )
            return inner.handle_request(request)

        def close(self) -> None:
            inner.close()

    return GuardedTransport()


def _is_name(host: str) -> bool:
    """Whether ``host`` is a DNS name (not an IP literal)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return False


_clients: dict[tuple[int, int], httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(transport: Any) -> httpx.Client:
    """One pooled client per process (and per injected transport): connections are reused.
    Used by every HTTP-calling library node."""
    import httpx

    key = (os.getpid(), id(transport))
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            inner = transport if transport is not None else httpx.HTTPTransport(retries=0)
            found = _clients[key] = httpx.Client(transport=_guarded(inner), follow_redirects=False)
        return found


def safe_url(url: httpx.URL | str) -> str:
    """A URL fit for messages: credentials and secret-looking query values blanked out."""
    return codec.redact_text(str(url))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a response's ``Retry-After`` (seconds or an HTTP date) asks to wait, or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _apply_auth(auth: Auth, ctx: Context, headers: dict[str, str], query: dict[str, Any]) -> httpx.Auth | None:
    import httpx

    secret = ctx.credential(auth.credential)
    if auth.type == "basic":
        if isinstance(secret, dict):
            user, password = str(secret.get("user", secret.get("username", ""))), str(secret.get("password", ""))
        else:
            user, _, password = str(secret).partition(":")
        return httpx.BasicAuth(user, password)
    value = str(secret.get("token", secret.get("value", "")) if isinstance(secret, dict) else secret)
    if auth.type == "bearer":
        headers["Authorization"] = f"Bearer {value}"
    elif auth.type == "header":
        headers[auth.name or "X-API-Key"] = value
    else:
        query[auth.name or "api_key"] = value
    return None


def _read(response: httpx.Response, limit: int, url: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise NodeError(f"{url}: response of {declared} bytes exceeds max_response_bytes={limit}", retryable=False)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise NodeError(f"{url}: response exceeds max_response_bytes={limit}", retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, response: httpx.Response, fmt: str, url: str) -> Any:
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    is_json = "json" in response.headers.get("content-type", "")
    if fmt == "text" or (fmt == "auto" and not is_json):
        return text
    if not raw:
        return None
    try:
        return codec.loads(text)
    except ValueError:
        if fmt == "json":
            raise NodeError(f"{url}: the response is not JSON (response_format='json')", retryable=False) from None
        return text


def _one(client: httpx.Client, request: httpx.Request, ctx: Context, params: _Call) -> tuple[httpx.Response, Any]:
    import httpx

    url = safe_url(request.url)
    retry_ok = params.method in IDEMPOTENT or params.keyed
    try:
        response = client.send(request, stream=True, follow_redirects=params.follow_redirects)
    except httpx.ConnectError as exc:  # nothing reached the server: safe to retry any method
        raise NodeError(f"{params.method} {url}: cannot connect ({exc})") from None
    except httpx.TimeoutException as exc:
        connect = isinstance(exc, httpx.ConnectTimeout)
        raise NodeError(
            f"{params.method} {url}: {type(exc).__name__} after {params.timeout:g}s",
            retryable=connect or retry_ok,
        ) from None
    except httpx.HTTPError as exc:
        raise NodeError(f"{params.method} {url}: {type(exc).__name__}: {exc}", retryable=retry_ok) from None
    try:
        raw = _read(response, params.max_bytes, url)
    except httpx.HTTPError as exc:
        raise NodeError(f"{params.method} {url}: reading the response failed: {exc}", retryable=retry_ok) from None
    finally:
        response.close()
    body = _decode(raw, response, params.response_format, url)
    status = response.status_code
    ctx.log.debug(f"{params.method} {url} -> {status}", data={"bytes": len(raw)})
    if status >= 400 and not params.never_error:
        after = retry_after(response)
        retryable = status in params.retry_statuses and retry_ok
        if after is not None and after > params.max_retry_after:
            retryable = False
        detail = body if isinstance(body, str) else codec.dumps(body)
        raise NodeError(
            f"{params.method} {url} returned {status}: {codec.redact_text(detail)[:300]}",
            retryable=retryable,
            retry_after=after,
            status_code=status,
        )
    return response, body


class _Call:
    """The request options of one node execution."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    method: str
    keyed: bool
    timeout: float
    follow_redirects: bool
    max_bytes: int
    response_format: str
    never_error: bool
    retry_statuses: tuple[int, ...]
    max_retry_after: float


def _shape(response: httpx.Response, body: Any, full: bool) -> Any:
    if not full:
        return body
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}


def _pages(
    client: httpx.Client, first: httpx.Request, ctx: Context, call: _Call, pagination: Pagination
) -> Iterator[tuple[httpx.Response, Any]]:
    request = first
    for page in range(1, pagination.max_pages + 1):
        response, body = _one(client, request, ctx, call)
        yield response, body
        view = {"body": body, "headers": dict(response.headers), "status": response.status_code, "page": page}
        if pagination.stop_when and _jmespath(pagination.stop_when, view):
            return
        if pagination.items and not pagination.stop_when and not _jmespath(pagination.items, {"body": body}):
            return
        ctx.check_cancelled()
        if pagination.mode == "next_url":
            following = _jmespath(pagination.next_url or "", view)
            if not following:
                return
            request = client.build_request(first.method, first.url.join(str(following)), headers=first.headers)
        else:
            value = pagination.start + page * pagination.step
            request = client.build_request(
                first.method,
                first.url.copy_merge_params({pagination.param or "page": value}),
                headers=first.headers,
                content=first.content if first.method != "GET" else None,
            )
    ctx.log.info(f"pagination stopped at max_pages={pagination.max_pages}")


@builtin("http_request", retries=3, backoff=Backoff(base=0.5, factor=2.0, max=30.0, jitter=True))
def http_request(
    url: str,
    ctx: Context,
    method: Method = "GET",
    headers: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    json_body: Any = None,
    form: dict[str, Any] | None = None,
    body: str | None = None,
    content_type: str | None = None,
    auth: Auth | None = None,
    timeout: Annotated[float, Field(gt=0)] = 30.0,
    response: Literal["body", "full"] = "body",
    response_format: Literal["auto", "json", "text"] = "auto",
    never_error: bool = False,
    idempotency_key: bool | str = False,
    retry_statuses: list[int] | None = None,
    max_retry_after: float = 300.0,
    pagination: Pagination | None = None,
    max_response_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024,
    follow_redirects: bool = True,
) -> Any:
    """Call ``url`` and return the response body (``response="full"``: ``{status,
    headers, body}``; with ``pagination``: a list of pages, or of their ``items``).

    Example (JSON definition)::

        {"id": "fetch", "type": "http_request",
         "config": {"url": "https://api.example.com/orders", "query": {"status": "open"},
                    "auth": {"type": "bearer", "credential": "orders_api"},
                    "pagination": {"mode": "param", "param": "page", "items": "data",
                                   "max_pages": 20}}}
    """
    import httpx

    if sum(x is not None for x in (json_body, form, body)) > 1:
        raise NodeError("http_request: give at most one of json_body, form and body", retryable=False)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise NodeError(f"http_request: {safe_url(url)} is not an http(s) URL", retryable=False)
    sent_headers = dict(headers or {})
    params = dict(query or {})
    basic = _apply_auth(auth, ctx, sent_headers, params) if auth else None
    if pagination is not None and pagination.mode == "param":
        params[pagination.param or "page"] = pagination.start
    keyed = idempotency_key is not False
    if keyed:
        sent_headers["Idempotency-Key"] = ctx.idempotency_key if idempotency_key is True else str(idempotency_key)
    if content_type:
        sent_headers["Content-Type"] = content_type
    client = client_for(ctx.http_transport)
    try:
        request = client.build_request(
            method,
            url,
            headers=sent_headers,
            params=params or None,
            json=json_body,
            data=form,
            content=body,
            timeout=httpx.Timeout(timeout),
        )
        if basic is not None:
            request = next(basic.auth_flow(request))
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise NodeError(f"http_request: cannot build the request to {safe_url(url)}: {exc}", retryable=False) from None
    call = _Call(
        method=method,
        keyed=keyed,
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_bytes=max_response_bytes,
        response_format=response_format,
        never_error=never_error,
        retry_statuses=tuple(retry_statuses or RETRY_STATUSES),
        max_retry_after=max_retry_after,
    )
    full = response == "full"
    if pagination is None:
        return _shape(*_one(client, request, ctx, call), full)
    out: list[Any] = []
    for page_response, page_body in _pages(client, request, ctx, call, pagination):
        if pagination.items:
            found = _jmespath(pagination.items, {"body": page_body})
            out.extend(found if isinstance(found, list) else [] if found is None else [found])
        else:
            out.append(_shape(page_response, page_body, full))
    return out
