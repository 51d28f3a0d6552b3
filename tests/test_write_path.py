"""The voice worker's write path, through HTTP: characters, session start, turns, finalize."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from tests.conftest import TEST_RECORDINGS_DIR, asgi_client, make_settings, running_app
from tests.factories import SEED_USAGE, Factory, unique
from tests.test_agents_transcript import NOT_FOUND as SESSION_NOT_FOUND
from tests.test_agents_transcript import iso
from transcripts.db.tables import User
from transcripts.demo import SEED_EXAMPLE_TURNS
from transcripts.pricing import LlmPrice, PriceTable

CHARACTERS = "/api/ai-characters/"
START = "/api/agents/agent-session/"
TURNS = "/api/agents/agent-session/{}/turns/"
FINALIZE = "/api/agents/agent-session/{}/finalize/"
TRANSCRIPT = "/api/agents/agent-session/{}/transcript/"
BILLING = "/api/billing/sessions/{}/"

# README.md, "Price table": what the seed's example usage costs with the shipped prices.
SEED_COST = "0.009873"
SEED_USAGE_BODY = {
    "llm_input_tokens": SEED_USAGE.llm_input_tokens,
    "llm_output_tokens": SEED_USAGE.llm_output_tokens,
    "llm_model": SEED_USAGE.llm_model,
    "llm_provider": SEED_USAGE.llm_provider,
    "stt_audio_seconds": SEED_USAGE.stt_audio_seconds,
    "stt_provider": SEED_USAGE.stt_provider,
    "tts_characters": SEED_USAGE.tts_characters,
    "tts_provider": SEED_USAGE.tts_provider,
}


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "message": "OK", "data": data, "errors": None}


def failure(message: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "success": False,
        "message": message,
        "data": None,
        "errors": errors or {"detail": [message]},
    }


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seed_turn(index: int) -> dict[str, Any]:
    """Turn ``index`` of Oshara's example conversation, as a worker sends it."""
    role, text = SEED_EXAMPLE_TURNS[index]
    return {
        "turn_index": index,
        "role": role,
        "text": text,
        "ts": round(0.42 + index * 12.8, 2),
        "speaking_duration_seconds": round(len(text) / 15, 2),
        "was_interrupted": index in (4, 8),
    }


class Worker:
    """Drives sessions over HTTP the way the voice worker does."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def character(self, slug: str | None = None, **fields: Any) -> str:
        slug = slug or unique("bot")
        response = await self.client.post(
            CHARACTERS, json={"slug": slug, "name": "Cara", **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return slug

    async def start(self, slug: str, **fields: Any) -> str:
        response = await self.client.post(
            START, json={"agent": slug, **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        session_id: str = response.json()["data"]["session_id"]
        return session_id

    async def turns(self, session_id: str, batch: Any) -> httpx.Response:
        return await self.client.post(TURNS.format(session_id), json=batch, headers=self.headers)

    async def finalize(self, session_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(FINALIZE.format(session_id), json=body, headers=self.headers)

    async def read(self, session_id: str) -> dict[str, Any]:
        response = await self.client.get(TRANSCRIPT.format(session_id), headers=self.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


async def owner_worker(
    client: httpx.AsyncClient, factory: Factory, *, jwt_auth: bool = False, tenant: str = ""
) -> tuple[User, Worker]:
    owner = await factory.user(tenant=tenant or None)
    if jwt_auth:
        return owner, Worker(client, {"Authorization": f"Bearer {factory.token(owner.id)}"})
    _, key = await factory.api_key(owner)
    return owner, Worker(client, {"X-API-Key": key})


class _AnyLink:
    """Equal to any non-empty string: the recording link and its expiry change per read."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<a fresh signed link>"


ANY_LINK = _AnyLink()


