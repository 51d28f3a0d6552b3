"""The enveloped transcript endpoint, through HTTP, with exact bodies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.factories import SEED_USAGE, Factory, turns
from transcripts.demo import SEED_EXAMPLE_TURNS
from transcripts.domain import NewTurn, SessionRef
from transcripts.services import sessions

PATHS = [
    "/api/agents/agent-session/{}/transcript/",
    "/api/agents/agent-session/{}/transcript",
    "/api/billing/sessions/{}/",
    "/api/billing/sessions/{}",
]
NOT_FOUND = {
    "success": False,
    "message": "Session not found.",
    "data": None,
    "errors": {"detail": ["Session not found."]},
}


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def seed_example(factory: Factory) -> tuple[int, SessionRef, dict[str, object]]:
    """The public example of Oshara's docs, stored and with the summary it must produce."""
    owner = await factory.user(tenant="acme")
    character = await factory.character(
        owner, slug=f"support-bot-{uuid.uuid4().hex[:6]}", name="Support Bot"
    )
    started = datetime(2026, 5, 28, 14, 20, 43, tzinfo=UTC)
    seed_turns = [
        NewTurn(
            turn_index=index,
            role=role,  # type: ignore[arg-type]
            text=text,
            ts=round(0.42 + index * 12.8, 2),
            was_interrupted=index in (4, 8),
        )
        for index, (role, text) in enumerate(SEED_EXAMPLE_TURNS)
    ]
    session = await factory.session(
        character,
        user_id=owner.id,
        turns=seed_turns,
        usage=SEED_USAGE,
        started_at=started,
        duration_seconds=184.7,
        origin_url="https://yoursite.com/contact",
        metadata={"user_id": "u_42", "plan": "pro"},
        room_name="oshara-voice-support-bot-user123-abc12",
    )
    expected = {
        "id": session.id,
        "session_id": str(session.session_id),
        "tenant_id": "acme",
        "character_slug": character.slug,
        "user": owner.id,
        "room_name": "oshara-voice-support-bot-user123-abc12",
        "origin_url": "https://yoursite.com/contact",
        "metadata": {"user_id": "u_42", "plan": "pro"},
        "session_duration_seconds": 184.7,
        "turn_count": 14,
        "interruption_count": 2,
        "llm_input_tokens": 1840,
        "llm_output_tokens": 612,
        "llm_model": "gpt-4o-mini",
        "llm_provider": "openai",
        "stt_audio_seconds": 92.3,
        "stt_provider": "openai",
        "tts_characters": 1284,
        "tts_provider": "chatterbox",
        # 1840 x 0.15/M + 612 x 0.60/M + 92.3 s x 0.006/min + 1284 x 0/M = 0.0098732
        "estimated_cost_usd": "0.009873",
        "finalized_at": iso(session.finalized_at),  # type: ignore[arg-type]
        "recording_status": "NONE",
        "recording_url": None,
        "recording_presigned_url": None,
        "recording_presigned_url_expires_at": None,
        "transcript": [
            {"role": turn.role, "text": turn.text, "turn_index": turn.turn_index, "ts": turn.ts}
            for turn in seed_turns
        ],
        "transcript_text": "\n".join(
            f"{'Assistant' if role == 'assistant' else 'User'}: {text}"
            for role, text in SEED_EXAMPLE_TURNS
        ),
        "created_at": "2026-05-28T14:20:43Z",
    }
    return owner.id, session, expected


async def test_seed_example_round_trips_field_by_field(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner_id, session, expected = await seed_example(factory)
    owner = await _user(factory, owner_id)
    _, key = await factory.api_key(owner)

    response = await client.get(PATHS[0].format(session.session_id), headers={"X-API-Key": key})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"success": True, "message": "OK", "data": expected, "errors": None}
    assert list(body["data"]) == list(expected), "fields come in the documented order"
    assert body["data"]["transcript_text"].startswith(
        "Assistant: Hi! How can I help you today?\nUser: I want to book a demo.\nAssistant: "
    )


