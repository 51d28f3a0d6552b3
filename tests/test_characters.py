"""Characters through HTTP: unique, well-formed slugs, also under a race."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories import Factory, unique
from tests.write_path import CHARACTERS, failure, owner_worker


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
