"""Object-level authorization, every endpoint of both dialects against every kind of intruder.

An owner has a character, a finalized session (turns, a recording, a form response), a
session in progress and a second API key. For each endpoint, a caller of another tenant
and a non-staff caller of the same tenant (each with an API key and with a JWT) get for
the owner's object exactly the answer they get for an id that names nothing: status, body
and headers, byte for byte. Lists leave the owner's rows out. A revoked key and an inactive
user get the 401 an unknown key or user gets. And after all of it, nothing has changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.factories import SEED_USAGE, Factory, turns, unique
from transcripts.domain import CharacterRecord, SessionRef, UserRecord
from transcripts.services import sessions

UNKNOWN_KEY = "sk_" + "0" * 64


@dataclass(frozen=True)
class World:
    owner: UserRecord
    owner_headers: dict[str, str]
    character: CharacterRecord
    finalized: SessionRef
    in_progress: SessionRef
    spare_key_id: int


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None


@dataclass(frozen=True)
class Endpoint:
    """A request aimed at the owner's object, and the same request aimed at nothing."""

    owned: Callable[[World], Call]
    missing: Callable[[World], Call]
    # Lists answer 200 without the owner's rows; everything else, the dialect's 404.
    status: int = 404


def turn_batch() -> list[dict[str, Any]]:
    return [{"turn_index": 7, "role": "user", "text": "Let me in.", "ts": 9.5}]


def form(session_id: uuid.UUID) -> dict[str, Any]:
    return {"session_id": str(session_id), "form_id": "contact", "values": {"email": "x@y.z"}}


def by_session(
    template: str, target: str = "finalized", method: str = "GET", json: Any = None
) -> Endpoint:
    def owned(world: World) -> Call:
        return Call(method, template.format(getattr(world, target).session_id), json)

    def missing(world: World) -> Call:
        return Call(method, template.format(uuid.uuid4()), json)

    return Endpoint(owned, missing)


ENDPOINTS: dict[str, Endpoint] = {
    "agents transcript": by_session("/api/agents/agent-session/{}/transcript/"),
    "billing session": by_session("/api/billing/sessions/{}/"),
    "anam transcript": by_session("/v1/sessions/{}/transcript"),
    "anam session": by_session("/v1/sessions/{}"),
    "anam recording": by_session("/v1/sessions/{}/recording"),
    "append turns": by_session(
        "/api/agents/agent-session/{}/turns/", "in_progress", method="POST", json=turn_batch()
    ),
    "finalize": by_session(
        "/api/agents/agent-session/{}/finalize/", "in_progress", method="POST", json={}
    ),
    "recording upload": by_session(
        "/api/agents/agent-session/{}/recording/upload/", "in_progress", method="POST", json={}
    ),
    "start a session": Endpoint(
        lambda w: Call("POST", "/api/agents/agent-session/", {"agent": w.character.slug}),
        lambda w: Call("POST", "/api/agents/agent-session/", {"agent": unique("nobody")}),
    ),
    "submit a form": Endpoint(
        lambda w: Call(
            "POST", f"/api/agents/{w.character.slug}/form-responses/", form(w.finalized.session_id)
        ),
        lambda w: Call(
            "POST", f"/api/agents/{unique('nobody')}/form-responses/", form(w.finalized.session_id)
        ),
    ),
    "revoke a key": Endpoint(
        lambda w: Call("DELETE", f"/api/auth/api-keys/{w.spare_key_id}/"),
        lambda w: Call("DELETE", f"/api/auth/api-keys/{2**62 + w.spare_key_id}/"),
    ),
    "list form responses": Endpoint(
        lambda w: Call("GET", f"/api/agents/{w.character.slug}/form-responses/"),
        lambda w: Call("GET", f"/api/agents/{unique('nobody')}/form-responses/"),
        status=200,
    ),
    "anam list by persona": Endpoint(
        lambda w: Call("GET", f"/v1/sessions?personaId={w.character.public_id}"),
        lambda w: Call("GET", f"/v1/sessions?personaId={uuid.uuid4()}"),
        status=200,
    ),
    "anam list by session id": Endpoint(
        lambda w: Call("GET", f"/v1/sessions?search={w.finalized.session_id}"),
        lambda w: Call("GET", f"/v1/sessions?search={uuid.uuid4()}"),
        status=200,
    ),
    "session history by character": Endpoint(
        lambda w: Call("GET", f"/api/billing/usage/?character_slug={w.character.slug}"),
        lambda w: Call("GET", f"/api/billing/usage/?character_slug={unique('nobody')}"),
        status=200,
    ),
}


async def build_world(factory: Factory) -> World:
    owner = await factory.user()
    spare_key_id, _ = await factory.api_key(owner)
    character = await factory.character(owner, allowed_origins=["https://shop.example"])
    finalized = await factory.session(
        character,
        user_id=owner.id,
        turns=turns(("assistant", "Hi!"), ("user", "My account number is 12345.")),
        usage=SEED_USAGE,
        recording_url="s3://calls/matrix.mp4",
    )
    in_progress = await factory.session(character, turns=turns(("assistant", "Hello")))
    async with factory.database.sessionmaker.begin() as db:
        await sessions.record_form_response(
            db, character, finalized.session_id, form_id="contact", values={"email": "a@b.c"}
        )
    # A token, so that the owner's own reads never touch a key's last_used_at.
    owner_headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    return World(owner, owner_headers, character, finalized, in_progress, spare_key_id)


async def send(client: httpx.AsyncClient, call: Call, headers: dict[str, str]) -> httpx.Response:
    return await client.request(call.method, call.path, json=call.json, headers=headers)


