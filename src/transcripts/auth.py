"""Credentials: API keys and access tokens, checked without touching the database.

Whether the key is active and whether the token's user exists is settled inside the scoped
query itself (see ``db/hot_read.py``), so a transcript read stays one round trip.

A credential is taken to the byte. Only what HTTP calls optional whitespace (SP and HTAB)
around a header value is not part of it, and only spaces separate the scheme from the
token (RFC 7235): ``str.strip()`` would also drop NO-BREAK SPACE and NEXT LINE, which a
header decoded as ISO-8859-1 carries as the bytes 0xA0 and 0x85. A token's time claims
are JSON numbers (RFC 7519's NumericDate): PyJWT reads them with ``int()``, which takes
``"9999999999"`` and ``true``, so this module checks them itself.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import jwt
from jwt.types import Options

from transcripts.domain import ApiKeyCredentials, Credentials, UserCredentials
from transcripts.errors import NotAuthenticated
from transcripts.settings import Settings, jwt_verification_key

__all__ = [
    "GeneratedApiKey",
    "TokenVerifier",
    "credentials_from_headers",
    "generate_api_key",
    "hash_api_key",
    "mint_access_token",
]

API_KEY_PATTERN = re.compile(r"sk_[0-9a-f]{64}")
API_KEY_PREFIX = "sk_"
# A JWS in compact serialization: three base64url parts, unpadded (RFC 7515, section 7.1).
# PyJWT's base64 decoding skips characters outside the alphabet, so the shape is checked first.
COMPACT_JWS_PATTERN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# HTTP's optional whitespace (RFC 9110, section 5.6.3), the only kind around a field value.
OPTIONAL_WHITESPACE = " \t"
TIME_CLAIMS = ("iat", "nbf", "exp")


@dataclass(frozen=True, slots=True)
class GeneratedApiKey:
    key: str
    key_hash: str
    key_preview: str


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> GeneratedApiKey:
    key = API_KEY_PREFIX + secrets.token_hex(32)
    return GeneratedApiKey(
        key=key, key_hash=hash_api_key(key), key_preview=f"{key[:5]}...{key[-4:]}"
    )


def api_key_credentials(key: str) -> ApiKeyCredentials:
    # A key is never compared as text, so no early-exit comparison can leak it byte by byte:
    # its SHA-256 digest is looked up through a unique index inside the scoped query, and the
    # only comparison an attacker could time is on a digest of 256-bit random input.
    if not API_KEY_PATTERN.fullmatch(key):
        raise NotAuthenticated("Invalid API key.")
    return ApiKeyCredentials(key_hash=hash_api_key(key))


# A client sends the same access token with every request until it expires, and checking
# its signature again each time (about 60 µs for HS256, more for RS256) cost as much as the
# rest of a short transcript read. So a verified token is remembered, with the interval in
# which its time claims hold; whether its user still exists and is active is settled by
# every query. Only tokens that passed full verification enter, and the oldest leave first.
VERIFIED_TOKENS_KEPT = 4096


class TokenVerifier:
    """Verifies access tokens with a fixed key per algorithm.

    Choosing the key by the token's ``alg`` from a closed table refuses ``alg: none`` and
    the HS256-signed-with-the-RSA-public-key confusion: neither has an entry.
    """

    def __init__(self, settings: Settings) -> None:
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret is not None:
            self._keys["HS256"] = settings.jwt_secret.get_secret_value()
        if settings.jwt_public_key:
            algorithm, public_key = jwt_verification_key(settings.jwt_public_key)
            self._keys[algorithm] = public_key
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        required = ["exp"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        # The time claims are judged here (``_validity``), once their types are known.
        self._options = cast(
            Options,
            {"require": required, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        # token -> (credentials, valid from, valid until), as PyJWT would judge the claims
        self._verified: dict[str, tuple[UserCredentials, float, float]] = {}

    def verify(self, token: str) -> UserCredentials:
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None and remembered[1] <= now < remembered[2]:
            return remembered[0]
        claims = self._decode(token)
        valid_from, valid_until = self._validity(claims)
        if now >= valid_until:
            raise NotAuthenticated("Token has expired.")
        if now < valid_from:
            raise NotAuthenticated("Invalid token.")
        credentials = UserCredentials(user_id=_user_id(claims))
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (credentials, valid_from, valid_until)
        return credentials

    def _validity(self, claims: dict[str, Any]) -> tuple[float, float]:
        """The interval in which the token's time claims hold, by PyJWT's rules (exp <= now -
        leeway is expired; iat or nbf > now + leeway is early); refused unless each present
        time claim is a finite JSON number."""
        if not all(_is_numeric_date(claims[name]) for name in TIME_CLAIMS if name in claims):
            raise NotAuthenticated("Invalid token.")
        starts = [int(claims[name]) for name in ("iat", "nbf") if name in claims]
        valid_from = max(starts) - self._leeway if starts else float("-inf")
        return valid_from, int(claims["exp"]) + self._leeway

    def _decode(self, token: str) -> dict[str, Any]:
        if not COMPACT_JWS_PATTERN.fullmatch(token):
            raise NotAuthenticated("Invalid token.")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            if not isinstance(algorithm, str) or algorithm not in self._keys:
                raise NotAuthenticated("Invalid token.")
            key = self._keys[algorithm]
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError:
            raise NotAuthenticated("Invalid token.") from None
        if claims.get("token_type", "access") != "access":
            raise NotAuthenticated("Token is not an access token.")
        return claims


def _is_numeric_date(value: object) -> bool:
    # A JSON number: bool is an int to Python, and PyJWT's JSON parser reads NaN and Infinity.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _user_id(claims: dict[str, Any]) -> int:
    # SimpleJWT puts the id in user_id; other issuers in the standard sub (a string).
    raw = claims.get("user_id", claims.get("sub"))
    user_id: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        user_id = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) < 20:
        user_id = int(raw)
    # Ids are BIGINT: anything outside could only fail deeper down, as a 500.
    if user_id is None or not 1 <= user_id < 2**63:
        raise NotAuthenticated("Invalid token.")
    return user_id


def mint_access_token(settings: Settings, user_id: int, ttl_seconds: int = 3600) -> str:
    """An HS256 access token in SimpleJWT's shape (a development helper, and the demo's)."""
    if settings.jwt_secret is None:
        raise ValueError("TRANSCRIPTS_JWT_SECRET is not set")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "token_type": "access",
        "user_id": user_id,
        "jti": secrets.token_hex(16),
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def credentials_from_headers(
    api_key: str | None, authorization: str | None, verifier: TokenVerifier
) -> Credentials:
    """The caller's credentials: ``X-API-Key`` first, then ``Authorization: Bearer``."""
    if api_key is not None:
        return api_key_credentials(api_key.strip(OPTIONAL_WHITESPACE))
    if authorization is None:
        raise NotAuthenticated()
    scheme, _, token = authorization.strip(OPTIONAL_WHITESPACE).partition(" ")
    token = token.lstrip(" ")
    # RFC 7235: the scheme is case-insensitive.
    if scheme.lower() != "bearer" or not token or " " in token:
        raise NotAuthenticated("Authorization header must be 'Bearer <token>'.")
    if token.startswith(API_KEY_PREFIX):
        return api_key_credentials(token)
    return verifier.verify(token)
