"""Form responses: submitted by the widget (or the owner) for a session, read by the owner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.factories import Factory
from tests.write_path import failure, ok, parse
from transcripts.domain import CharacterRecord, SessionRef, UserRecord

FORMS = "/api/agents/{}/form-responses/"
SHOP = "https://shop.example"
SESSION_NOT_FOUND = failure("Session not found.", {"session_id": ["Session not found."]})


@dataclass(frozen=True)
class Shop:
    """A character on a widget's allow-list, one of its sessions, and another character's."""

    owner: UserRecord
    character: CharacterRecord
    session: SessionRef
    other_session: SessionRef

    @property
    def path(self) -> str:
        return FORMS.format(self.character.slug)


@pytest.fixture
async def shop(factory: Factory) -> Shop:
    owner = await factory.user()
    character = await factory.character(owner, allowed_origins=[SHOP])
    other = await factory.character(owner, allowed_origins=[SHOP])
    return Shop(owner, character, await factory.session(character), await factory.session(other))


def contact_form(session: SessionRef, **values: Any) -> dict[str, Any]:
    return {
        "session_id": str(session.session_id),
        "form_id": "contact",
        "values": values or {"email": "dana@northwind.example", "seats": 3, "demo": True},
    }


async def test_widget_and_owner_submit_and_the_owner_reads(
    client: httpx.AsyncClient, factory: Factory, shop: Shop
) -> None:
    _, key = await factory.api_key(shop.owner)

    from_widget = await client.post(
        shop.path, json=contact_form(shop.session), headers={"Origin": SHOP}
    )
    from_owner = await client.post(
        shop.path.rstrip("/"),
        json={**contact_form(shop.session, plan="pro"), "form_id": "upgrade"},
        headers={"X-API-Key": key},
    )

    assert from_widget.status_code == 201
    stored = from_widget.json()["data"]
    assert abs(parse(stored["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert from_widget.json() == ok(
        {
            "id": stored["id"],
            "form_id": "contact",
            "session_id": str(shop.session.session_id),
            "values": {"email": "dana@northwind.example", "seats": 3, "demo": True},
            "created_at": stored["created_at"],
        }
    )
    assert from_owner.status_code == 201
    upgrade = from_owner.json()["data"]

    token = {"Authorization": f"Bearer {factory.token(shop.owner.id)}"}
    listed = await client.get(shop.path, headers=token)
    assert listed.json() == ok([stored, upgrade])
    filters = {
        "form_id=contact": [stored],
        "form_id=nothing": [],
        f"session_id={shop.session.session_id}": [stored, upgrade],
        f"session_id={shop.other_session.session_id}": [],
        f"session_id={shop.session.session_id}&form_id=upgrade": [upgrade],
    }
    for query, expected in filters.items():
        response = await client.get(f"{shop.path}?{query}", headers=token)
        assert response.json() == ok(expected), query


async def test_not_owned_or_unknown_characters_list_nothing(
    client: httpx.AsyncClient, factory: Factory, shop: Shop
) -> None:
    await client.post(shop.path, json=contact_form(shop.session), headers={"Origin": SHOP})
    stranger = await factory.user(tenant=await factory.tenant_slug(shop.owner))
    _, key = await factory.api_key(stranger)
    staff = await factory.user(staff=True)

    for path in (shop.path, FORMS.format("no-such-character")):
        response = await client.get(path, headers={"X-API-Key": key})
        assert response.status_code == 200
        assert response.json() == ok([])
    as_staff = await client.get(
        shop.path, headers={"Authorization": f"Bearer {factory.token(staff.id)}"}
    )
    assert len(as_staff.json()["data"]) == 1
    assert (await client.get(shop.path)).status_code == 401


async def test_refused_submissions_store_nothing(
    client: httpx.AsyncClient, factory: Factory, shop: Shop
) -> None:
    stranger = await factory.user()
    _, stranger_key = await factory.api_key(stranger)
    _, key = await factory.api_key(shop.owner)
    character_not_found = failure("Character not found.", {"slug": ["Character not found."]})
    cases: list[tuple[str, dict[str, Any], dict[str, str], int, dict[str, Any]]] = [
        # The session is another character's: the same answer as a session that is not there.
        (shop.path, contact_form(shop.other_session), {"Origin": SHOP}, 404, SESSION_NOT_FOUND),
        (
            shop.path,
            {**contact_form(shop.session), "session_id": str(uuid.uuid4())},
            {"Origin": SHOP},
            404,
            SESSION_NOT_FOUND,
        ),
        (
            shop.path,
            contact_form(shop.session),
            {"Origin": "https://evil.example"},
            403,
            failure("This origin may not use this character."),
        ),
        (
            shop.path,
            contact_form(shop.session),
            {},
            401,
            failure("Authentication credentials were not provided."),
        ),
        (
            shop.path,
            contact_form(shop.session),
            {"X-API-Key": stranger_key, "Origin": SHOP},
            404,
            character_not_found,
        ),
        (
            FORMS.format("no-such-character"),
            contact_form(shop.session),
            {"Origin": SHOP},
            404,
            character_not_found,
        ),
        (
            shop.path,
            {**contact_form(shop.session), "values": ["not", "an", "object"]},
            {"Origin": SHOP},
            400,
            failure("Invalid values.", {"values": ["Input should be a valid dictionary"]}),
        ),
        (
            shop.path,
            {**contact_form(shop.session), "form_id": "", "session_id": "42"},
            {"Origin": SHOP},
            400,
            failure(
                "Invalid session_id, form_id.",
                {
                    "session_id": ["Must be a valid UUID."],
                    "form_id": ["String should have at least 1 character"],
                },
            ),
        ),
    ]
    for path, body, headers, status, answer in cases:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == status, (body, headers)
        assert response.json() == answer, (body, headers)

    listed = await client.get(shop.path, headers={"X-API-Key": key})
    assert listed.json() == ok([])


async def test_malformed_session_filter_is_400(
    client: httpx.AsyncClient, factory: Factory, shop: Shop
) -> None:
    _, key = await factory.api_key(shop.owner)

    response = await client.get(f"{shop.path}?session_id=42", headers={"X-API-Key": key})

    assert response.status_code == 400
    assert response.json() == failure(
        "Invalid session_id.", {"session_id": ["Must be a valid UUID."]}
    )
