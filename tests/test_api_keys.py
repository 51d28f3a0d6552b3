"""The caller's API keys: shown once at creation, listed by preview, revoked by id."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from tests.factories import Factory
from tests.write_path import failure, ok, parse
from transcripts.state import app_state

KEYS = "/api/auth/api-keys/"
KEY = "/api/auth/api-keys/{}/"
KEY_NOT_FOUND = failure("API key not found.")


async def test_create_list_use_and_revoke(
    client: httpx.AsyncClient, factory: Factory, app: FastAPI
) -> None:
    user = await factory.user()
    first_id, _ = await factory.api_key(user)
    # A token, so that listing does not itself touch a key's last_used_at.
    dashboard = {"Authorization": f"Bearer {factory.token(user.id)}"}

    created = await client.post(KEYS, json={"name": "ci"}, headers=dashboard)

    assert created.status_code == 201
    data = created.json()["data"]
    key = data["key"]
    assert re.fullmatch(r"sk_[0-9a-f]{64}", key)
    assert abs(parse(data["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    new_key = {
        "id": data["id"],
        "name": "ci",
        "key_preview": f"{key[:5]}...{key[-4:]}",
        "is_active": True,
        "last_used_at": None,
        "created_at": data["created_at"],
    }
    assert created.json() == ok({**new_key, "key": key})
    assert list(data)[-1] == "key"

    listed = await client.get(KEYS, headers=dashboard)
    first = listed.json()["data"][0]
    assert first["id"] == first_id
    assert listed.json() == ok([first, new_key]), "the key itself is never listed"
    assert set(first) == set(new_key)

    # The new key works, and its use shows in the listing.
    assert (await client.get(KEYS.rstrip("/"), headers={"X-API-Key": key})).status_code == 200
    await app_state(app).key_usage.drain()
    used = (await client.get(KEYS, headers=dashboard)).json()["data"][1]
    assert abs(parse(used["last_used_at"]) - datetime.now(UTC)) < timedelta(minutes=1)

    revoked = await client.delete(KEY.format(new_key["id"]), headers=dashboard)
    assert revoked.status_code == 200
    assert revoked.json() == ok(used | {"is_active": False})
    again = await client.delete(KEY.format(new_key["id"]).rstrip("/"), headers=dashboard)
    assert again.json() == revoked.json(), "revoking twice changes nothing"
    refused = await client.get(KEYS, headers={"X-API-Key": key})
    assert refused.status_code == 401


async def test_other_users_keys_are_out_of_reach(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    owner_key_id, owner_key = await factory.api_key(owner)
    stranger = await factory.user(tenant=await factory.tenant_slug(owner))
    _, stranger_key = await factory.api_key(stranger)
    headers = {"X-API-Key": stranger_key}

    listed = await client.get(KEYS, headers=headers)
    foreign = await client.delete(KEY.format(owner_key_id), headers=headers)
    missing = await client.delete(KEY.format(owner_key_id + 10**9), headers=headers)

    assert owner_key_id not in {key["id"] for key in listed.json()["data"]}
    for response in (foreign, missing):
        assert response.status_code == 404
        assert response.json() == KEY_NOT_FOUND
    assert foreign.headers == missing.headers
    assert (await client.get(KEYS, headers={"X-API-Key": owner_key})).status_code == 200


async def test_staff_list_only_their_own_keys(client: httpx.AsyncClient, factory: Factory) -> None:
    staff = await factory.user(staff=True)
    staff_key_id, _ = await factory.api_key(staff)
    await factory.api_key(await factory.user())

    listed = await client.get(KEYS, headers={"Authorization": f"Bearer {factory.token(staff.id)}"})

    assert [key["id"] for key in listed.json()["data"]] == [staff_key_id]


async def test_bad_requests(client: httpx.AsyncClient, factory: Factory) -> None:
    user = await factory.user()
    headers = {"Authorization": f"Bearer {factory.token(user.id)}"}
    cases = [
        (
            await client.post(KEYS, json={"name": ""}, headers=headers),
            {"name": ["String should have at least 1 character"]},
        ),
        (
            await client.post(KEYS, json={"name": "n" * 101}, headers=headers),
            {"name": ["String should have at most 100 characters"]},
        ),
        (await client.post(KEYS, json={}, headers=headers), {"name": ["Field required"]}),
        (
            await client.delete(KEY.format("first"), headers=headers),
            {
                "api_key_id": [
                    "Input should be a valid integer, unable to parse string as an integer"
                ]
            },
        ),
        (
            await client.delete(KEY.format(2**63), headers=headers),
            {"api_key_id": ["Input should be less than or equal to 9223372036854775807"]},
        ),
    ]
    for response, errors in cases:
        assert response.status_code == 400
        assert response.json() == failure(f"Invalid {', '.join(errors)}.", errors)
    assert (await client.get(KEYS, headers=headers)).json() == ok([])
    assert (await client.get(KEYS)).status_code == 401
