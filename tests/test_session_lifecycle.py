"""A worker's session through HTTP, start to finish: who may write, and where."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.factories import Factory, unique
from tests.test_agents_transcript import NOT_FOUND as SESSION_NOT_FOUND
from tests.test_agents_transcript import iso
from tests.write_path import (
    ANY_LINK,
    BILLING,
    CHARACTERS,
    FINALIZE,
    RECORDING_UPLOAD,
    SEED_COST,
    SEED_USAGE_BODY,
    START,
    TURNS,
    Worker,
    failure,
    ok,
    owner_worker,
    parse,
    seed_turn,
)
from transcripts.demo import SEED_EXAMPLE_TURNS


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
            "transcripts_enabled": True,
            "retention_days": None,
            "pii_redaction": "none",
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

    # The worker uploads the recording through the link the service hands out (to the local
    # store here), then registers the key it was given.
    audio = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)
    upload = await client.post(
        RECORDING_UPLOAD.format(session_id), json={"format": "mp4"}, headers=worker.headers
    )
    assert upload.status_code == 200, upload.text
    handed_out = upload.json()["data"]
    recording_url = handed_out["recording_url"]
    assert recording_url.startswith(f"s3://recordings/uploads/acme/{session_id}/")
    assert recording_url.endswith(".mp4")
    put = await client.put(handed_out["upload_url"], content=audio, headers=handed_out["headers"])
    assert put.status_code == 200
    finalized = await worker.finalize(
        session_id,
        **SEED_USAGE_BODY,
        ended_at=iso(started_at + timedelta(seconds=184.7)),
        recording_url=recording_url,
    )
    assert finalized.status_code == 200
    finalized_at = finalized.json()["data"]["finalized_at"]
    link = finalized.json()["data"]["recording_presigned_url"]
    assert link.startswith(f"http://testserver/recordings/{recording_url.removeprefix('s3://')}?")
    played = await client.get(link)
    assert (played.status_code, played.content) == (200, audio)
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
        "recording_url": recording_url,
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
    assert (await client.get(anam_recording.json()["recordingUrl"])).content == audio

    # The worker retries its finalize: the stored result again (the link is signed anew).
    retried = await worker.finalize(session_id, llm_input_tokens=1, tts_characters=99)
    assert retried.status_code == 200
    assert retried.json() == ok(expected)
    assert retried.json()["data"]["finalized_at"] == finalized_at

    late = await worker.turns(session_id, [seed_turn(13) | {"turn_index": 14}])
    assert late.status_code == 409
    assert late.json() == failure("The session is finalized; no more turns can be added.")
    assert await worker.read(session_id) == expected


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
        (CHARACTERS, "post"): {
            "201",
            "400",
            "401",
            "404",
            "409",
            "413",
            "429",
            "431",
            "500",
            "503",
        },
        (START, "post"): {"201", "400", "401", "403", "404", "413", "429", "431", "500", "503"},
        (TURNS.format("{session_id}"), "post"): {
            *("200", "400", "401", "404", "409", "413", "429", "431", "500", "503")
        },
        (FINALIZE.format("{session_id}"), "post"): {
            *("200", "400", "401", "404", "413", "429", "431", "500", "503")
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