async def test_a_worker_drives_a_whole_session(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user(tenant="acme")
    _, key = await factory.api_key(owner)
    dashboard = Worker(client, {"Authorization": f"Bearer {factory.token(owner.id)}"})
    worker = Worker(client, {"X-API-Key": key})

    slug = unique("support-bot")
    created = await client.post(
        CHARACTERS, json={"slug": slug, "name": "Support Bot"}, headers=dashboard.headers
    )
    assert created.status_code == 201
    created_at = created.json()["data"]["created_at"]
    assert abs(parse(created_at) - datetime.now(UTC)) < timedelta(minutes=1)
    assert created.json() == ok(
        {
            "slug": slug,
            "name": "Support Bot",
            "allowed_origins": [],
            "is_active": True,
            "created_at": created_at,
        }
    )

    started = await client.post(
        START,
        json={
            "agent": slug,
            "origin_url": "https://yoursite.com/contact",
            "metadata": {"user_id": "u_42", "plan": "pro"},
            "room_name": "oshara-voice-support-bot-user123-abc12",
        },
        headers=worker.headers,
    )
    assert started.status_code == 201
    session_id = started.json()["data"]["session_id"]
    assert str(uuid.UUID(session_id)) == session_id
    assert started.json() == ok(
        {
            "session_id": session_id,
            "room_name": "oshara-voice-support-bot-user123-abc12",
            "participant_identity": f"user-{owner.id}",
            "character_slug": slug,
            "expires_in_seconds": 3600,
        }
    )

    # Batches as a worker sends them: one, its retry, a later one out of order, then the gap
    # filled along with turns already stored on either side of it.
    batches = [
        ([seed_turn(i) for i in range(4)], 4, 4),
        ([seed_turn(i) for i in range(4)], 0, 4),
        ([seed_turn(i) for i in (13, 9, 11, 8, 12, 10)], 6, 10),
        ([seed_turn(i) for i in (3, 7, 5, 4, 6, 8)], 4, 14),
    ]
    for batch, inserted, turn_count in batches:
        response = await worker.turns(session_id, batch)
        assert response.status_code == 200
        assert response.json() == ok(
            {
                "session_id": session_id,
                "received": len(batch),
                "inserted": inserted,
                "turn_count": turn_count,
            }
        )

    in_progress = await worker.read(session_id)
    assert in_progress["finalized_at"] is None
    assert [item["turn_index"] for item in in_progress["transcript"]] == list(range(14))
    started_at = parse(in_progress["created_at"])
    assert abs(started_at - datetime.now(UTC)) < timedelta(minutes=1)

    # The worker uploads the recording (to the local store here), then registers it.
    recording = Path(TEST_RECORDINGS_DIR) / "oshara-recordings" / f"{session_id}.mp4"
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    finalized = await worker.finalize(
        session_id,
        **SEED_USAGE_BODY,
        ended_at=iso(started_at + timedelta(seconds=184.7)),
        recording_url=f"s3://oshara-recordings/{session_id}.mp4",
    )
    assert finalized.status_code == 200
    finalized_at = finalized.json()["data"]["finalized_at"]
    link = finalized.json()["data"]["recording_presigned_url"]
    assert link.startswith(f"http://testserver/recordings/oshara-recordings/{session_id}.mp4?")
    played = await client.get(link)
    assert (played.status_code, played.content) == (200, recording.read_bytes())
    assert abs(parse(finalized_at) - datetime.now(UTC)) < timedelta(minutes=1)
    expected = {
        "id": in_progress["id"],
        "session_id": session_id,
        "tenant_id": "acme",
        "character_slug": slug,
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
        "estimated_cost_usd": SEED_COST,
        "finalized_at": finalized_at,
        "recording_status": "READY",
        "recording_url": f"s3://oshara-recordings/{session_id}.mp4",
        # Signed anew on every read; compared apart below.
        "recording_presigned_url": ANY_LINK,
        "recording_presigned_url_expires_at": ANY_LINK,
        "transcript": [
            {"role": role, "text": text, "turn_index": index, "ts": round(0.42 + index * 12.8, 2)}
            for index, (role, text) in enumerate(SEED_EXAMPLE_TURNS)
        ],
        "transcript_text": "\n".join(
            f"{role.capitalize()}: {text}" for role, text in SEED_EXAMPLE_TURNS
        ),
        "created_at": in_progress["created_at"],
    }
    assert finalized.json() == ok(expected)
    assert list(finalized.json()["data"]) == list(expected)

    # The dashboard reads what the worker wrote, at both of the dialect's paths.
    assert await dashboard.read(session_id) == expected
    billing = await client.get(BILLING.format(session_id), headers=dashboard.headers)
    assert billing.json() == ok(expected)

    # Through the Anam dialect too: the same turns, persona for assistant, times from ts.
    anam = await client.get(f"/v1/sessions/{session_id}/transcript", headers=dashboard.headers)
    assert anam.status_code == 200
    anam_body = anam.json()
    assert (anam_body["sessionId"], anam_body["totalMessages"]) == (session_id, 14)
    assert anam_body["durationMs"] == 184700
    assert anam_body["transcriptsEnabled"] is True
    assert [m["message"] for m in anam_body["messages"]] == [t for _, t in SEED_EXAMPLE_TURNS]
    assert [m["role"] for m in anam_body["messages"]] == [
        "persona" if role == "assistant" else "user" for role, _ in SEED_EXAMPLE_TURNS
    ]
    for index, message in enumerate(anam_body["messages"]):
        offset = (parse(message["timestamp"]) - started_at).total_seconds()
        assert abs(offset - round(0.42 + index * 12.8, 2)) < 0.001
        assert ("wasInterrupted" in message) == (message["role"] == "persona")
    session_view = await client.get(f"/v1/sessions/{session_id}", headers=dashboard.headers)
    assert session_view.json()["status"] == "COMPLETED"
    anam_recording = await client.get(
        f"/v1/sessions/{session_id}/recording", headers=dashboard.headers
    )
    assert (
        await client.get(anam_recording.json()["recordingUrl"])
    ).content == recording.read_bytes()

    # The worker retries its finalize: the stored result again (the link is signed anew).
    retried = await worker.finalize(session_id, llm_input_tokens=1, tts_characters=99)
    assert retried.status_code == 200
    assert retried.json() == ok(expected)
    assert retried.json()["data"]["finalized_at"] == finalized_at

    late = await worker.turns(session_id, [seed_turn(13) | {"turn_index": 14}])
    assert late.status_code == 409
    assert late.json() == failure("The session is finalized; no more turns can be added.")
    assert await worker.read(session_id) == expected


async def test_seed_usage_costs_exactly_what_the_readme_says(
    client: httpx.AsyncClient, factory: Factory, project_root: Path
) -> None:
    readme = (project_root / "README.md").read_text()
    assert f"`estimated_cost_usd` of the seed's example usage: `{SEED_COST}`" in readme
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())

    response = await worker.finalize(session_id, **SEED_USAGE_BODY)

    assert response.json()["data"]["estimated_cost_usd"] == SEED_COST
    # 1840 x $0.15/M + 612 x $0.60/M + 92.3 s x $0.006/min + 1284 x $0/M, rounded half-up.
    exact = (
        1840 * Decimal("0.15") / 10**6
        + 612 * Decimal("0.60") / 10**6
        + Decimal("92.3") * Decimal("0.006") / 60
    )
    assert exact == Decimal("0.0098732")


