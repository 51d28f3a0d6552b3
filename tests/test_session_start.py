"""Starting a session through HTTP: with credentials, from the widget, with LiveKit."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import jwt
import pytest
from pydantic import ValidationError

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory, unique
from tests.write_path import START, Worker, deactivate_character, failure, owner_worker


async def test_start_session_with_credentials(client: httpx.AsyncClient, factory: Factory) -> None:
    owner, worker = await owner_worker(client, factory, jwt_auth=True)
    slug = await worker.character()
    stranger = await factory.user()
    _, stranger_key = await factory.api_key(stranger)

    started = await client.post(START, json={"agent": slug}, headers=worker.headers)
    data = started.json()["data"]
    assert data["room_name"].startswith(f"oshara-voice-{slug}-")
    assert len(data["room_name"]) == len(f"oshara-voice-{slug}-") + 8
    session = await worker.read(data["session_id"])
    assert (session["origin_url"], session["metadata"], session["user"]) == (None, {}, owner.id)

    not_found = failure("Character not found.", {"agent": ["Character not found."]})
    answers = [
        await client.post(START, json={"agent": slug}, headers={"X-API-Key": stranger_key}),
        await client.post(START, json={"agent": unique("nobody")}, headers=worker.headers),
    ]
    for response in answers:
        assert response.status_code == 404
        assert response.json() == not_found
    assert answers[0].headers == answers[1].headers


async def test_inactive_character_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    character = await factory.character(owner, allowed_origins=["https://shop.example"])
    await deactivate_character(factory, character.id)
    _, key = await factory.api_key(owner)
    not_found = failure("Character not found.", {"agent": ["Character not found."]})
    for headers in ({"X-API-Key": key}, {"Origin": "https://shop.example"}):
        response = await client.post(START, json={"agent": character.slug}, headers=headers)
        assert response.status_code == 404
        assert response.json() == not_found


async def test_widget_starts_a_session_from_an_allowed_origin(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner, allowed_origins=["https://shop.example"])
    _, key = await factory.api_key(owner)

    started = await client.post(
        START,
        json={"agent": character.slug, "origin_url": "https://shop.example/help", "language": "en"},
        headers={"Origin": "https://Shop.Example"},
    )
    assert started.status_code == 201
    data = started.json()["data"]
    assert data["participant_identity"].startswith("visitor-")
    session = await Worker(client, {"X-API-Key": key}).read(data["session_id"])
    assert (session["user"], session["origin_url"]) == (None, "https://shop.example/help")

    refused = await client.post(
        START, json={"agent": character.slug}, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json() == failure("This origin may not use this character.")

    anonymous = await client.post(START, json={"agent": character.slug})
    assert anonymous.status_code == 401
    assert anonymous.json() == failure("Authentication credentials were not provided.")

    # Wrong credentials never fall back to the widget's rule.
    bad_key = await client.post(
        START,
        json={"agent": character.slug},
        headers={"Origin": "https://shop.example", "X-API-Key": "sk_" + "0" * 64},
    )
    assert bad_key.status_code == 401


async def test_livekit_token_is_a_jwt_livekit_accepts(database_url: str, factory: Factory) -> None:
    secret = "livekit-secret-" + "s" * 32
    settings = make_settings(
        database_url,
        livekit_url="wss://voice.example.livekit.cloud",
        livekit_api_key="APIdevkey",
        livekit_api_secret=secret,
    )
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            owner, worker = await owner_worker(client, factory)
            slug = await worker.character(allowed_origins=["https://shop.example"])
            with_key = await client.post(
                START, json={"agent": slug, "room_name": "room-1"}, headers=worker.headers
            )
            widget = await client.post(
                START, json={"agent": slug}, headers={"Origin": "https://shop.example"}
            )

    data = with_key.json()["data"]
    assert data["livekit_url"] == "wss://voice.example.livekit.cloud"
    assert list(data) == [
        "session_id",
        "room_name",
        "participant_identity",
        "character_slug",
        "expires_in_seconds",
        "token",
        "livekit_url",
    ]
    claims = jwt.decode(data["token"], secret, algorithms=["HS256"])
    assert claims == {
        "iss": "APIdevkey",
        "sub": f"user-{owner.id}",
        "name": f"user-{owner.id}",
        "nbf": claims["nbf"],
        "exp": claims["nbf"] + 3600,
        "video": {"roomJoin": True, "room": "room-1", "canPublish": True, "canSubscribe": True},
    }
    assert abs(claims["nbf"] - datetime.now(UTC).timestamp()) < 60
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(data["token"], "another-secret-" + "x" * 32, algorithms=["HS256"])

    visitor = widget.json()["data"]
    visitor_claims = jwt.decode(visitor["token"], secret, algorithms=["HS256"])
    assert visitor_claims["sub"] == visitor["participant_identity"]
    assert visitor_claims["video"]["room"] == visitor["room_name"]


def test_livekit_settings_come_all_together() -> None:
    with pytest.raises(ValidationError, match="TRANSCRIPTS_LIVEKIT_API_SECRET"):
        make_settings("sqlite+aiosqlite://", livekit_url="wss://x", livekit_api_key="k")
