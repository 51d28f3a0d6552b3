"""Session History (``GET /api/billing/usage/``): totals, filters, pages and scoping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.factories import SEED_USAGE, Factory, turns
from tests.write_path import TRANSCRIPT, failure, ok
from transcripts.domain import SessionRef, UserRecord
from transcripts.pricing import Usage

USAGE = "/api/billing/usage/"
# 1000 x $2.50/M + 500 x $10/M + 30 s x $0.006/min + 2000 x $15/M = $0.0405
GPT4O_USAGE = Usage(
    llm_input_tokens=1000,
    llm_output_tokens=500,
    llm_model="gpt-4o",
    llm_provider="openai",
    stt_audio_seconds=30.0,
    stt_provider="openai",
    tts_characters=2000,
    tts_provider="openai",
)


def at(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


@dataclass(frozen=True)
class History:
    """An owner with two characters and three sessions, and a stranger with one of their own."""

    owner: UserRecord
    stranger: UserRecord
    sessions: dict[str, SessionRef]
    first_slug: str
    stranger_slug: str


@pytest.fixture
async def history(factory: Factory) -> History:
    owner = await factory.user()
    first, second = await factory.character(owner), await factory.character(owner)
    stranger = await factory.user()
    strangers = await factory.character(stranger)
    sessions = {
        "seed": await factory.session(
            first,
            user_id=owner.id,
            turns=turns(("assistant", "Hi!"), ("user", "Hello.")),
            usage=SEED_USAGE,
            started_at=at(1),
            duration_seconds=184.7,
            metadata={"plan": "pro"},
        ),
        "in progress": await factory.session(first, started_at=at(2)),
        "gpt-4o": await factory.session(
            second, turns=turns(("assistant", "Welcome")), usage=GPT4O_USAGE, started_at=at(3)
        ),
        "stranger's": await factory.session(strangers, usage=GPT4O_USAGE, started_at=at(2)),
    }
    return History(owner, stranger, sessions, first.slug, strangers.slug)


async def summaries(
    client: httpx.AsyncClient, headers: dict[str, str], *sessions: SessionRef
) -> list[dict[str, Any]]:
    """The sessions as the transcript endpoint answers them: History must say the same."""
    result = []
    for session in sessions:
        response = await client.get(TRANSCRIPT.format(session.session_id), headers=headers)
        result.append(response.json()["data"])
    return result


async def test_totals_and_the_page_newest_first(
    client: httpx.AsyncClient, factory: Factory, history: History
) -> None:
    _, key = await factory.api_key(history.owner)
    headers = {"X-API-Key": key}
    s = history.sessions

    response = await client.get(USAGE, headers=headers)

    assert response.status_code == 200
    assert response.json() == ok(
        {
            "total_sessions": 3,
            "total_llm_input_tokens": 2840,
            "total_llm_output_tokens": 1112,
            "total_stt_audio_seconds": 122.3,
            "total_tts_characters": 3284,
            # 0.009873 + 0.040500, summed in micro-dollars: exact.
            "total_estimated_cost_usd": "0.050373",
            "page": 1,
            "page_size": 50,
            "total_pages": 1,
            "next_cursor": None,
            "sessions": await summaries(client, headers, s["gpt-4o"], s["in progress"], s["seed"]),
        }
    )


async def test_filters(client: httpx.AsyncClient, factory: Factory, history: History) -> None:
    token = factory.token(history.owner.id)
    headers = {"Authorization": f"Bearer {token}"}
    s = history.sessions
    first_slug = history.first_slug
    owner_tenant = await factory.tenant_slug(history.owner)
    stranger_tenant = await factory.tenant_slug(history.stranger)
    cases: list[tuple[dict[str, Any], list[SessionRef]]] = [
        ({"character_slug": first_slug}, [s["in progress"], s["seed"]]),
        ({"tenant_id": owner_tenant}, [s["gpt-4o"], s["in progress"], s["seed"]]),
        ({"tenant_id": stranger_tenant}, []),
        ({"start": "2026-01-02T10:00:00Z"}, [s["gpt-4o"], s["in progress"]]),
        ({"end": "2026-01-02T10:00:00Z"}, [s["in progress"], s["seed"]]),
        ({"start": "2026-01-02T10:00:00", "end": "2026-01-02T10:00:00"}, [s["in progress"]]),
        ({"start": "2026-01-02T11:00:00+01:00", "end": "2026-01-02T10:00:00Z"}, [s["in progress"]]),
        ({"start": "2026-01-02T12:00:00+01:00"}, [s["gpt-4o"]]),
        (
            {"character_slug": first_slug, "start": "2026-01-01T10:00:00.000001Z"},
            [s["in progress"]],
        ),
    ]
    for params, expected in cases:
        response = await client.get(USAGE, params=params, headers=headers)
        data = response.json()["data"]
        assert data["sessions"] == await summaries(client, headers, *expected), params
        assert data["total_sessions"] == len(expected), params
        assert data["total_pages"] == (1 if expected else 0), params


async def test_pages(client: httpx.AsyncClient, factory: Factory, history: History) -> None:
    _, key = await factory.api_key(history.owner)
    headers = {"X-API-Key": key}
    s = history.sessions
    pages = {
        1: [s["gpt-4o"], s["in progress"]],
        2: [s["seed"]],
        3: [],
    }
    for page, expected in pages.items():
        response = await client.get(USAGE, params={"page": page, "page_size": 2}, headers=headers)
        data = response.json()["data"]
        assert (data["page"], data["page_size"], data["total_pages"]) == (page, 2, 2)
        assert data["total_sessions"] == 3, "totals cover every page"
        assert data["total_estimated_cost_usd"] == "0.050373"
        assert data["sessions"] == await summaries(client, headers, *expected)


async def test_other_owners_sessions_are_simply_absent(
    client: httpx.AsyncClient, factory: Factory, history: History
) -> None:
    _, key = await factory.api_key(history.owner)

    response = await client.get(
        USAGE, params={"character_slug": history.stranger_slug}, headers={"X-API-Key": key}
    )

    assert response.json() == ok(
        {
            "total_sessions": 0,
            "total_llm_input_tokens": 0,
            "total_llm_output_tokens": 0,
            "total_stt_audio_seconds": 0.0,
            "total_tts_characters": 0,
            "total_estimated_cost_usd": "0.000000",
            "page": 1,
            "page_size": 50,
            "total_pages": 0,
            "next_cursor": None,
            "sessions": [],
        }
    )


async def test_staff_see_everyone(
    client: httpx.AsyncClient, factory: Factory, history: History
) -> None:
    staff = await factory.user(staff=True)
    stranger_session = history.sessions["stranger's"]
    headers = {"Authorization": f"Bearer {factory.token(staff.id)}"}

    response = await client.get(
        USAGE, params={"character_slug": history.stranger_slug}, headers=headers
    )

    data = response.json()["data"]
    assert data["sessions"] == await summaries(client, headers, stranger_session)
    assert data["total_estimated_cost_usd"] == "0.040500"


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"page_size": 201}, {"page_size": ["Input should be less than or equal to 200"]}),
        ({"page_size": 0}, {"page_size": ["Input should be greater than or equal to 1"]}),
        ({"page": 0}, {"page": ["Input should be greater than or equal to 1"]}),
        (
            {"page": "two"},
            {"page": ["Input should be a valid integer, unable to parse string as an integer"]},
        ),
        (
            {"start": "yesterday"},
            {"start": ["Input should be a valid datetime or date, input is too short"]},
        ),
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient, factory: Factory, params: dict[str, Any], errors: dict[str, Any]
) -> None:
    _, key = await factory.api_key(await factory.user())

    response = await client.get(USAGE, params=params, headers={"X-API-Key": key})

    assert response.status_code == 400
    assert response.json() == failure(f"Invalid {', '.join(errors)}.", errors)


async def test_end_before_start_is_400(client: httpx.AsyncClient, factory: Factory) -> None:
    _, key = await factory.api_key(await factory.user())

    response = await client.get(
        USAGE,
        params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        headers={"X-API-Key": key},
    )

    assert response.status_code == 400
    assert response.json() == failure("Invalid end.", {"end": ["Must not be before start."]})


async def test_history_needs_credentials(client: httpx.AsyncClient) -> None:
    for path in (USAGE, USAGE.rstrip("/")):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.json() == failure("Authentication credentials were not provided.")