async def test_a_cost_ending_in_an_exact_half_rounds_up(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())

    # 0.065 s x $0.006/min = $0.0000065 exactly; dividing by 60 first gives 0.00000649…9.
    response = await worker.finalize(session_id, stt_audio_seconds=0.065, stt_provider="openai")

    assert response.json()["data"]["estimated_cost_usd"] == "0.000007"


async def test_the_price_table_comes_from_settings(database_url: str, factory: Factory) -> None:
    prices = PriceTable(
        llm={
            "acme-ai/parrot-1": LlmPrice(
                input_per_million_tokens=Decimal("1.00"), output_per_million_tokens=Decimal("2.5")
            )
        }
    )
    async for app in running_app(make_settings(database_url, prices=prices)):
        async with asgi_client(app) as client:
            _, worker = await owner_worker(client, factory)
            session_id = await worker.start(await worker.character())
            response = await worker.finalize(
                session_id,
                llm_input_tokens=1840,
                llm_output_tokens=613,
                llm_model="parrot-1",
                llm_provider="acme-ai",
                # No price for this provider: it costs nothing rather than failing finalize.
                stt_audio_seconds=60.0,
                stt_provider="nobody",
            )
    # 1840 x 1.00/M + 613 x 2.5/M = 0.0033725, half-up to 0.003373.
    assert response.json()["data"]["estimated_cost_usd"] == "0.003373"


