"""The Anam dialect through HTTP, with exact bodies, against the same repository."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import SEED_USAGE, Factory, turns
from tests.test_agents_transcript import seed_example
from transcripts.domain import CharacterRecord, NewTurn, UserRecord

# Request ids differ per request by design; pin one to compare whole header sets.
SAME_REQUEST_ID = {"X-Request-ID": "compare-me"}
NOT_FOUND = {"statusCode": 404, "error": "Not Found", "message": "Session not found"}
PATHS = ["/v1/sessions/{}/transcript", "/v1/sessions/{}", "/v1/sessions/{}/recording"]


async def anam_seed_session(factory: Factory, owner: UserRecord) -> tuple[CharacterRecord, object]:
    """The example of Anam's transcript page: persona Cara, a 754 s session."""
    character = await factory.character(owner, name="Cara")
    spoken = [
        NewTurn(
            turn_index=0,
            role="assistant",
            text="Hi! How can I help?",
            ts=1.0,
            speaking_duration_seconds=1.4,
            was_interrupted=False,
        ),
        NewTurn(
            turn_index=1,
            role="user",
            text="Can you tell me a joke?",
            ts=5.0,
            speaking_duration_seconds=2.1,
        ),
    ]
    session = await factory.session(
        character,
        user_id=owner.id,
        turns=spoken,
        usage=SEED_USAGE,
        started_at=datetime(2026, 4, 20, 9, 0, 0, tzinfo=UTC),
        duration_seconds=754,
        client_label="support-widget",
    )
    return character, session


