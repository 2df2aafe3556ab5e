"""Bearer JWTs: who calls (user, organization, scopes) and how often they may.

Keys come from :class:`~autoflow.config.Settings`: ``AUTOFLOW_JWT_SECRET`` for HS256 and/or
``AUTOFLOW_JWT_PUBLIC_KEY_FILE`` (PEM) for RS256/ES256. Each accepted algorithm is bound
to its own key, so a token cannot pick a key of another family (an HS256 token "signed"
with the public key is refused) and ``alg: none`` is never accepted. ``exp`` is required;
``nbf``, ``aud`` and ``iss`` are checked when present or configured.

Claims: ``sub`` (the user), ``org`` (the tenant: the only source of the organization),
``scope`` (space-separated, or a list in ``scopes``): ``read`` ⊂ ``execute`` ⊂ ``admin``.

Example::

    auth = Authenticator.from_settings(settings)
    token = mint_token(settings, sub="u1", org="acme", scopes=["execute"])
    auth.decode(token)          # Principal(user='u1', organization='acme', ...)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from autoflow import codec
from autoflow.config import Settings
from autoflow.errors import AutoflowError

__all__ = ["SCOPES", "AuthError", "Authenticator", "Principal", "mint_token"]

#: Scopes from least to most: each includes those before it.
SCOPES = ("read", "execute", "admin")
_SYMMETRIC = ("HS256", "HS384", "HS512")
_ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA")
_LEEWAY = 10.0


class AuthError(AutoflowError):
    """Authentication (401) or authorization (403) failed; the message says why."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    """The caller of a request, from a verified token."""

    user: str
    organization: str
    scopes: frozenset[str]
    token_id: str = field(repr=False)

    def can(self, scope: str) -> bool:
        """True if the token grants ``scope`` (or a wider one)."""
        rank = SCOPES.index(scope)
        return any(s in self.scopes for s in SCOPES[rank:])


class Authenticator:
    """Verifies bearer tokens against configured keys.

    Example::

        Authenticator(secret=b"s3cret", audience="autoflow").decode(token)
    """

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        public_key: str | None = None,
        algorithms: Sequence[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if secret is None and public_key is None:
            raise AuthError(
                "the API needs a JWT key: set AUTOFLOW_JWT_SECRET (HS256) or AUTOFLOW_JWT_PUBLIC_KEY_FILE "
                "(RS256/ES256 PEM)"
            )
        codec.register_secret(secret)  # never shown in logs or errors
        if secret is not None and len(secret) < 32:
            raise AuthError("AUTOFLOW_JWT_SECRET must be at least 32 bytes (HS256 needs a 256-bit key)")
        if algorithms is None:
            algorithms = [*(("HS256",) if secret else ()), *(("RS256", "ES256") if public_key else ())]
        self._keys: dict[str, Any] = {}
        for alg in algorithms:
            if alg in _SYMMETRIC and secret:
                self._keys[alg] = secret
            elif alg in _ASYMMETRIC and public_key:
                self._keys[alg] = public_key  # PEM text; PyJWT refuses it as an HMAC secret too
            else:
                raise AuthError(f"AUTOFLOW_JWT_ALGORITHMS: {alg!r} has no key configured (or is not supported)")
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        public = None
        if settings.jwt_public_key_file is not None:
            try:
                public = settings.jwt_public_key_file.read_text()
            except OSError as exc:
                raise AuthError(
                    f"AUTOFLOW_JWT_PUBLIC_KEY_FILE {settings.jwt_public_key_file}: {exc.strerror}"
                ) from None
        algorithms = None
        if settings.jwt_algorithms:
            algorithms = [a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()]
        return cls(
            secret=settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None,
            public_key=public,
            algorithms=algorithms,
            audience=settings.jwt_audience or None,  # an empty variable means "not checked"
            issuer=settings.jwt_issuer or None,
        )

    @property
    def algorithms(self) -> list[str]:
        return list(self._keys)

    def __repr__(self) -> str:  # never the keys
        return f"<Authenticator algorithms={self.algorithms} audience={self.audience!r} issuer={self.issuer!r}>"

    def decode(self, token: str) -> Principal:
        """Verify ``token`` and return its principal, or raise AuthError (401)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the Authorization header does not hold a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._keys:
            raise AuthError(f"JWT algorithm {alg!r} is not accepted (accepted: {', '.join(self.algorithms)})")
        options: Any = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        try:
            claims = jwt.decode(
                token,
                self._keys[alg],
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token's audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"the token's issuer is not {self.issuer!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is invalid: {type(exc).__name__}") from None
        org, sub = claims.get("org"), claims.get("sub")
        if not isinstance(org, str) or not org:
            raise AuthError("the token has no 'org' claim (the organization it acts for)")
        if not isinstance(sub, str) or not sub:
            raise AuthError("the token's 'sub' claim must be a non-empty string")
        raw = claims.get("scopes", claims.get("scope", ""))
        scopes = frozenset(
            raw.split() if isinstance(raw, str) else [str(s) for s in raw] if isinstance(raw, list) else []
        )
        token_id = str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:24])
        return Principal(user=sub, organization=org, scopes=scopes & set(SCOPES), token_id=token_id)


def mint_token(
    settings: Settings,
    *,
    sub: str,
    org: str,
    scopes: Iterable[str] = ("read",),
    ttl: float = 3600.0,
    private_key: str | None = None,
    algorithm: str | None = None,
) -> str:
    """A signed token for ``sub`` acting in ``org`` (HS256 with ``AUTOFLOW_JWT_SECRET``, or
    ``algorithm`` with a PEM ``private_key``). What ``autoflow token`` prints."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise AuthError(f"unknown scope(s) {sorted(unknown)}; use {', '.join(SCOPES)}", status=400)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "org": org, "scope": " ".join(scopes), "iat": now, "exp": now + int(ttl)}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if private_key is not None:
        return jwt.encode(claims, private_key, algorithm=algorithm or "RS256")
    if settings.jwt_secret is None:
        raise AuthError("minting a JWT needs AUTOFLOW_JWT_SECRET (or a private key)", status=400)
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=algorithm or "HS256")