async def owner_view(client: httpx.AsyncClient, world: World) -> list[bytes]:
    """Everything the owner can see that an intruder's write could have changed."""
    headers = world.owner_headers
    paths = [
        f"/api/agents/agent-session/{world.in_progress.session_id}/transcript/",
        f"/api/agents/agent-session/{world.finalized.session_id}/transcript/",
        f"/api/agents/{world.character.slug}/form-responses/",
        "/api/auth/api-keys/",
        f"/v1/sessions?personaId={world.character.public_id}",
    ]
    views = []
    for path in paths:
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, path
        body = response.json()
        data = body.get("data", body)
        if isinstance(data, dict):  # signed links and their expiry differ per read
            data.pop("recording_presigned_url", None)
            data.pop("recording_presigned_url_expires_at", None)
        views.append(repr(body).encode())
    return views


async def intruders(factory: Factory, world: World) -> dict[str, dict[str, str]]:
    tenant = await factory.tenant_slug(world.owner)
    same_tenant = await factory.user(tenant=tenant)
    other_tenant = await factory.user()
    headers = {}
    for name, user in (("same tenant", same_tenant), ("other tenant", other_tenant)):
        _, key = await factory.api_key(user)
        headers[f"{name}, API key"] = {"X-API-Key": key}
        headers[f"{name}, JWT"] = {"Authorization": f"Bearer {factory.token(user.id)}"}
        headers[f"{name}, key as Bearer"] = {"Authorization": f"Bearer {key}"}
    return headers


async def locked_out(
    factory: Factory, world: World
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Credentials that must be refused, each with the unknown credential it must equal."""
    revoked_id, revoked = await factory.api_key(world.owner)
    await factory.revoke(revoked_id)
    # Staff, who would see everything, but no longer active.
    former = await factory.user(tenant=await factory.tenant_slug(world.owner), staff=True)
    _, former_key = await factory.api_key(former)
    former_token = factory.token(former.id)
    await factory.deactivate(former)
    unknown_user = factory.token(2**62)
    return {
        "owner's revoked key": ({"X-API-Key": revoked}, {"X-API-Key": UNKNOWN_KEY}),
        "owner's revoked key as Bearer": (
            {"Authorization": f"Bearer {revoked}"},
            {"Authorization": f"Bearer {UNKNOWN_KEY}"},
        ),
        "inactive staff's key": ({"X-API-Key": former_key}, {"X-API-Key": UNKNOWN_KEY}),
        "inactive staff's JWT": (
            {"Authorization": f"Bearer {former_token}"},
            {"Authorization": f"Bearer {unknown_user}"},
        ),
    }


def same_answer(first: httpx.Response, second: httpx.Response, context: str) -> None:
    assert first.status_code == second.status_code, context
    assert first.content == second.content, context
    assert first.headers == second.headers, context


@pytest.mark.parametrize("name", list(ENDPOINTS))
async def test_intruders_get_the_answer_for_nothing(
    client: httpx.AsyncClient, factory: Factory, name: str
) -> None:
    endpoint = ENDPOINTS[name]
    world = await build_world(factory)
    callers = await intruders(factory, world)
    before = await owner_view(client, world)

    for caller, headers in callers.items():
        context = f"{name}, {caller}"
        owned = await send(client, endpoint.owned(world), headers)
        missing = await send(client, endpoint.missing(world), headers)
        assert owned.status_code == endpoint.status, f"{context}: {owned.text}"
        same_answer(owned, missing, context)
        if endpoint.status == 200:
            assert str(world.finalized.session_id) not in owned.text, context
            assert world.character.slug not in owned.text, context

    assert await owner_view(client, world) == before, "an intruder changed the owner's data"
    # The owner, by contrast, reaches every one of these objects.
    owner = await send(client, endpoint.owned(world), world.owner_headers)
    assert owner.status_code in (200, 201), f"{name}, owner: {owner.text}"


@pytest.mark.parametrize("name", list(ENDPOINTS))
async def test_revoked_keys_and_inactive_users_are_401_like_unknown_ones(
    client: httpx.AsyncClient, factory: Factory, name: str
) -> None:
    endpoint = ENDPOINTS[name]
    world = await build_world(factory)
    refused_callers = await locked_out(factory, world)
    before = await owner_view(client, world)

    for caller, (headers, unknown) in refused_callers.items():
        context = f"{name}, {caller}"
        refused = await send(client, endpoint.owned(world), headers)
        assert refused.status_code == 401, f"{context}: {refused.text}"
        assert refused.headers["www-authenticate"] == "Bearer", context
        same_answer(refused, await send(client, endpoint.owned(world), unknown), context)
        same_answer(refused, await send(client, endpoint.missing(world), headers), context)

    assert await owner_view(client, world) == before


async def test_lists_leave_out_what_is_not_the_callers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    world = await build_world(factory)
    for caller, headers in (await intruders(factory, world)).items():
        sessions = (await client.get("/v1/sessions?perPage=100", headers=headers)).json()
        assert sessions == {
            "data": [],
            "meta": {
                "total": 0,
                "lastPage": 0,
                "currentPage": 1,
                "perPage": 100,
                "prev": None,
                "next": None,
                "nextCursor": None,
            },
        }, caller
        history = (await client.get("/api/billing/usage/", headers=headers)).json()["data"]
        assert (history["total_sessions"], history["sessions"]) == (0, []), caller
        tenant = await factory.tenant_slug(world.owner)
        by_tenant = (
            await client.get(f"/api/billing/usage/?tenant_id={tenant}", headers=headers)
        ).json()["data"]
        assert by_tenant["total_sessions"] == 0, caller
        keys = (await client.get("/api/auth/api-keys/", headers=headers)).json()["data"]
        assert world.spare_key_id not in [key["id"] for key in keys], caller
        assert all(key["name"] == "test" for key in keys), caller