async def test_transcript_matches_anams_example(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    _, session = await anam_seed_session(factory, owner)
    _, key = await factory.api_key(owner)

    response = await client.get(
        f"/v1/sessions/{session.session_id}/transcript", headers={"Authorization": f"Bearer {key}"}
    )

    assert response.status_code == 200
    assert response.json() == {
        "sessionId": str(session.session_id),
        "personaName": "Cara",
        "startTime": "2026-04-20T09:00:00.000Z",
        "endTime": "2026-04-20T09:12:34.000Z",
        "durationMs": 754000,
        "totalMessages": 2,
        "transcriptsEnabled": True,
        "messages": [
            {
                "role": "persona",
                "message": "Hi! How can I help?",
                "timestamp": "2026-04-20T09:00:01.000Z",
                "speakingDurationSeconds": 1.4,
                "wasInterrupted": False,
            },
            {
                "role": "user",
                "message": "Can you tell me a joke?",
                "timestamp": "2026-04-20T09:00:05.000Z",
                "speakingDurationSeconds": 2.1,
            },
        ],
    }
    user_message = response.json()["messages"][1]
    assert "wasInterrupted" not in user_message  # absent, not null


async def test_in_progress_transcript_has_null_end(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    started = datetime(2026, 4, 20, 9, 0, 0, 123456, tzinfo=UTC)
    session = await factory.session(
        await factory.character(owner), started_at=started, turns=turns(("assistant", "Hello"))
    )
    _, key = await factory.api_key(owner)

    body = (
        await client.get(
            f"/v1/sessions/{session.session_id}/transcript", headers={"X-API-Key": key}
        )
    ).json()

    assert body["startTime"] == "2026-04-20T09:00:00.123Z"
    assert body["endTime"] is None
    assert body["durationMs"] is None
    assert body["messages"] == [
        {
            "role": "persona",
            "message": "Hello",
            "timestamp": "2026-04-20T09:00:00.543Z",
            "speakingDurationSeconds": None,
            "wasInterrupted": False,
        }
    ]


async def test_transcripts_disabled_answers_200_without_messages(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner, transcripts_enabled=False)
    session = await factory.session(
        character, turns=turns(("assistant", "secret"), ("user", "words"))
    )
    _, key = await factory.api_key(owner)

    anam = (
        await client.get(
            f"/v1/sessions/{session.session_id}/transcript", headers={"X-API-Key": key}
        )
    ).json()
    agents = (
        await client.get(
            f"/api/agents/agent-session/{session.session_id}/transcript/",
            headers={"X-API-Key": key},
        )
    ).json()["data"]

    assert (anam["transcriptsEnabled"], anam["messages"], anam["totalMessages"]) == (False, [], 0)
    assert (agents["transcript"], agents["transcript_text"], agents["turn_count"]) == ([], "", 0)


async def test_get_session(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    character, session = await anam_seed_session(factory, owner)

    response = await client.get(
        f"/v1/sessions/{session.session_id}",
        headers={"Authorization": f"Bearer {factory.token(owner.id)}"},
    )

    assert response.status_code == 200
    assert response.json() == {
        "id": str(session.session_id),
        "clientLabel": "support-widget",
        "personaId": str(character.public_id),
        "personaName": "Cara",
        "status": "COMPLETED",
        "startTime": "2026-04-20T09:00:00.000Z",
        "endTime": "2026-04-20T09:12:34.000Z",
        "durationMs": 754000,
        "createdAt": "2026-04-20T09:00:00.000Z",
        "updatedAt": response.json()["updatedAt"],
    }
    updated = datetime.fromisoformat(response.json()["updatedAt"].replace("Z", "+00:00"))
    assert abs(updated - datetime.now(UTC)) < timedelta(minutes=1)  # set by finalize


async def test_list_sessions_paginates_and_filters(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    other_character = await factory.character(owner)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    created = [
        await factory.session(
            character, started_at=base + timedelta(minutes=i), client_label=f"label-{i}"
        )
        for i in range(5)
    ]
    await factory.session(other_character, started_at=base, client_label="elsewhere")
    headers = {"X-API-Key": (await factory.api_key(owner))[1]}
    newest_first = [str(s.session_id) for s in reversed(created)]

    page2 = (
        await client.get(
            f"/v1/sessions?personaId={character.public_id}&perPage=2&page=2", headers=headers
        )
    ).json()
    assert [s["id"] for s in page2["data"]] == newest_first[2:4]
    next_cursor = page2["meta"].pop("nextCursor")
    assert page2["meta"] == {
        "total": 5,
        "lastPage": 3,
        "currentPage": 2,
        "perPage": 2,
        "prev": 1,
        "next": 3,
    }
    # The cursor leads to the same sessions as page 3, and page numbers are then unknown.
    page3 = (
        await client.get(
            f"/v1/sessions?personaId={character.public_id}&perPage=2&cursor={next_cursor}",
            headers=headers,
        )
    ).json()
    assert [s["id"] for s in page3["data"]] == newest_first[4:]
    assert page3["meta"] == {
        "total": 5,
        "lastPage": 3,
        "currentPage": None,
        "perPage": 2,
        "prev": None,
        "next": None,
        "nextCursor": None,
    }

    everything = (await client.get("/v1/sessions?perPage=100", headers=headers)).json()
    assert everything["meta"]["total"] == 6
    assert everything["meta"]["next"] is None
    assert everything["meta"]["prev"] is None

    by_label = (await client.get("/v1/sessions?search=LABEL-3", headers=headers)).json()
    assert [s["clientLabel"] for s in by_label["data"]] == ["label-3"]
    by_id = (
        await client.get(f"/v1/sessions?search={created[1].session_id}", headers=headers)
    ).json()
    assert [s["id"] for s in by_id["data"]] == [str(created[1].session_id)]
    wildcard = (await client.get("/v1/sessions?search=%25", headers=headers)).json()
    assert wildcard["meta"]["total"] == 0  # % is a character to find, not a wildcard

    empty = (await client.get(f"/v1/sessions?personaId={uuid.uuid4()}", headers=headers)).json()
    assert empty == {
        "data": [],
        "meta": {
            "total": 0,
            "lastPage": 0,
            "currentPage": 1,
            "perPage": 10,
            "prev": None,
            "next": None,
            "nextCursor": None,
        },
    }


async def test_list_leaves_out_what_is_not_the_callers(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    await factory.session(character)
    stranger = await factory.user()
    staff = await factory.user(staff=True)

    stranger_view = await client.get(
        f"/v1/sessions?personaId={character.public_id}",
        headers={"X-API-Key": (await factory.api_key(stranger))[1]},
    )
    staff_view = await client.get(
        f"/v1/sessions?personaId={character.public_id}",
        headers={"Authorization": f"Bearer {factory.token(staff.id)}"},
    )

    assert stranger_view.json()["meta"]["total"] == 0
    assert staff_view.json()["meta"]["total"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("perPage=101", "perPage"),
        ("perPage=0", "perPage"),
        ("page=0", "page"),
        ("page=x", "page"),
        ("personaId=nope", "personaId"),
    ],
)
async def test_bad_list_parameters_are_400(
    client: httpx.AsyncClient, factory: Factory, query: str, field: str
) -> None:
    _, key = await factory.api_key(await factory.user())
    response = await client.get(f"/v1/sessions?{query}", headers={"X-API-Key": key})
    assert response.status_code == 400
    body = response.json()
    assert (body["statusCode"], body["error"]) == (400, "Bad Request")
    assert body["message"].startswith(f"Invalid {field} ({field}: ")


async def test_malformed_id_is_400_in_anams_body(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, key = await factory.api_key(await factory.user())
    for path in PATHS:
        response = await client.get(path.format("not-a-uuid"), headers={"X-API-Key": key})
        assert response.status_code == 400
        assert response.json() == {
            "statusCode": 400,
            "error": "Bad Request",
            "message": "Invalid id (id: Must be a valid UUID.)",
        }


async def test_not_owned_is_the_same_404_as_missing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner))
    intruder = await factory.user(tenant=None)
    _, key = await factory.api_key(intruder)
    for path in PATHS:
        answers = [
            await client.get(
                path.format(session.session_id), headers={"X-API-Key": key, **SAME_REQUEST_ID}
            ),
            await client.get(
                path.format(session.session_id),
                headers={
                    "Authorization": f"Bearer {factory.token(intruder.id)}",
                    **SAME_REQUEST_ID,
                },
            ),
            await client.get(
                path.format(uuid.uuid4()), headers={"X-API-Key": key, **SAME_REQUEST_ID}
            ),
        ]
        for answer in answers:
            assert answer.status_code == 404
            assert answer.json() == NOT_FOUND
            assert (answer.content, answer.headers) == (answers[0].content, answers[0].headers)


async def test_unauthenticated_answers_401_in_anams_body(client: httpx.AsyncClient) -> None:
    for path in [*PATHS, "/v1/sessions"]:
        response = await client.get(path.format(uuid.uuid4()))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {
            "statusCode": 401,
            "error": "Unauthorized",
            "message": "Authentication credentials were not provided",
        }
    expired = await client.get("/v1/sessions", headers={"Authorization": "Bearer sk_" + "0" * 64})
    assert expired.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "Invalid or inactive credentials",
    }


async def test_unknown_v1_path_is_404_in_anams_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/personas")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "error": "Not Found", "message": "Not found"}


async def test_recording_missing_is_404(client: httpx.AsyncClient, factory: Factory) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner), usage=SEED_USAGE)
    _, key = await factory.api_key(owner)
    response = await client.get(
        f"/v1/sessions/{session.session_id}/recording", headers={"X-API-Key": key}
    )
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "Recording not found",
    }