async def test_every_path_spelling_answers_the_same_bytes(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner_id, session, _ = await seed_example(factory)
    _, key = await factory.api_key(await _user(factory, owner_id))

    bodies = set()
    for path in PATHS:
        response = await client.get(path.format(session.session_id), headers={"X-API-Key": key})
        assert response.status_code == 200, path  # never a redirect
        bodies.add(response.content)
    assert len(bodies) == 1


async def test_in_progress_session(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    session = await factory.session(
        character,
        user_id=None,
        turns=turns(("assistant", "Hello!"), ("user", "Hi, I have a question")),
    )
    _, key = await factory.api_key(owner)

    response = await client.get(PATHS[0].format(session.session_id), headers={"X-API-Key": key})

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["finalized_at"] is None
    assert data["session_duration_seconds"] is None
    assert data["estimated_cost_usd"] == "0.000000"
    assert data["user"] is None
    assert data["llm_model"] is None
    assert data["turn_count"] == 2
    assert data["transcript"] == [
        {"role": "assistant", "text": "Hello!", "turn_index": 0, "ts": 0.42},
        {"role": "user", "text": "Hi, I have a question", "turn_index": 1, "ts": 2.92},
    ]
    assert data["transcript_text"] == "Assistant: Hello!\nUser: Hi, I have a question"


async def test_session_without_turns(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner))
    _, key = await factory.api_key(owner)

    response = await client.get(PATHS[2].format(session.session_id), headers={"X-API-Key": key})

    data = response.json()["data"]
    assert (data["transcript"], data["transcript_text"], data["turn_count"]) == ([], "", 0)
    assert data["interruption_count"] == 0
    assert data["metadata"] == {}


async def test_transcript_is_ordered_and_floats_exact(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    async with factory.database.sessionmaker.begin() as db:
        session = await sessions.start_session(db, character, user_id=owner.id)
        # Out of order, with a float that needs all 17 digits to survive.
        for index in (3, 0, 2, 1):
            await sessions.append_turns(
                db,
                session,
                [
                    NewTurn(
                        turn_index=index,
                        role="user" if index % 2 else "assistant",
                        text=f'turn {index} — ünïcödé ✓ "quoted"\nnewline',
                        ts=0.1 + 0.2 + index,
                        speaking_duration_seconds=None,
                    )
                ],
            )
    _, key = await factory.api_key(owner)

    response = await client.get(PATHS[0].format(session.session_id), headers={"X-API-Key": key})

    transcript = response.json()["data"]["transcript"]
    assert [item["turn_index"] for item in transcript] == [0, 1, 2, 3]
    assert [item["ts"] for item in transcript] == [0.1 + 0.2 + index for index in range(4)]
    assert transcript[1]["text"] == 'turn 1 — ünïcödé ✓ "quoted"\nnewline'


@pytest.mark.parametrize("bad_id", ["xyz", "123", "00000000-0000-0000-0000-00000000000g", "%20"])
async def test_malformed_session_id_is_400_not_422(
    client: httpx.AsyncClient, factory: Factory, bad_id: str
) -> None:
    _, key = await factory.api_key(await factory.user())
    for path in PATHS:
        response = await client.get(path.format(bad_id), headers={"X-API-Key": key})
        assert response.status_code == 400, path
        assert response.json() == {
            "success": False,
            "message": "Invalid session_id.",
            "data": None,
            "errors": {"session_id": ["Must be a valid UUID."]},
        }


async def test_missing_session_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    _, key = await factory.api_key(await factory.user())

    response = await client.get(PATHS[0].format(uuid.uuid4()), headers={"X-API-Key": key})

    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_unknown_path_and_method_answer_in_the_envelope(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    response = await client.get("/api/agents/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "message": "Not found.",
        "data": None,
        "errors": {"detail": ["Not found."]},
    }
    response = await client.delete(PATHS[0].format(uuid.uuid4()))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json() == {
        "success": False,
        "message": "Method not allowed.",
        "data": None,
        "errors": {"detail": ["Method not allowed."]},
    }


async def _user(factory: Factory, user_id: int):  # type: ignore[no-untyped-def]
    from transcripts.db.tables import User

    async with factory.database.sessionmaker() as db:
        return await db.scalar(select(User).where(User.id == user_id))


async def test_finalized_at_and_duration_follow_the_stored_times(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    started = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    session = await factory.session(
        await factory.character(owner), usage=SEED_USAGE, started_at=started, duration_seconds=61.5
    )
    _, key = await factory.api_key(owner)

    data = (
        await client.get(PATHS[0].format(session.session_id), headers={"X-API-Key": key})
    ).json()["data"]

    assert data["created_at"] == "2026-01-02T03:04:05.250000Z"
    assert data["session_duration_seconds"] == 61.5
    finalized = datetime.fromisoformat(data["finalized_at"].replace("Z", "+00:00"))
    assert abs(finalized - datetime.now(UTC)) < timedelta(minutes=1)


async def test_interruptions_count_interrupted_assistant_turns_only(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    flagged = [
        NewTurn(
            turn_index=0,
            role="assistant",
            text="Let me explain the plan.",
            ts=0.5,
            was_interrupted=True,
        ),
        # The caller speaking over the agent sets the flag on both sides; it is one interruption.
        NewTurn(
            turn_index=1, role="user", text="Sorry, quick question.", ts=2.0, was_interrupted=True
        ),
        NewTurn(turn_index=2, role="assistant", text="Sure.", ts=3.0),
    ]
    session = await factory.session(await factory.character(owner), turns=flagged)

    response = await client.get(PATHS[0].format(session.session_id), headers={"X-API-Key": key})
    assert response.json()["data"]["interruption_count"] == 1
    anam = await client.get(
        f"/v1/sessions/{session.session_id}/transcript", headers={"X-API-Key": key}
    )
    persona = [m["wasInterrupted"] for m in anam.json()["messages"] if m["role"] == "persona"]
    assert persona == [True, False]
