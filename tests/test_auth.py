"""Credentials and scoping, in the enveloped dialect (issue 3 repeats the matrix for Anam)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory, Keys, turns
from transcripts.auth import VERIFIED_TOKENS_KEPT, TokenVerifier, mint_access_token
from transcripts.db.tables import ApiKey
from transcripts.domain import SessionRef, UserCredentials
from transcripts.errors import NotAuthenticated
from transcripts.state import app_state

TRANSCRIPT = "/api/agents/agent-session/{}/transcript/"


def unauthorized(message: str) -> dict[str, object]:
    return {"success": False, "message": message, "data": None, "errors": {"detail": [message]}}


@pytest.fixture
async def owned(factory: Factory) -> AsyncIterator[tuple[object, SessionRef]]:
    owner = await factory.user()
    character = await factory.character(owner)
    session = await factory.session(character, user_id=owner.id, turns=turns(("assistant", "Hi")))
    return owner, session


async def get(
    client: httpx.AsyncClient, session: SessionRef | uuid.UUID, **headers: str
) -> httpx.Response:
    session_id = session.session_id if isinstance(session, SessionRef) else session
    return await client.get(TRANSCRIPT.format(session_id), headers=headers)


async def test_owner_reads_with_every_credential_kind(
    client: httpx.AsyncClient, factory: Factory, owned: tuple, keys: Keys
) -> None:
    owner, session = owned
    _, key = await factory.api_key(owner)
    rs256 = factory.token(owner.id, key=keys.rsa_private, algorithm="RS256")
    credentials = {
        "X-API-Key": {"X-API-Key": key},
        "Bearer sk_": {"Authorization": f"Bearer {key}"},
        "HS256 JWT": {"Authorization": f"Bearer {factory.token(owner.id)}"},
        "RS256 JWT": {"Authorization": f"Bearer {rs256}"},
        "sub claim": {"Authorization": f"Bearer {factory.token(None, sub=str(owner.id))}"},
        "no token_type": {"Authorization": f"Bearer {factory.token(owner.id, token_type=None)}"},
        "lowercase scheme": {"Authorization": f"bearer {factory.token(owner.id)}"},
    }
    for name, headers in credentials.items():
        response = await client.get(TRANSCRIPT.format(session.session_id), headers=headers)
        assert response.status_code == 200, name
        assert response.json()["data"]["session_id"] == str(session.session_id), name


async def test_es256_public_key(
    database_url: str, factory: Factory, owned: tuple, keys: Keys
) -> None:
    owner, session = owned
    settings = make_settings(database_url, jwt_secret=None, jwt_public_key=keys.ec_public_pem)
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            good = factory.token(owner.id, key=keys.ec_private, algorithm="ES256")
            assert (await get(client, session, Authorization=f"Bearer {good}")).status_code == 200
            # With no secret configured, an HS256 token has no key to verify against.
            hs = factory.token(owner.id, key="y" * 40)
            assert (await get(client, session, Authorization=f"Bearer {hs}")).status_code == 401


async def test_not_owned_is_indistinguishable_from_missing(
    client: httpx.AsyncClient, factory: Factory, owned: tuple
) -> None:
    owner, session = owned
    same_tenant = await factory.user(tenant=(await _tenant_slug(factory, owner)))
    other_tenant = await factory.user()
    answers = []
    pinned = {"X-Request-ID": "compare-me"}  # ids differ per request by design
    for intruder in (same_tenant, other_tenant):
        _, key = await factory.api_key(intruder)
        token = factory.token(intruder.id)
        answers.append(await get(client, session, **{"X-API-Key": key}, **pinned))
        answers.append(await get(client, session, Authorization=f"Bearer {token}", **pinned))
        answers.append(await get(client, uuid.uuid4(), **{"X-API-Key": key}, **pinned))
    for response in answers:
        assert response.status_code == 404
        assert response.content == answers[0].content
        assert response.headers == answers[0].headers
    assert answers[0].json()["message"] == "Session not found."


async def test_staff_see_every_session(
    client: httpx.AsyncClient, factory: Factory, owned: tuple
) -> None:
    _, session = owned
    staff = await factory.user(staff=True)
    _, key = await factory.api_key(staff)
    assert (await get(client, session, **{"X-API-Key": key})).status_code == 200
    response = await get(client, session, Authorization=f"Bearer {factory.token(staff.id)}")
    assert response.status_code == 200


async def test_api_key_wins_over_jwt(
    client: httpx.AsyncClient, factory: Factory, owned: tuple
) -> None:
    owner, session = owned
    stranger = await factory.user()
    _, owner_key = await factory.api_key(owner)
    _, stranger_key = await factory.api_key(stranger)

    with_owner_key = await get(
        client,
        session,
        **{"X-API-Key": owner_key, "Authorization": f"Bearer {factory.token(stranger.id)}"},
    )
    with_stranger_key = await get(
        client,
        session,
        **{"X-API-Key": stranger_key, "Authorization": f"Bearer {factory.token(owner.id)}"},
    )

    assert with_owner_key.status_code == 200
    assert with_stranger_key.status_code == 404


async def test_revoked_key_and_inactive_user_are_401(
    client: httpx.AsyncClient, factory: Factory, owned: tuple
) -> None:
    owner, session = owned
    key_id, key = await factory.api_key(owner)
    await factory.revoke(key_id)
    response = await get(client, session, **{"X-API-Key": key})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == unauthorized("Invalid or inactive credentials.")

    other = await factory.user()
    _, other_key = await factory.api_key(other)
    token = factory.token(other.id)
    await factory.deactivate(other)
    for headers in ({"X-API-Key": other_key}, {"Authorization": f"Bearer {token}"}):
        response = await get(client, session, **headers)
        assert response.status_code == 401
        assert response.json() == unauthorized("Invalid or inactive credentials.")


async def test_token_of_unknown_user_is_401(
    client: httpx.AsyncClient, factory: Factory, owned: tuple
) -> None:
    _, session = owned
    response = await get(client, session, Authorization=f"Bearer {factory.token(987654321)}")
    assert response.status_code == 401
    assert response.json() == unauthorized("Invalid or inactive credentials.")


def _b64(document: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


async def test_hostile_tokens_are_refused(
    client: httpx.AsyncClient, factory: Factory, owned: tuple, keys: Keys
) -> None:
    owner, session = owned
    now = datetime.now(UTC)
    good = factory.token(owner.id)
    header, payload, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    forged_payload = _b64(
        {
            **claims,
            "user_id": owner.id + 1,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=5)).timestamp()),
        }
    )
    hostile = {
        "expired": (factory.token(owner.id, exp=now - timedelta(seconds=5)), "Token has expired."),
        "not yet valid": (
            factory.token(owner.id, nbf=now + timedelta(minutes=5)),
            "Invalid token.",
        ),
        "refresh token": (
            factory.token(owner.id, token_type="refresh"),
            "Token is not an access token.",
        ),
        "no exp": (factory.token(owner.id, exp=None), "Invalid token."),
        "tampered payload": (f"{header}.{forged_payload}.{signature}", "Invalid token."),
        "tampered signature": (f"{header}.{payload}.{signature[:-4]}AAAA", "Invalid token."),
        "wrong secret": (factory.token(owner.id, key="z" * 48), "Invalid token."),
        "alg none": (f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.", "Invalid token."),
        "alg none, signed": (
            f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
            "Invalid token.",
        ),
        "HS256 with the RSA public key": (_hs256_with_public_key(keys, claims), "Invalid token."),
        "unsupported alg": (
            factory.token(owner.id, key=keys.rsa_private, algorithm="RS512"),
            "Invalid token.",
        ),
        "non-numeric user": (factory.token("alice"), "Invalid token."),
        "user id beyond BIGINT": (factory.token(2**70), "Invalid token."),
        "user id zero": (factory.token(0), "Invalid token."),
        "boolean user id": (factory.token(True), "Invalid token."),
        "no user": (factory.token(None), "Invalid token."),
        "unexpected audience": (factory.token(owner.id, aud="someone-else"), "Invalid token."),
        "garbage": ("not.a.jwt", "Invalid token."),
    }
    for name, (token, message) in hostile.items():
        response = await get(client, session, Authorization=f"Bearer {token}")
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json() == unauthorized(message), name


def _hs256_with_public_key(keys: Keys, claims: dict[str, object]) -> str:
    # PyJWT refuses to sign with a PEM as an HMAC secret, so sign by hand, as an attacker would.
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    digest = hmac.new(keys.rsa_public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


async def test_issuer_and_audience_when_configured(
    database_url: str, factory: Factory, owned: tuple
) -> None:
    owner, session = owned
    settings = make_settings(
        database_url, jwt_issuer="https://auth.example", jwt_audience="transcripts"
    )
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            cases = {
                "right": (
                    factory.token(owner.id, iss="https://auth.example", aud="transcripts"),
                    200,
                ),
                "wrong audience": (
                    factory.token(owner.id, iss="https://auth.example", aud="other"),
                    401,
                ),
                "wrong issuer": (
                    factory.token(owner.id, iss="https://evil.example", aud="transcripts"),
                    401,
                ),
                "no audience": (factory.token(owner.id, iss="https://auth.example"), 401),
                "no issuer": (factory.token(owner.id, aud="transcripts"), 401),
            }
            for name, (token, status) in cases.items():
                response = await get(client, session, Authorization=f"Bearer {token}")
                assert response.status_code == status, name


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authentication credentials were not provided."),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Authorization header must be 'Bearer <token>'."),
        ({"Authorization": "Bearer"}, "Authorization header must be 'Bearer <token>'."),
        ({"Authorization": "Bearer "}, "Authorization header must be 'Bearer <token>'."),
        ({"Authorization": "Bearer a b"}, "Authorization header must be 'Bearer <token>'."),
        ({"X-API-Key": "sk_short"}, "Invalid API key."),
        ({"X-API-Key": ""}, "Invalid API key."),
        ({"Authorization": "Bearer sk_" + "g" * 64}, "Invalid API key."),
        ({"X-API-Key": "sk_" + "0" * 64}, "Invalid or inactive credentials."),
    ],
)
async def test_malformed_or_unknown_credentials(
    client: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    response = await client.get(TRANSCRIPT.format(uuid.uuid4()), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == unauthorized(message)


async def test_credentials_are_checked_before_the_id(client: httpx.AsyncClient) -> None:
    # An anonymous caller learns nothing, not even which ids are well-formed.
    response = await client.get(TRANSCRIPT.format("not-a-uuid"))
    assert response.status_code == 401


async def test_last_used_at_is_recorded(
    client: httpx.AsyncClient, factory: Factory, owned: tuple, app: object
) -> None:
    owner, session = owned
    key_id, key = await factory.api_key(owner)
    assert (await get(client, session, **{"X-API-Key": key})).status_code == 200
    await app_state(app).key_usage.drain()
    async with factory.database.sessionmaker() as db:
        used = await db.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    assert used is not None
    assert abs(used - datetime.now(UTC)) < timedelta(minutes=1)


async def _tenant_slug(factory: Factory, user: object) -> str:
    from transcripts.db.tables import Tenant

    async with factory.database.sessionmaker() as db:
        return await db.scalar(select(Tenant.slug).where(Tenant.id == user.tenant_id))  # type: ignore[attr-defined]


def test_a_remembered_token_still_expires() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db")
    verifier = TokenVerifier(settings)
    token = mint_access_token(settings, 7, ttl_seconds=1)
    assert verifier.verify(token) == UserCredentials(user_id=7)
    assert verifier.verify(token) == UserCredentials(user_id=7)  # now from memory
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(NotAuthenticated, match="expired"):
        verifier.verify(token)


def test_remembered_tokens_are_bounded() -> None:
    settings = make_settings("sqlite+aiosqlite:///unused.db")
    verifier = TokenVerifier(settings)
    tokens = [mint_access_token(settings, 7) for _ in range(VERIFIED_TOKENS_KEPT + 5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == VERIFIED_TOKENS_KEPT
    assert tokens[0] not in verifier._verified
    assert verifier.verify(tokens[0]) == UserCredentials(user_id=7)  # verified afresh