async def test_recording_url_is_presigned(
    database_url: str, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    owner = await factory.user()
    session = await factory.session(
        await factory.character(owner), usage=SEED_USAGE, recording_url="s3://calls/2026/04/a b.mp4"
    )
    _, key = await factory.api_key(owner)
    settings = make_settings(
        database_url,
        recordings_backend="s3",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_region="eu-west-1",
        presign_ttl_seconds=600,
    )
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            anam = await client.get(
                f"/v1/sessions/{session.session_id}/recording", headers={"X-API-Key": key}
            )
            agents = await client.get(
                f"/api/billing/sessions/{session.session_id}/", headers={"X-API-Key": key}
            )
    url = anam.json()["recordingUrl"]
    assert url.startswith("http://127.0.0.1:9/calls/2026/04/a%20b.mp4?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Expires=600" in url
    data = agents.json()["data"]
    assert data["recording_url"] == "s3://calls/2026/04/a b.mp4"
    assert data["recording_presigned_url"].startswith("http://127.0.0.1:9/calls/2026/04/a%20b.mp4?")
    expires = datetime.fromisoformat(
        data["recording_presigned_url_expires_at"].replace("Z", "+00:00")
    )
    assert abs(expires - (datetime.now(UTC) + timedelta(seconds=600))) < timedelta(seconds=30)


async def test_both_dialects_agree(client: httpx.AsyncClient, factory: Factory) -> None:
    owner_id, session, _ = await seed_example(factory)
    headers = {"Authorization": f"Bearer {factory.token(owner_id)}"}

    agents = (
        await client.get(
            f"/api/agents/agent-session/{session.session_id}/transcript/", headers=headers
        )
    ).json()["data"]
    anam = (
        await client.get(f"/v1/sessions/{session.session_id}/transcript", headers=headers)
    ).json()

    assert [m["message"] for m in anam["messages"]] == [t["text"] for t in agents["transcript"]]
    assert [m["role"] for m in anam["messages"]] == [
        "persona" if t["role"] == "assistant" else "user" for t in agents["transcript"]
    ]
    assert anam["totalMessages"] == agents["turn_count"] == len(agents["transcript"])
    started = datetime.fromisoformat(agents["created_at"].replace("Z", "+00:00"))
    assert anam["startTime"] == started.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for message, turn in zip(anam["messages"], agents["transcript"], strict=True):
        stamp = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
        assert abs((stamp - started).total_seconds() - turn["ts"]) < 0.001
    assert anam["durationMs"] == round(agents["session_duration_seconds"] * 1000)
    interrupted = [m.get("wasInterrupted") for m in anam["messages"] if m["role"] == "persona"]
    assert sum(interrupted) == agents["interruption_count"]


async def test_client_label_given_at_start_is_anams_client_label(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner)
    headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    started = await client.post(
        "/api/agents/agent-session/",
        json={"agent": character.slug, "client_label": "kiosk-7 lobby"},
        headers=headers,
    )
    session_id = started.json()["data"]["session_id"]

    session = await client.get(f"/v1/sessions/{session_id}", headers=headers)
    found = await client.get("/v1/sessions?search=KIOSK-7", headers=headers)

    assert session.json()["clientLabel"] == "kiosk-7 lobby"
    assert session.json()["status"] == "ACTIVE"
    assert [item["id"] for item in found.json()["data"]] == [session_id]
