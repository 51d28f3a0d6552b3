"""Characters through HTTP: unique, well-formed slugs, also under a race."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories import Factory, unique
from tests.write_path import CHARACTERS, START, failure, owner_worker, seed_turn


async def test_character_slugs_are_unique_and_well_formed(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character()
    stranger = await factory.user()
    _, key = await factory.api_key(stranger)

    taken = await client.post(
        CHARACTERS, json={"slug": slug, "name": "Copy"}, headers={"X-API-Key": key}
    )
    assert taken.status_code == 409
    assert taken.json() == failure(
        "A character with this slug already exists.", {"slug": ["Already in use."]}
    )
    bad = await client.post(
        CHARACTERS,
        json={"slug": "Not A Slug", "name": "", "allowed_origins": ["https://ok.example/path"]},
        headers=worker.headers,
    )
    assert bad.status_code == 400
    assert bad.json() == failure(
        "Invalid slug, name, allowed_origins.0.",
        {
            "slug": ["String should match pattern '^[a-z0-9]+(-[a-z0-9]+)*$'"],
            "name": ["String should have at least 1 character"],
            "allowed_origins.0": ["String should match pattern '^https?://[^/\\s]+$'"],
        },
    )


async def test_racing_creates_of_one_slug_keep_one_and_answer_409(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    slug = unique("racer")
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/ai-characters/", json={"slug": slug, "name": "Racer"}, headers=headers
            )
            for _ in range(4)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409]
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["success"] is False


async def test_transcripts_enabled_false_at_create_keeps_no_transcript(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character(transcripts_enabled=False)
    session_id = await worker.start(slug)
    appended = await worker.turns(session_id, [seed_turn(0), seed_turn(1)])
    assert appended.json()["data"] | {"session_id": None} == {
        "session_id": None,
        "received": 2,
        "inserted": 0,
        "turn_count": 0,
    }
    anam = await client.get(f"/v1/sessions/{session_id}/transcript", headers=worker.headers)
    assert (anam.json()["transcriptsEnabled"], anam.json()["messages"]) == (False, [])
    data = await worker.read(session_id)
    assert (data["transcript"], data["turn_count"]) == ([], 0)


async def test_a_character_is_changed_with_patch_by_its_owner_only(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character(allowed_origins=["https://a.example"])
    path = f"{CHARACTERS}{slug}/"

    changed = await client.patch(
        path,
        json={
            "name": "Renamed",
            "allowed_origins": ["https://b.example"],
            "transcripts_enabled": False,
        },
        headers=worker.headers,
    )
    assert changed.status_code == 200
    data = changed.json()["data"]
    assert (data["slug"], data["name"], data["allowed_origins"]) == (
        slug,
        "Renamed",
        ["https://b.example"],
    )
    assert (data["is_active"], data["transcripts_enabled"]) == (True, False)
    # A session started now keeps no transcript.
    session_id = await worker.start(slug)
    assert (await worker.turns(session_id, [seed_turn(0)])).json()["data"]["inserted"] == 0

    deactivated = await client.patch(
        path.rstrip("/"), json={"is_active": False}, headers=worker.headers
    )
    assert deactivated.json()["data"]["name"] == "Renamed", "unchanged fields stay"
    not_found = failure("Character not found.", {"agent": ["Character not found."]})
    started = await client.post(START, json={"agent": slug}, headers=worker.headers)
    assert (started.status_code, started.json()) == (404, not_found)

    stranger = await factory.user()
    _, key = await factory.api_key(stranger)
    not_owned = await client.patch(path, json={"name": "Mine"}, headers={"X-API-Key": key})
    unknown = await client.patch(
        f"{CHARACTERS}{unique('nobody')}/", json={"name": "Mine"}, headers={"X-API-Key": key}
    )
    assert not_owned.status_code == unknown.status_code == 404
    assert not_owned.json() == unknown.json() == failure("Character not found.")


async def test_patch_refuses_what_it_does_not_know(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    path = f"{CHARACTERS}{await worker.character()}/"
    cases = [
        (
            {"slug": "another"},
            failure("Invalid slug.", {"slug": ["Unknown field: not accepted here."]}),
        ),
        ({"name": None}, failure("Invalid name.", {"name": ["Must not be null."]})),
        (
            {"is_active": "no"},
            failure("Invalid is_active.", {"is_active": ["Input should be a valid boolean"]}),
        ),
        (
            {},
            failure(
                "Invalid body.",
                {"body": ["Give at least one field to change."]},
            ),
        ),
    ]
    for body, expected in cases:
        response = await client.patch(path, json=body, headers=worker.headers)
        assert (response.status_code, response.json()) == (400, expected), body
