"""Dashboard reads that cost one page (issue 17): totals from rollups that agree with the
sessions they sum, keyset cursors, bounded page numbers, Anam's search by id or label part."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.factories import Factory, turns
from tests.write_path import failure
from transcripts.domain import CharacterRecord, NewTurn, SessionRef, UserRecord
from transcripts.pricing import Usage

USAGE = "/api/billing/usage/"


def usage(tokens: int) -> Usage:
    return Usage(
        llm_input_tokens=tokens,
        llm_output_tokens=tokens // 2,
        llm_model="gpt-4o-mini",
        llm_provider="openai",
        stt_audio_seconds=tokens / 100,
        stt_provider="openai",
        tts_characters=tokens * 2,
        tts_provider="openai",
    )


async def _seed(
    factory: Factory, owner: UserRecord, characters: list[CharacterRecord], count: int
) -> list[SessionRef]:
    """Sessions over a week, several a day, some never finalized, two at the same instant."""
    rng = random.Random(17)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    sessions = []
    for number in range(count):
        started = base + timedelta(hours=rng.randrange(0, 24 * 7), minutes=rng.randrange(60))
        if number == 1:
            started = sessions[0].created_at  # a tie, which the row id breaks
        sessions.append(
            await factory.session(
                characters[number % len(characters)],
                started_at=started,
                usage=None if number % 4 == 3 else usage(100 + number),
                turns=turns(("assistant", f"Hello {number}."), ("user", "Hi.")),
            )
        )
    return sessions


async def _all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, Any]
) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = await client.get(
            USAGE, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        seen.extend(session["session_id"] for session in data["sessions"])
        cursor = data["next_cursor"]
        if cursor is None:
            return seen
        assert data["sessions"], "a cursor is given only when more follow"


@pytest.fixture
async def week(factory: Factory) -> tuple[UserRecord, list[CharacterRecord], list[SessionRef]]:
    owner = await factory.user()
    characters = [await factory.character(owner), await factory.character(owner)]
    return owner, characters, await _seed(factory, owner, characters, 24)


async def test_totals_equal_the_sum_of_the_sessions_under_any_filter(
    client: httpx.AsyncClient,
    factory: Factory,
    week: tuple[UserRecord, list[CharacterRecord], list[SessionRef]],
) -> None:
    owner, characters, sessions = week
    headers = {"X-API-Key": (await factory.api_key(owner))[1]}
    rng = random.Random(7)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    filters: list[dict[str, Any]] = [{}, {"character_slug": characters[1].slug}]
    for _ in range(12):
        # Bounds that cut days at odd minutes, whole days, and none at all.
        start = base + timedelta(minutes=rng.randrange(0, 7 * 24 * 60))
        end = start + timedelta(minutes=rng.randrange(0, 4 * 24 * 60))
        if rng.random() < 0.3:
            start = start.replace(hour=0, minute=0)
            end = end.replace(hour=23, minute=59, second=59, microsecond=999999)
        chosen: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat()}
        if rng.random() < 0.3:
            chosen.pop("start")
        if rng.random() < 0.3:
            chosen["character_slug"] = characters[0].slug
        filters.append(chosen)
    for params in filters:
        response = await client.get(USAGE, params={**params, "page_size": 200}, headers=headers)
        data = response.json()["data"]
        # The page lists every match (fewer than 200): sum them as the reads report them.
        listed = data["sessions"]
        assert data["total_sessions"] == len(listed), params
        assert data["total_llm_input_tokens"] == sum(s["llm_input_tokens"] for s in listed)
        assert data["total_tts_characters"] == sum(s["tts_characters"] for s in listed)
        assert Decimal(data["total_estimated_cost_usd"]) == sum(
            (Decimal(s["estimated_cost_usd"]) for s in listed), Decimal(0)
        )
        assert data["total_stt_audio_seconds"] == round(
            sum(s["stt_audio_seconds"] for s in listed), 3
        )
    # The sessions never finalized count too (every fourth one).
    everything = (await client.get(USAGE, headers=headers)).json()["data"]
    assert everything["total_sessions"] == len(sessions) == 24


async def test_staff_totals_come_from_everyone_s_rollups(
    client: httpx.AsyncClient,
    factory: Factory,
    week: tuple[UserRecord, list[CharacterRecord], list[SessionRef]],
) -> None:
    staff = await factory.user(staff=True)
    headers = {"Authorization": f"Bearer {factory.token(staff.id)}"}
    # A window only this test's sessions fall in (other tests use other dates).
    params = {"start": "2026-03-02T00:00:00Z", "end": "2026-03-04T23:59:59.999999Z"}
    owner, _, sessions = week
    in_window = [
        s
        for s in sessions
        if datetime(2026, 3, 2, tzinfo=UTC) <= s.created_at
        and s.created_at < datetime(2026, 3, 5, tzinfo=UTC)
    ]
    as_staff = (await client.get(USAGE, params=params, headers=headers)).json()["data"]
    owner_headers = {"X-API-Key": (await factory.api_key(owner))[1]}
    as_owner = (await client.get(USAGE, params=params, headers=owner_headers)).json()["data"]
    # Staff see at least the owner's; every other session in the window belongs to someone.
    assert as_owner["total_sessions"] == len(in_window)
    assert as_staff["total_sessions"] >= as_owner["total_sessions"]
    assert as_staff["total_sessions"] == len(
        await _all_pages(client, headers, {**params, "include_transcript": "false"})
    )


async def test_cursor_pages_walk_everything_once_in_order(
    client: httpx.AsyncClient,
    factory: Factory,
    week: tuple[UserRecord, list[CharacterRecord], list[SessionRef]],
) -> None:
    owner, _, sessions = week
    headers = {"X-API-Key": (await factory.api_key(owner))[1]}
    newest_first = [
        str(s.session_id)
        for s in sorted(sessions, key=lambda s: (s.created_at, s.id), reverse=True)
    ]
    assert await _all_pages(client, headers, {"page_size": 5}) == newest_first
    by_number = []
    for page in range(1, 6):
        data = (
            await client.get(USAGE, params={"page": page, "page_size": 5}, headers=headers)
        ).json()
        by_number.extend(s["session_id"] for s in data["data"]["sessions"])
    assert by_number == newest_first

    # Anam's list walks the same way.
    anam: list[str] = []
    url = "/v1/sessions?perPage=7"
    while url:
        meta_page = (await client.get(url, headers=headers)).json()
        anam.extend(s["id"] for s in meta_page["data"])
        cursor = meta_page["meta"]["nextCursor"]
        url = f"/v1/sessions?perPage=7&cursor={cursor}" if cursor else ""
    assert anam == newest_first


async def test_a_page_without_transcripts_keeps_its_counts(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    flagged = [
        NewTurn(turn_index=0, role="assistant", text="One", ts=0.0, was_interrupted=True),
        NewTurn(turn_index=1, role="user", text="Two", ts=1.0, was_interrupted=True),
        NewTurn(turn_index=2, role="assistant", text="Three", ts=2.0),
    ]
    await factory.session(character, turns=flagged)
    headers = {"X-API-Key": (await factory.api_key(owner))[1]}

    full = (await client.get(USAGE, headers=headers)).json()["data"]["sessions"][0]
    light = (
        await client.get(USAGE, params={"include_transcript": "false"}, headers=headers)
    ).json()["data"]["sessions"][0]

    assert (light["transcript"], light["transcript_text"]) == ([], "")
    assert (light["turn_count"], light["interruption_count"]) == (3, 1)
    assert {k: v for k, v in light.items() if k not in {"transcript", "transcript_text"}} == {
        k: v for k, v in full.items() if k not in {"transcript", "transcript_text"}
    }


async def test_deep_page_numbers_are_bounded_and_cursors_are_checked(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    headers = {"X-API-Key": (await factory.api_key(await factory.user()))[1]}
    deep = await client.get(USAGE, params={"page": 2001, "page_size": 50}, headers=headers)
    message = (
        "Pages reach 100000 sessions deep at most; follow the cursor of the previous page"
        " to go further."
    )
    assert (deep.status_code, deep.json()) == (400, failure("Invalid page.", {"page": [message]}))
    last_allowed = await client.get(USAGE, params={"page": 2000, "page_size": 50}, headers=headers)
    assert last_allowed.status_code == 200

    for cursor in ("not-a-cursor", "djJ8eHx4", "", "A" * 200):
        bad = await client.get(USAGE, params={"cursor": cursor}, headers=headers)
        assert (bad.status_code, bad.json()) == (
            400,
            failure("Invalid cursor.", {"cursor": ["Not a cursor this service gave out."]}),
        ), cursor
        anam = await client.get("/v1/sessions", params={"cursor": cursor}, headers=headers)
        assert anam.status_code == 400
        assert (
            anam.json()["message"] == "Invalid cursor (cursor: Not a cursor this service gave out.)"
        )


async def test_search_by_id_is_an_exact_lookup_and_a_label_part_is_literal(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    first = await factory.session(character, client_label="Order 100%_done")
    second = await factory.session(character, client_label=f"see {first.session_id}")
    headers = {"X-API-Key": (await factory.api_key(owner))[1]}

    async def found(search: str) -> list[str]:
        page = await client.get("/v1/sessions", params={"search": search}, headers=headers)
        assert page.json()["meta"]["total"] == len(page.json()["data"])
        return [s["id"] for s in page.json()["data"]]

    assert await found(str(first.session_id)) == [str(first.session_id)]
    assert await found(str(first.session_id).upper()) == [str(first.session_id)]
    assert await found("100%_") == [str(first.session_id)]
    assert await found("order 1") == [str(first.session_id)]
    assert await found("see ") == [str(second.session_id)]
    assert await found("0%x") == []


async def test_label_search_is_scoped_by_owner_persona_or_neither_and_walks_by_cursor(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # One index serves the owner, the persona and the label's trigrams in any combination:
    # each scope counts and pages only its own matches, and the total holds on every page.
    owner, other, staff = await factory.user(), await factory.user(), await factory.user(staff=True)
    first, second = await factory.character(owner), await factory.character(owner)
    others = await factory.character(other)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    labels = [
        (first, "Maria Hernandez"),
        (first, "Ana Lopez"),
        (second, "Luis HERNANDO"),
        (first, "hernan"),
        (others, "Hernan Ortiz"),
        (second, "Maria Hernandez"),
        (first, "Maria Hernandez"),
        (others, "Jo Hernández"),  # no match: "á" is not "a"
    ]
    started = []
    for minutes, (character, label) in enumerate(labels):
        await factory.session(
            character, client_label=label, started_at=base + timedelta(minutes=minutes)
        )
        started.append((character, label))

    async def walk(headers: dict[str, str], **params: Any) -> tuple[list[str], set[int]]:
        found: list[str] = []
        totals: set[int] = set()
        cursor = None
        while True:
            page = await client.get(
                "/v1/sessions",
                params={"search": "hernan", "perPage": 2, **params}
                | ({"cursor": cursor} if cursor else {}),
                headers=headers,
            )
            assert page.status_code == 200, page.text
            body = page.json()
            found.extend(f"{row['personaId']}|{row['clientLabel']}" for row in body["data"])
            totals.add(body["meta"]["total"])
            cursor = body["meta"]["nextCursor"]
            if cursor is None:
                return found, totals

    def expected(*characters: CharacterRecord) -> list[str]:
        return [
            f"{character.public_id}|{label}"
            for character, label in reversed(started)
            if character in characters and "hernan" in label.lower()
        ]

    as_owner = {"X-API-Key": (await factory.api_key(owner))[1]}
    as_staff = {"Authorization": f"Bearer {factory.token(staff.id)}"}
    mine = expected(first, second)
    assert len(mine) == 5
    assert await walk(as_owner) == (mine, {5})
    assert await walk(as_owner, personaId=str(second.public_id)) == (expected(second), {2})
    # Another owner's persona: nothing, as if it did not exist.
    assert await walk(as_owner, personaId=str(others.public_id)) == ([], {0})
    everyone = expected(first, second, others)
    assert await walk(as_staff) == (everyone, {6})
    assert await walk(as_staff, personaId=str(others.public_id)) == (expected(others), {1})
