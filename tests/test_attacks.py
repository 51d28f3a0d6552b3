"""Hostile credentials against reads and writes of both dialects.

tests/test_auth.py covers the token checks on the enveloped read; here every attack runs
against a read of each dialect, a list and both writes, and must be refused with the
dialect's 401 (and ``WWW-Authenticate: Bearer``) while the session stays as it was. Then
the ``Authorization`` header's grammar (RFC 7235) and how API keys are compared.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory, Keys, turns
from transcripts import auth
from transcripts.db.engine import Database
from transcripts.domain import ApiKeyCredentials, SessionRef, UserRecord
from transcripts.limits import MAX_CREDENTIAL_BYTES
from transcripts.state import app_state

Target = tuple[str, str, str, Any]  # dialect, method, path template, JSON body


TARGETS: dict[str, Target] = {
    "agents read": ("agents", "GET", "/api/agents/agent-session/{}/transcript/", None),
    "anam read": ("anam", "GET", "/v1/sessions/{}/transcript", None),
    "anam list": ("anam", "GET", "/v1/sessions", None),
    "append turns": (
        "agents",
        "POST",
        "/api/agents/agent-session/{}/turns/",
        [{"turn_index": 5, "role": "user", "text": "injected", "ts": 30.0}],
    ),
    "finalize": ("agents", "POST", "/api/agents/agent-session/{}/finalize/", {}),
}


def unauthorized(dialect: str, message: str) -> dict[str, Any]:
    if dialect == "anam":
        return {"statusCode": 401, "error": "Unauthorized", "message": message.removesuffix(".")}
    return {"success": False, "message": message, "data": None, "errors": {"detail": [message]}}


def b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def hs256_signed_with(secret: bytes, claims: dict[str, Any]) -> str:
    # PyJWT refuses a PEM as an HMAC secret, so sign by hand, as an attacker would.
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    digest = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


async def victim(factory: Factory) -> tuple[UserRecord, SessionRef]:
    owner = await factory.user()
    session = await factory.session(
        await factory.character(owner), turns=turns(("assistant", "Hi"), ("user", "Secret."))
    )
    return owner, session


def hostile_tokens(
    factory: Factory, keys: Keys, owner: UserRecord, inactive: UserRecord
) -> dict[str, tuple[str, str]]:
    now = datetime.now(UTC)
    good = factory.token(owner.id)
    header, _, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    rs256 = factory.token(owner.id, key=keys.rsa_private, algorithm="RS256")
    rs_header, rs_payload, rs_signature = rs256.split(".")
    fresh = {
        **claims,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    invalid = "Invalid token."
    return {
        "alg none": (f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(fresh)}.", invalid),
        "alg None, RS256 signature kept": (
            f"{b64({'alg': 'None'})}.{rs_payload}.{rs_signature}",
            invalid,
        ),
        "HS256 signed with the RS256 public key": (
            hs256_signed_with(keys.rsa_public_pem.encode(), fresh),
            invalid,
        ),
        "RS256 header over an HS256 signature": (
            f"{rs_header}.{good.split('.')[1]}.{signature}",
            invalid,
        ),
        "expired": (factory.token(owner.id, exp=now - timedelta(seconds=1)), "Token has expired."),
        "not yet valid": (factory.token(owner.id, nbf=now + timedelta(minutes=1)), invalid),
        "issued for another audience": (factory.token(owner.id, aud="another-service"), invalid),
        "refresh token": (
            factory.token(owner.id, token_type="refresh"),
            "Token is not an access token.",
        ),
        "tampered payload": (
            f"{header}.{b64({**fresh, 'user_id': owner.id + 1})}.{signature}",
            invalid,
        ),
        "payload turned staff": (
            f"{header}.{b64({**fresh, 'is_staff': True})}.{signature}",
            invalid,
        ),
        "unknown user": (factory.token(2**62), "Invalid or inactive credentials."),
        "inactive user": (factory.token(inactive.id), "Invalid or inactive credentials."),
        "signed with another secret": (factory.token(owner.id, key="q" * 48), invalid),
        "a JWT as an API key's place": ("sk_" + good[:64], "Invalid API key."),
        "garbage of the largest size": ("x" * (MAX_CREDENTIAL_BYTES - len("Bearer ")), invalid),
    }


async def _owner_read(
    client: httpx.AsyncClient, factory: Factory, owner: UserRecord, session: SessionRef
) -> Any:
    response = await client.get(
        f"/api/agents/agent-session/{session.session_id}/transcript/",
        headers={"Authorization": f"Bearer {factory.token(owner.id)}"},
    )
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("target", list(TARGETS))
async def test_hostile_tokens_are_refused_everywhere(
    client: httpx.AsyncClient, factory: Factory, keys: Keys, target: str
) -> None:
    dialect, method, template, body = TARGETS[target]
    owner, session = await victim(factory)
    inactive = await factory.user(staff=True)
    await factory.deactivate(inactive)
    path = template.format(session.session_id)
    before = await _owner_read(client, factory, owner, session)

    for name, (token, message) in hostile_tokens(factory, keys, owner, inactive).items():
        response = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json() == unauthorized(dialect, message), name

    assert await _owner_read(client, factory, owner, session) == before


@pytest.mark.parametrize("target", list(TARGETS))
async def test_an_oversized_token_is_431_before_it_is_parsed(
    client: httpx.AsyncClient, factory: Factory, target: str
) -> None:
    dialect, method, template, body = TARGETS[target]
    owner, session = await victim(factory)
    # A real token bloated with a claim: its size alone refuses it.
    bloated = factory.token(owner.id, padding="p" * MAX_CREDENTIAL_BYTES)
    response = await client.request(
        method,
        template.format(session.session_id),
        json=body,
        headers={"Authorization": f"Bearer {bloated}"},
    )
    assert response.status_code == 431
    message = f"The Authorization header exceeds {MAX_CREDENTIAL_BYTES} bytes."
    expected: dict[str, Any] = (
        {"statusCode": 431, "error": "Request Header Fields Too Large", "message": message[:-1]}
        if dialect == "anam"
        else {"success": False, "message": message, "data": None, "errors": {"detail": [message]}}
    )
    assert response.json() == expected


async def test_issuer_and_audience_attacks_when_configured(
    database_url: str, factory: Factory
) -> None:
    owner, session = await victim(factory)
    settings = make_settings(
        database_url, jwt_issuer="https://auth.example", jwt_audience="transcripts"
    )
    right = {"iss": "https://auth.example", "aud": "transcripts"}
    cases = {
        "right issuer and audience": (right, 200),
        "wrong issuer": ({**right, "iss": "https://auth.example.evil"}, 401),
        "wrong audience": ({**right, "aud": "transcripts-admin"}, 401),
        "audience list without ours": ({**right, "aud": ["billing", "admin"]}, 401),
        "audience list with ours": ({**right, "aud": ["billing", "transcripts"]}, 200),
        "no issuer": ({"aud": "transcripts"}, 401),
    }
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            for template in ("/v1/sessions/{}/transcript", "/api/agents/agent-session/{}/turns/"):
                for name, (claims, status) in cases.items():
                    token = factory.token(owner.id, **claims)
                    method = "POST" if template.endswith("/turns/") else "GET"
                    response = await client.request(
                        method,
                        template.format(session.session_id),
                        json=[] if method == "POST" else None,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert response.status_code == status, (template, name)


# RFC 7235: credentials = auth-scheme [ 1*SP token68 ], the scheme case-insensitive, and
# optional whitespace around a field value is not part of it.
ACCEPTED_SPELLINGS = {
    "canonical": "Bearer {}",
    "lowercase scheme": "bearer {}",
    "uppercase scheme": "BEARER {}",
    "several spaces after the scheme": "Bearer    {}",
    "whitespace around the value": "  Bearer {}  ",
}
REFUSED_SPELLINGS = {
    "no token": ("Bearer", "Authorization header must be 'Bearer <token>'."),
    "only spaces after the scheme": (
        "Bearer    ",
        "Authorization header must be 'Bearer <token>'.",
    ),
    "a token and something more": (
        "Bearer {} extra",
        "Authorization header must be 'Bearer <token>'.",
    ),
    "a space inside the token": (
        "Bearer {0:.20} {0:.20}",
        "Authorization header must be 'Bearer <token>'.",
    ),
    "a tab for the space": ("Bearer\t{}", "Authorization header must be 'Bearer <token>'."),
    "wrong scheme": ("Token {}", "Authorization header must be 'Bearer <token>'."),
    "basic": ("Basic dXNlcjpwYXNz", "Authorization header must be 'Bearer <token>'."),
    "scheme glued to the token": ("Bearer{}", "Authorization header must be 'Bearer <token>'."),
    "scheme twice": ("Bearer Bearer {}", "Authorization header must be 'Bearer <token>'."),
    "empty": ("", "Authorization header must be 'Bearer <token>'."),
}


@pytest.mark.parametrize("target", ["agents read", "anam read", "append turns"])
async def test_authorization_header_grammar(
    client: httpx.AsyncClient, factory: Factory, target: str
) -> None:
    dialect, method, template, body = TARGETS[target]
    owner, session = await victim(factory)
    token = factory.token(owner.id)
    path = template.format(session.session_id)
    for name, spelling in ACCEPTED_SPELLINGS.items():
        response = await client.request(
            method, path, json=body, headers={"Authorization": spelling.format(token)}
        )
        assert response.status_code == 200, name
    for name, (spelling, message) in REFUSED_SPELLINGS.items():
        response = await client.request(
            method, path, json=body, headers={"Authorization": spelling.format(token)}
        )
        assert response.status_code == 401, name
        assert response.json() == unauthorized(dialect, message), name


async def test_api_key_lookalikes_are_refused(client: httpx.AsyncClient, factory: Factory) -> None:
    owner, session = await victim(factory)
    _, key = await factory.api_key(owner)
    lookalikes = {
        "uppercase hex": (key[:3] + key[3:].upper(), "Invalid API key."),
        "one digit short": (key[:-1], "Invalid API key."),
        "one digit more": (key + "0", "Invalid API key."),
        "another prefix": ("pk_" + key[3:], "Invalid API key."),
        "last digit changed": (
            key[:-1] + ("0" if key[-1] != "0" else "1"),
            "Invalid or inactive credentials.",
        ),
        "first digit changed": (
            key[:3] + ("0" if key[3] != "0" else "1") + key[4:],
            "Invalid or inactive credentials.",
        ),
        "the key's hash": (
            "sk_" + hashlib.sha256(key.encode()).hexdigest(),
            "Invalid or inactive credentials.",
        ),
    }
    for dialect, template in (
        ("agents", TARGETS["agents read"][2]),
        ("anam", TARGETS["anam read"][2]),
    ):
        for name, (value, message) in lookalikes.items():
            for headers in ({"X-API-Key": value}, {"Authorization": f"Bearer {value}"}):
                response = await client.get(template.format(session.session_id), headers=headers)
                assert response.status_code == 401, name
                # As a Bearer value, anything not shaped like a key is taken for a token.
                expected = (
                    message
                    if value.startswith("sk_") or "X-API-Key" in headers
                    else "Invalid token."
                )
                assert response.json() == unauthorized(dialect, expected), name


class Watched(str):
    """A key that records what is done with it, so a test can see every comparison."""

    uses: list[str]

    def __new__(cls, value: str) -> Watched:
        instance = super().__new__(cls, value)
        instance.uses = []
        return instance


def _recorder(name: str) -> Any:
    original = getattr(str, name)

    def recorded(self: Watched, *args: Any) -> Any:
        self.uses.append(name)
        return original(self, *args)

    return recorded


_COMPARISONS = [
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__contains__",
    "startswith",
    "endswith",
    "find",
    "index",
    "count",
    "__getitem__",
    "__iter__",
    "__hash__",
    "encode",
    "lower",
    "partition",
    "split",
]
for _name in _COMPARISONS:
    setattr(Watched, _name, _recorder(_name))
# str.strip would hand back a plain, unwatched str: this one keeps watching.
Watched.strip = lambda self, *args: (self.uses.append("strip"), self)[1]  # type: ignore[method-assign,assignment]


async def test_api_keys_meet_python_only_as_input_to_sha256() -> None:
    """No early-exit comparison of a raw key happens in Python: the regex engine checks its
    shape, then it is hashed, and only its SHA-256 digest goes on (to a unique index)."""
    key = Watched("sk_" + "ab" * 32)
    # What get_credentials and the hot path both call with the X-API-Key header's value.
    verifier = cast(auth.TokenVerifier, SimpleNamespace())
    credentials = auth.credentials_from_headers(key, None, verifier)
    assert key.uses == ["strip", "encode"]
    assert credentials == ApiKeyCredentials(hashlib.sha256(key.encode()).hexdigest())

    # From "Authorization: Bearer sk_..." the key is split off as a new string: watch it there.
    bearer = Watched("sk_" + "cd" * 32)
    credentials = auth.api_key_credentials(bearer)
    assert bearer.uses == ["encode"]
    assert credentials == ApiKeyCredentials(hashlib.sha256(bearer.encode()).hexdigest())


@pytest.fixture
def database_parameters(app: FastAPI) -> Iterator[list[Any]]:
    """Every parameter the app sends to the database while the test runs."""
    database: Database = app_state(app).database
    seen: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append(parameters)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    original = database.fetch_row

    async def fetch_row(sql: str, postgres: Any, sqlite: Any) -> Any:
        seen.append((postgres, sqlite))
        return await original(sql, postgres, sqlite)

    database.fetch_row = fetch_row  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        database.fetch_row = original  # type: ignore[method-assign]
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_the_database_sees_only_the_keys_digest(
    client: httpx.AsyncClient, factory: Factory, database_parameters: list[Any]
) -> None:
    owner, session = await victim(factory)
    _, key = await factory.api_key(owner)
    wrong_first = key[:3] + ("0" if key[3] != "0" else "1") + key[4:]
    wrong_last = key[:-1] + ("0" if key[-1] != "0" else "1")
    database_parameters.clear()

    answers = {}
    for value in (key, wrong_first, wrong_last):
        answers[value] = await client.get(
            f"/v1/sessions/{session.session_id}", headers={"X-API-Key": value}
        )
        await client.get("/v1/sessions", headers={"Authorization": f"Bearer {value}"})

    assert answers[key].status_code == 200
    # Wrong at the first character or the last: one answer, found through the same digest lookup.
    assert answers[wrong_first].content == answers[wrong_last].content
    sent = repr(database_parameters)
    for value in (key, wrong_first, wrong_last):
        assert value[3:] not in sent
        assert hashlib.sha256(value.encode()).hexdigest() in sent
