"""JWT negatives over HTTP, and RS256/ES256 keys: every bad token is a 401 JSON answer."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import autoflow as af
from autoflow.server import Authenticator, mint_token
from autoflow.server.auth import AuthError
from tests.server.conftest import SECRET, Api


def _pem(key: Any) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


RSA_PRIVATE, RSA_PUBLIC = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PRIVATE, EC_PUBLIC = _pem(ec.generate_private_key(ec.SECP256R1()))


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    body = {"sub": "u1", "org": "acme", "scope": "read", "iat": now, "exp": now + 600, "aud": "autoflow", "iss": "idp"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _none_token(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _tampered() -> str:
    head, body, sig = jwt.encode(_claims(), SECRET, algorithm="HS256").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["org"] = "beta"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


NOW = int(time.time())
NEGATIVE: list[tuple[str, Callable[[], str], str]] = [
    ("expired", lambda: jwt.encode(_claims(exp=NOW - 60), SECRET, algorithm="HS256"), "expired"),
    ("nbf in the future", lambda: jwt.encode(_claims(nbf=NOW + 600), SECRET, algorithm="HS256"), "not valid yet"),
    ("wrong audience", lambda: jwt.encode(_claims(aud="other"), SECRET, algorithm="HS256"), "audience"),
    ("no audience", lambda: jwt.encode(_claims(aud=None), SECRET, algorithm="HS256"), "'aud'"),
    ("wrong issuer", lambda: jwt.encode(_claims(iss="evil"), SECRET, algorithm="HS256"), "issuer"),
    ("no exp", lambda: jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"), "'exp'"),
    ("no org", lambda: jwt.encode(_claims(org=None), SECRET, algorithm="HS256"), "'org'"),
    ("alg none", lambda: _none_token(_claims()), "'none' is not accepted"),
    ("HS256 signed with the RSA public key", lambda: _hs_with_public_key(), "invalid"),
    ("tampered payload", _tampered, "invalid"),
    ("wrong secret", lambda: jwt.encode(_claims(), "not-the-secret-" * 4, algorithm="HS256"), "invalid"),
    ("RS256 from another key", lambda: jwt.encode(_claims(), _other_rsa(), algorithm="RS256"), "invalid"),
    ("HS512 not configured", lambda: jwt.encode(_claims(), SECRET, algorithm="HS512"), "'HS512' is not accepted"),
    ("not a JWT", lambda: "hello.world", "does not hold a JWT"),
]


def _hs_with_public_key() -> str:
    # PyJWT refuses to sign with a PEM as an HMAC secret, so forge by hand (the classic attack).
    import hashlib
    import hmac

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(_claims())}"
    mac = hmac.new(RSA_PUBLIC.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _other_rsa() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))[0]


@pytest.fixture
def keyed_api(make_api: Callable[..., Api], tmp_path: Path) -> Api:
    public = tmp_path / "jwt.pub"
    public.write_text(RSA_PUBLIC)
    return make_api(jwt_public_key_file=public, jwt_algorithms="HS256,RS256", jwt_audience="autoflow", jwt_issuer="idp")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("case", "make", "words"), NEGATIVE, ids=[c[0] for c in NEGATIVE])
def test_bad_tokens_are_refused(keyed_api: Api, case: str, make: Callable[[], str], words: str) -> None:
    reply = keyed_api.http.get("/api/executions", headers={"Authorization": f"Bearer {make()}"})
    assert reply.status_code == 401, (case, reply.text)
    assert reply.headers["content-type"] == "application/problem+json"
    assert words in reply.json()["detail"], reply.json()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_good_tokens_of_each_algorithm(keyed_api: Api) -> None:
    for token in (
        jwt.encode(_claims(), SECRET, algorithm="HS256"),
        jwt.encode(_claims(), RSA_PRIVATE, algorithm="RS256"),
    ):
        assert keyed_api.http.get("/api/executions", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    missing = keyed_api.http.get("/api/executions")
    assert missing.status_code == 401 and "no bearer JWT" in missing.json()["detail"]
    basic = keyed_api.http.get("/api/executions", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_es256_and_algorithm_binding(tmp_path: Path) -> None:
    auth = Authenticator(public_key=EC_PUBLIC, algorithms=["ES256"])
    good = jwt.encode(_claims(aud=None, iss=None), EC_PRIVATE, algorithm="ES256")
    assert auth.decode(good).organization == "acme"
    with pytest.raises(AuthError, match="'HS256' is not accepted"):
        auth.decode(jwt.encode(_claims(aud=None, iss=None), SECRET, algorithm="HS256"))
    with pytest.raises(AuthError, match="no key configured"):
        Authenticator(secret=SECRET.encode(), algorithms=["RS256"])
    with pytest.raises(AuthError, match="AUTOFLOW_JWT_SECRET"):
        Authenticator()
    assert "secret" not in repr(Authenticator(secret=SECRET.encode())).lower()
    with pytest.raises(AuthError, match="at least 32 bytes"):
        Authenticator(secret=b"short")


def test_minted_tokens_and_scopes() -> None:
    settings = af.Settings(jwt_secret=SECRET, jwt_audience="autoflow")
    auth = Authenticator.from_settings(settings)
    principal = auth.decode(mint_token(settings, sub="bot", org="acme", scopes=["execute"]))
    assert principal.can("read") and principal.can("execute") and not principal.can("admin")
    assert principal.user == "bot" and "token_id" not in repr(principal)
    rs = mint_token(settings, sub="bot", org="acme", private_key=RSA_PRIVATE, algorithm="RS256")
    assert Authenticator(public_key=RSA_PUBLIC, audience="autoflow").decode(rs).user == "bot"
    with pytest.raises(AuthError, match="unknown scope"):
        mint_token(settings, sub="bot", org="acme", scopes=["root"])
    with pytest.raises(AuthError, match="AUTOFLOW_JWT_SECRET"):
        mint_token(af.Settings(), sub="bot", org="acme")
    with pytest.raises(AuthError, match="AUTOFLOW_JWT_PUBLIC_KEY_FILE"):
        Authenticator.from_settings(af.Settings(jwt_public_key_file=Path("/nonexistent/key.pem")))