async def test_finalize_with_no_body_ends_the_session_now(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory, jwt_auth=True)
    session_id = await worker.start(await worker.character())

    response = await client.post(FINALIZE.format(session_id), headers=worker.headers)

    assert response.status_code == 200
    data = response.json()["data"]
    assert parse(data["finalized_at"]) >= parse(data["created_at"])
    assert 0 <= data["session_duration_seconds"] < 60
    assert (data["llm_input_tokens"], data["llm_model"], data["estimated_cost_usd"]) == (
        0,
        None,
        "0.000000",
    )
    assert data["recording_status"] == "NONE"


async def test_a_rewrite_of_a_stored_turn_refuses_the_whole_batch(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    await worker.turns(session_id, [seed_turn(0), seed_turn(1)])
    before = await worker.read(session_id)

    response = await worker.turns(
        session_id, [seed_turn(2), seed_turn(1) | {"text": "Something else entirely."}]
    )

    assert response.status_code == 409
    message = "Turn 1 is already stored with different content."
    assert response.json() == failure(message, {"turn_index": [message]})
    assert await worker.read(session_id) == before, "turn 2 of the refused batch is not stored"

    twice = await worker.turns(session_id, [seed_turn(2), seed_turn(2) | {"text": "Other."}])
    assert twice.status_code == 409
    message = "Turn 2 is given twice with different content."
    assert twice.json() == failure(
        "Turn 2 appears twice in the batch with different content.", {"turn_index": [message]}
    )
    assert await worker.read(session_id) == before


def _too_many() -> list[dict[str, Any]]:
    return [{"turn_index": i, "role": "user", "text": "hi", "ts": float(i)} for i in range(501)]


BAD_BATCHES = {
    "empty role": (
        [seed_turn(2), seed_turn(3) | {"role": ""}],
        {"1.role": ["Input should be 'user' or 'assistant'"]},
    ),
    "unknown role": (
        [seed_turn(2) | {"role": "system"}],
        {"0.role": ["Input should be 'user' or 'assistant'"]},
    ),
    "negative ts": (
        [seed_turn(2) | {"ts": -0.5}],
        {"0.ts": ["Input should be greater than or equal to 0"]},
    ),
    "ts past a day": (
        [seed_turn(2) | {"ts": 86400.5}],
        {"0.ts": ["Input should be less than or equal to 86400"]},
    ),
    "negative turn_index": (
        [seed_turn(2) | {"turn_index": -1}],
        {"0.turn_index": ["Input should be greater than or equal to 0"]},
    ),
    "empty text": (
        [seed_turn(2) | {"text": ""}],
        {"0.text": ["String should have at least 1 character"]},
    ),
    "text too long": (
        [seed_turn(2) | {"text": "a" * 10_001}],
        {"0.text": ["String should have at most 10000 characters"]},
    ),
    "missing fields": (
        [{"turn_index": 2}],
        {
            "0.role": ["Field required"],
            "0.text": ["Field required"],
            "0.ts": ["Field required"],
        },
    ),
    "not an array": (seed_turn(2), {"body": ["Input should be a valid list"]}),
    "over 500 turns": (
        _too_many(),
        {"body": ["List should have at most 500 items after validation, not 501"]},
    ),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
async def test_bad_turns_are_400_and_change_nothing(
    client: httpx.AsyncClient, factory: Factory, case: str
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    await worker.turns(session_id, [seed_turn(0), seed_turn(1)])
    before = await worker.read(session_id)
    batch, errors = BAD_BATCHES[case]

    response = await worker.turns(session_id, batch)

    assert response.status_code == 400
    assert response.json() == failure(f"Invalid {', '.join(errors)}.", errors)
    assert await worker.read(session_id) == before


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient, factory: Factory) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    headers = {**worker.headers, "Content-Type": "application/json"}

    broken = await client.post(TURNS.format(session_id), content=b"[{", headers=headers)
    infinite = await client.post(
        TURNS.format(session_id),
        content=b'[{"turn_index": 0, "role": "user", "text": "hi", "ts": Infinity}]',
        headers=headers,
    )

    assert broken.status_code == 400
    assert broken.json() == failure("Invalid body.", {"body": ["The body is not valid JSON."]})
    assert infinite.status_code == 400
    assert infinite.json() == failure("Invalid 0.ts.", {"0.ts": ["Must be a finite number."]})
    assert (await worker.read(session_id))["transcript"] == []


async def test_bodies_over_the_byte_limit_are_413(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    too_large = failure("The request body exceeds 1048576 bytes.")
    # 600 turns of ~1,700 bytes: over the byte limit (and the turn limit, checked later).
    batch = [seed_turn(0) | {"turn_index": i, "text": "x" * 1700} for i in range(600)]

    declared = await worker.turns(session_id, batch)
    assert declared.status_code == 413
    assert declared.json() == too_large

    async def chunked() -> Any:
        # No Content-Length: the limit holds for the bytes as they arrive.
        for _ in range(11):
            yield b" " * 100_000

    headers = {**worker.headers, "Content-Type": "application/json"}
    streamed = await client.post(TURNS.format(session_id), content=chunked(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json() == too_large

    just_fits = b"[" + b" " * (1024 * 1024 - 2) + b"]"
    response = await client.post(TURNS.format(session_id), content=just_fits, headers=headers)
    assert response.status_code == 200
    assert (await worker.read(session_id))["transcript"] == []


async def test_unknown_malformed_and_foreign_sessions(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    await worker.turns(session_id, [seed_turn(0)])
    before = await worker.read(session_id)
    owner_tenant = await factory.tenant_slug(owner)
    same_tenant = await factory.user(tenant=owner_tenant)
    other_tenant = await factory.user()

    answers = []
    for intruder in (same_tenant, other_tenant):
        _, key = await factory.api_key(intruder)
        for headers in (
            {"X-API-Key": key},
            {"Authorization": f"Bearer {factory.token(intruder.id)}"},
        ):
            for target in (session_id, str(uuid.uuid4())):
                answers.append(
                    await client.post(TURNS.format(target), json=[seed_turn(1)], headers=headers)
                )
                answers.append(
                    await client.post(
                        FINALIZE.format(target), json=SEED_USAGE_BODY, headers=headers
                    )
                )
    for response in answers:
        assert response.status_code == 404
        assert response.json() == SESSION_NOT_FOUND
        assert response.headers == answers[0].headers
    assert await worker.read(session_id) == before, "nothing was added or finalized"

    malformed = await worker.turns("not-a-uuid", [seed_turn(1)])
    assert malformed.status_code == 400
    assert malformed.json() == failure(
        "Invalid session_id.", {"session_id": ["Must be a valid UUID."]}
    )
    anonymous = await client.post(TURNS.format(session_id), json=[seed_turn(1)])
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_staff_write_to_any_session(client: httpx.AsyncClient, factory: Factory) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    staff = await factory.user(staff=True)
    staff_worker = Worker(client, {"Authorization": f"Bearer {factory.token(staff.id)}"})

    appended = await staff_worker.turns(session_id, [seed_turn(0)])
    finalized = await staff_worker.finalize(session_id, **SEED_USAGE_BODY)

    assert appended.status_code == 200
    assert finalized.json()["data"]["estimated_cost_usd"] == SEED_COST
    assert (await worker.read(session_id))["turn_count"] == 1


async def test_bad_finalize_bodies_change_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    before = await worker.read(session_id)
    cases = {
        "naive ended_at": (
            {"ended_at": "2026-05-28T14:23:48"},
            {"ended_at": ["Input should have timezone info"]},
        ),
        "ended before it started": (
            {"ended_at": "2001-01-01T00:00:00Z"},
            {"ended_at": ["Must not be before the session started."]},
        ),
        "negative tokens": (
            {"llm_input_tokens": -1},
            {"llm_input_tokens": ["Input should be greater than or equal to 0"]},
        ),
        "tokens past 32 bits": (
            {"tts_characters": 2**31},
            {"tts_characters": ["Input should be less than or equal to 2147483647"]},
        ),
        "a model name past the column": (
            {"llm_model": "m" * 101},
            {"llm_model": ["String should have at most 100 characters"]},
        ),
    }
    for name, (body, errors) in cases.items():
        response = await worker.finalize(session_id, **body)
        assert response.status_code == 400, name
        message = (
            "The session cannot end before it started."
            if name == "ended before it started"
            else f"Invalid {', '.join(errors)}."
        )
        assert response.json() == failure(message, errors), name
    assert await worker.read(session_id) == before


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
    await _deactivate(factory, character.id)
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


async def test_write_routes_answer_with_and_without_the_slash(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character()
    started = await client.post(START.rstrip("/"), json={"agent": slug}, headers=worker.headers)
    assert started.status_code == 201
    session_id = started.json()["data"]["session_id"]
    appended = await client.post(
        TURNS.format(session_id).rstrip("/"), json=[seed_turn(0)], headers=worker.headers
    )
    assert appended.status_code == 200
    finalized = await client.post(FINALIZE.format(session_id).rstrip("/"), headers=worker.headers)
    assert finalized.status_code == 200
    created = await client.post(
        CHARACTERS.rstrip("/"), json={"slug": unique("bot"), "name": "X"}, headers=worker.headers
    )
    assert created.status_code == 201


async def test_the_openapi_document_declares_the_write_path(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    expected = {
        (CHARACTERS, "post"): {"201", "400", "401", "404", "409", "413", "431", "500", "503"},
        (START, "post"): {"201", "400", "401", "403", "404", "413", "431", "500", "503"},
        (TURNS.format("{session_id}"), "post"): {
            *("200", "400", "401", "404", "409", "413", "431", "500", "503")
        },
        (FINALIZE.format("{session_id}"), "post"): {
            *("200", "400", "401", "404", "413", "431", "500", "503")
        },
    }
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, path
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"
        }
    schemas = document["components"]["schemas"]
    turns_body = paths[TURNS.format("{session_id}")]["post"]["requestBody"]
    assert turns_body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TurnBatch"
    }
    assert schemas["TurnBatch"]["maxItems"] == 500
    assert schemas["TurnInput"]["properties"]["text"]["maxLength"] == 10_000


async def _deactivate(factory: Factory, character_id: int) -> None:
    from sqlalchemy import update

    from transcripts.db.tables import Character

    async with factory.database.sessionmaker.begin() as db:
        await db.execute(
            update(Character).where(Character.id == character_id).values(is_active=False)
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
