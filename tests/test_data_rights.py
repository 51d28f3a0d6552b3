"""Data rights through HTTP: DELETE of a session in both dialects, erasure by metadata,
the character settings that govern retention and redaction at write, and ``?redact=pii`` on
the transcript reads. After each deletion the tables are read directly: nothing of the
session is left but its tombstone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import SEED_USAGE, Factory, turns, unique
from tests.s3_servers import S3Endpoint
from tests.servers import free_port
from tests.write_path import CHARACTERS, FINALIZE, TURNS, failure, ok, owner_worker
from transcripts.db.engine import Database
from transcripts.domain import Caller, CharacterRecord, UserRecord
from transcripts.errors import NotFound
from transcripts.services import accounts, deletions, sessions
from transcripts.state import app_state

DELETE_AGENTS = "/api/agents/agent-session/{}/"
DELETE_ANAM = "/v1/sessions/{}"
ERASURE = "/api/privacy/erasure/"
USAGE = "/api/billing/usage/"
AUDIO = b"RIFF" + bytes(range(256)) * 16
ANAM_NOT_FOUND = {"statusCode": 404, "error": "Not Found", "message": "Session not found"}
ENVELOPE_NOT_FOUND = failure("Session not found.")


async def rows(database: Database, sql: str, **parameters: Any) -> list[dict[str, Any]]:
    db: AsyncSession
    async with database.sessionmaker() as db:
        result = await db.execute(text(sql), parameters)
        return [dict(row) for row in result.mappings()]


def sid(session_id: uuid.UUID, database: Database) -> str:
    """A UUID as each backend stores it (SQLite: 32 hex characters)."""
    return session_id.hex if database.backend == "sqlite" else str(session_id)


async def what_is_left(
    database: Database, session_pk: int, session_id: uuid.UUID
) -> dict[str, int]:
    """How many rows of each table still belong to the session."""
    key = sid(session_id, database)
    counts = {}
    for table, condition, value in [
        ("sessions", "id = :v", session_pk),
        ("turns", "session_pk = :v", session_pk),
        ("form_responses", "session_pk = :v", session_pk),
        ("session_tombstones", "session_id = :v", key),
        ("recording_deletions", "session_id = :v", key),
    ]:
        found = await rows(
            database, f"SELECT count(*) AS n FROM {table} WHERE {condition}", v=value
        )
        counts[table] = int(found[0]["n"])
    return counts


GONE = {
    "sessions": 0,
    "turns": 0,
    "form_responses": 0,
    "session_tombstones": 1,
    "recording_deletions": 0,
}


async def s3_client(endpoint: S3Endpoint) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
    )


async def put_object(endpoint: S3Endpoint, bucket: str, key: str) -> None:
    async with await s3_client(endpoint) as client:
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            await client.create_bucket(Bucket=bucket)
        await client.put_object(Bucket=bucket, Key=key, Body=AUDIO)


async def object_exists(endpoint: S3Endpoint, bucket: str, key: str) -> bool:
    async with await s3_client(endpoint) as client:
        listed = await client.list_objects_v2(Bucket=bucket, Prefix=key)
        return any(entry["Key"] == key for entry in listed.get("Contents", []))


async def form_response(
    database: Database, character: CharacterRecord, session_id: uuid.UUID
) -> None:
    async with database.sessionmaker.begin() as db:
        await sessions.record_form_response(
            db, character, session_id, form_id="contact", values={"email": "dana@example.com"}
        )


async def test_delete_leaves_only_the_tombstone_and_deletes_the_s3_object(
    database_url: str, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    settings = make_settings(
        database_url, recordings_backend="s3", s3_endpoint_url=moto_s3.url, s3_region="us-east-1"
    )
    bucket, key = "calls", f"deleted/{uuid.uuid4().hex}.wav"
    await put_object(moto_s3, bucket, key)
    async for app in running_app(settings):
        database = app_state(app).database
        factory = Factory(database, settings)
        owner = await factory.user()
        character = await factory.character(owner)
        session = await factory.session(
            character,
            turns=turns(("assistant", "Hello"), ("user", "Call me on 415 555 2671")),
            usage=SEED_USAGE,
            recording_url=f"s3://{bucket}/{key}",
        )
        await form_response(database, character, session.session_id)
        before = await what_is_left(database, session.id, session.session_id)
        assert before == {
            "sessions": 1,
            "turns": 2,
            "form_responses": 1,
            "session_tombstones": 0,
            "recording_deletions": 0,
        }
        _, api_key = await factory.api_key(owner)
        async with asgi_client(app) as client:
            deleted = await client.delete(
                DELETE_AGENTS.format(session.session_id), headers={"X-API-Key": api_key}
            )
            assert (deleted.status_code, deleted.content) == (204, b"")
            assert await what_is_left(database, session.id, session.session_id) == GONE
            assert not await object_exists(moto_s3, bucket, key)

            # Every read and every write of the id is now the 404 of an unknown session.
            headers = {"X-API-Key": api_key}
            read = await client.get(
                f"/api/agents/agent-session/{session.session_id}/transcript/", headers=headers
            )
            assert (read.status_code, read.json()) == (404, ENVELOPE_NOT_FOUND)
            anam = await client.get(f"/v1/sessions/{session.session_id}", headers=headers)
            assert (anam.status_code, anam.json()) == (404, ANAM_NOT_FOUND)
        await app_state(app).key_usage.drain()


async def test_delete_in_both_dialects_with_both_credentials_is_idempotent_and_scoped(
    client: httpx.AsyncClient, factory: Factory, settings: Any
) -> None:
    database = factory.database
    owner, key_worker = await owner_worker(client, factory)
    jwt_headers = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    character = await factory.character(owner)
    first = await factory.session(character, turns=turns(("user", "Hi")), usage=SEED_USAGE)
    second = await factory.session(character, turns=turns(("user", "Hi")))

    stranger = await factory.user()
    _, stranger_key = await factory.api_key(stranger)
    strange = {"X-API-Key": stranger_key}
    unknown = uuid.uuid4()

    # Not the caller's: byte for byte the answer for an id that never existed, both dialects.
    for template in (DELETE_AGENTS, DELETE_ANAM):
        not_owned = await client.delete(template.format(first.session_id), headers=strange)
        missing = await client.delete(template.format(unknown), headers=strange)
        assert not_owned.status_code == missing.status_code == 404
        assert not_owned.content == missing.content
        assert not_owned.headers == missing.headers
    assert (await what_is_left(database, first.id, first.session_id))["sessions"] == 1

    agents = await client.delete(DELETE_AGENTS.format(first.session_id), headers=key_worker.headers)
    anam = await client.delete(DELETE_ANAM.format(second.session_id), headers=jwt_headers)
    assert (agents.status_code, agents.content) == (204, b"")
    assert (anam.status_code, anam.content) == (204, b"")
    for session in (first, second):
        assert await what_is_left(database, session.id, session.session_id) == GONE

    # Again, by its owner, in either dialect and either spelling: still deleted, still 204.
    for template, headers in [
        (DELETE_AGENTS, jwt_headers),
        (DELETE_AGENTS.rstrip("/"), key_worker.headers),
        (DELETE_ANAM, key_worker.headers),
        (DELETE_ANAM + "/", jwt_headers),
    ]:
        again = await client.delete(template.format(first.session_id), headers=headers)
        assert (again.status_code, again.content) == (204, b""), template
    # By anyone else: the tombstone says nothing either.
    for template in (DELETE_AGENTS, DELETE_ANAM):
        tombstoned = await client.delete(template.format(first.session_id), headers=strange)
        missing = await client.delete(template.format(unknown), headers=strange)
        assert (tombstoned.status_code, tombstoned.content) == (
            missing.status_code,
            missing.content,
        )
    bad = await client.delete(DELETE_ANAM.format("not-a-uuid"), headers=key_worker.headers)
    assert bad.status_code == 400
    anonymous = await client.delete(DELETE_AGENTS.format(second.session_id))
    assert anonymous.status_code == 401


async def test_late_writes_to_a_deleted_session_are_404_and_recreate_nothing(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    database = factory.database
    owner, worker = await owner_worker(client, factory)
    slug = await worker.character()
    session_id = await worker.start(slug, metadata={"user_id": "u_1"})
    assert (
        await worker.turns(session_id, [{"turn_index": 0, "role": "user", "text": "Hi", "ts": 0.5}])
    ).status_code == 200
    pk = (
        await rows(
            database,
            "SELECT id FROM sessions WHERE session_id = :s",
            s=sid(uuid.UUID(session_id), database),
        )
    )[0]["id"]
    deleted = await client.delete(DELETE_AGENTS.format(session_id), headers=worker.headers)
    assert deleted.status_code == 204

    late_turn = [{"turn_index": 1, "role": "assistant", "text": "Still there?", "ts": 3.0}]
    appended = await client.post(TURNS.format(session_id), json=late_turn, headers=worker.headers)
    assert (appended.status_code, appended.json()) == (404, ENVELOPE_NOT_FOUND)
    finalized = await client.post(FINALIZE.format(session_id), json={}, headers=worker.headers)
    assert (finalized.status_code, finalized.json()) == (404, ENVELOPE_NOT_FOUND)
    form = await client.post(
        f"/api/agents/{slug}/form-responses/",
        json={"session_id": session_id, "form_id": "contact", "values": {"name": "Dana"}},
        headers=worker.headers,
    )
    assert form.status_code == 404
    async with database.sessionmaker.begin() as db:
        character = await _character(db, owner, slug)
        with pytest.raises(NotFound):
            await sessions.start_session(
                db, character, user_id=None, session_id=uuid.UUID(session_id)
            )
    assert await what_is_left(database, pk, uuid.UUID(session_id)) == GONE
    assert await rows(
        database,
        "SELECT count(*) AS n FROM sessions WHERE session_id = :s",
        s=sid(uuid.UUID(session_id), database),
    ) == [{"n": 0}]


async def _character(db: AsyncSession, owner: UserRecord, slug: str) -> CharacterRecord:
    caller = Caller(user_id=owner.id, is_staff=False, tenant_id=owner.tenant_id)
    return await accounts.character_open_to(db, slug, caller=caller, origin=None, field="agent")


def _totals(data: dict[str, Any]) -> dict[str, Any]:
    return {name: data[name] for name in data if name.startswith("total")}


async def test_totals_and_rollups_are_corrected_by_a_delete(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    database = factory.database
    owner, worker = await owner_worker(client, factory)
    character = await factory.character(owner)
    # Old enough that Session History reads whole days from the rollups.
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    kept = await factory.session(character, usage=SEED_USAGE, started_at=started)
    doomed = await factory.session(
        character, usage=SEED_USAGE, started_at=started + timedelta(minutes=5)
    )
    unfinished = await factory.session(character, started_at=started + timedelta(minutes=9))

    before = (await client.get(USAGE, headers=worker.headers)).json()["data"]
    assert before["total_sessions"] == 3
    for session in (doomed, unfinished):
        response = await client.delete(
            DELETE_AGENTS.format(session.session_id), headers=worker.headers
        )
        assert response.status_code == 204
    after = (await client.get(USAGE, headers=worker.headers)).json()["data"]
    alone = await rows(database, "SELECT id FROM sessions WHERE character_id = :c", c=character.id)
    assert alone == [{"id": kept.id}]
    assert after["total_sessions"] == 1
    assert after["total_llm_input_tokens"] == SEED_USAGE.llm_input_tokens
    assert after["total_tts_characters"] == SEED_USAGE.tts_characters
    assert float(after["total_estimated_cost_usd"]) * 2 == pytest.approx(
        float(before["total_estimated_cost_usd"])
    )
    rollup = await rows(
        database,
        "SELECT sessions, llm_input_tokens, tts_characters FROM usage_by_character_day"
        " WHERE character_id = :c",
        c=character.id,
    )
    assert [tuple(int(value) for value in row.values()) for row in rollup] == [
        (1, SEED_USAGE.llm_input_tokens, SEED_USAGE.tts_characters)
    ]
    staff = await factory.user(staff=True)
    _, staff_key = await factory.api_key(staff)
    day = started.date().isoformat()
    everyone = await client.get(
        USAGE,
        params={
            "start": f"{day}T00:00:00Z",
            "end": f"{day}T23:59:59.999999Z",
            "character_slug": character.slug,
        },
        headers={"X-API-Key": staff_key},
    )
    assert everyone.json()["data"]["total_sessions"] == 1


async def test_a_recording_the_store_refuses_to_delete_is_retried_until_it_is_gone(
    database_url: str, moto_s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.secret_key)
    bucket, key = "calls", f"retry/{uuid.uuid4().hex}.wav"
    await put_object(moto_s3, bucket, key)
    # First an S3 endpoint where nothing listens: the deletion fails, the session is gone.
    unreachable = make_settings(
        database_url,
        recordings_backend="s3",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_region="us-east-1",
    )
    async for app in running_app(unreachable):
        database = app_state(app).database
        factory = Factory(database, unreachable)
        owner = await factory.user()
        session = await factory.session(
            await factory.character(owner), usage=SEED_USAGE, recording_url=f"s3://{bucket}/{key}"
        )
        _, api_key = await factory.api_key(owner)
        async with asgi_client(app) as client:
            response = await client.delete(
                DELETE_ANAM.format(session.session_id), headers={"X-API-Key": api_key}
            )
            assert response.status_code == 204
        await app_state(app).key_usage.drain()
        left = await what_is_left(database, session.id, session.session_id)
        assert left == GONE | {"recording_deletions": 1}
        pending = await rows(
            database,
            "SELECT recording_url, attempts, last_error FROM recording_deletions WHERE session_id = :s",
            s=sid(session.session_id, database),
        )
        assert [(row["recording_url"], row["attempts"]) for row in pending] == [
            (f"s3://{bucket}/{key}", 1)
        ]
        assert pending[0]["last_error"].startswith("EndpointConnectionError")
        assert await object_exists(moto_s3, bucket, key)

    # The store is back; the retry is due (its time moved up, as if the delay had passed).
    reachable = make_settings(
        database_url, recordings_backend="s3", s3_endpoint_url=moto_s3.url, s3_region="us-east-1"
    )
    async for app in running_app(reachable):
        database = app_state(app).database
        async with database.sessionmaker.begin() as db:
            await db.execute(
                text("UPDATE recording_deletions SET next_attempt_at = :t WHERE session_id = :s"),
                {
                    "t": datetime.now(UTC) - timedelta(seconds=1),
                    "s": sid(session.session_id, database),
                },
            )
        await app_state(app).recording_deletions.run()
        assert await what_is_left(database, session.id, session.session_id) == GONE
        assert not await object_exists(moto_s3, bucket, key)


async def test_delete_removes_the_local_file(
    client: httpx.AsyncClient, factory: Factory, settings: Any
) -> None:
    from pathlib import Path

    owner, worker = await owner_worker(client, factory, jwt_auth=True)
    name = f"local/{uuid.uuid4().hex}.wav"
    path = Path(settings.recordings_dir) / "calls" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(AUDIO)
    session = await factory.session(
        await factory.character(owner), usage=SEED_USAGE, recording_url=f"s3://calls/{name}"
    )
    response = await client.delete(DELETE_ANAM.format(session.session_id), headers=worker.headers)
    assert response.status_code == 204
    assert not path.exists()
    assert await what_is_left(factory.database, session.id, session.session_id) == GONE


async def _sessions_of(
    factory: Factory, character: CharacterRecord, metadatas: list[dict[str, Any]]
) -> list[uuid.UUID]:
    made = []
    for metadata in metadatas:
        made.append(
            (
                await factory.session(character, metadata=metadata, turns=turns(("user", "x")))
            ).session_id
        )
    return made


async def test_erasure_deletes_the_callers_sessions_holding_the_pair_and_answers_a_receipt(
    client: httpx.AsyncClient, factory: Factory, settings: Any
) -> None:
    from pathlib import Path

    database = factory.database
    owner, worker = await owner_worker(client, factory)
    character = await factory.character(owner)
    person = unique("u")
    matching = await _sessions_of(
        factory, character, [{"user_id": person, "plan": "pro"}, {"user_id": person}]
    )
    name = f"erased/{uuid.uuid4().hex}.wav"
    recording = Path(settings.recordings_dir) / "calls" / name
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_bytes(AUDIO)
    recorded = await factory.session(
        character,
        metadata={"user_id": person},
        usage=SEED_USAGE,
        recording_url=f"s3://calls/{name}",
    )
    matching.append(recorded.session_id)
    # Look-alikes that stay: another person, the value as a number, the value under another key.
    kept = await _sessions_of(
        factory, character, [{"user_id": person + "0"}, {"caller": person}, {}]
    )
    numeric = await _sessions_of(factory, character, [{"user_id": 42}])
    stranger = await factory.user()
    strangers = await _sessions_of(
        factory, await factory.character(stranger), [{"user_id": person}]
    )

    response = await client.post(
        ERASURE, json={"metadata": {"user_id": person}}, headers=worker.headers
    )
    assert response.status_code == 200, response.text
    receipt = response.json()["data"]
    completed_at = datetime.fromisoformat(receipt["completed_at"].replace("Z", "+00:00"))
    assert abs(completed_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert response.json() == ok(
        {"erased_sessions": 3, "erased_recordings": 1, "completed_at": receipt["completed_at"]}
    )
    assert not recording.exists()
    left = {
        uuid.UUID(str(row["session_id"]))
        if database.backend == "postgresql"
        else uuid.UUID(hex=row["session_id"])
        for row in await rows(
            database, "SELECT session_id FROM sessions WHERE character_id = :c", c=character.id
        )
    }
    assert left == set(kept + numeric)
    tombstones = await rows(
        database, "SELECT count(*) AS n FROM session_tombstones WHERE owner_id = :o", o=owner.id
    )
    assert tombstones == [{"n": 3}]
    # The stranger's session with the same pair is not the caller's to erase.
    assert (
        len(
            await rows(
                database,
                "SELECT id FROM sessions WHERE session_id = :s",
                s=sid(strangers[0], database),
            )
        )
        == 1
    )

    # A number matches a number, with a JWT too; a second run finds nothing more.
    jwt = {"Authorization": f"Bearer {factory.token(owner.id)}"}
    by_number = await client.post(ERASURE, json={"metadata": {"user_id": 42}}, headers=jwt)
    assert by_number.json()["data"]["erased_sessions"] == 1
    again = await client.post(ERASURE, json={"metadata": {"user_id": person}}, headers=jwt)
    assert again.json()["data"]["erased_sessions"] == 0
    assert matching  # every one of them is gone (checked above)


async def test_erasure_refuses_what_it_cannot_match(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    cases = [
        ({"metadata": {}}, "metadata"),
        ({"metadata": {"user_id": 1.5}}, "metadata.user_id"),
        ({"metadata": {"user_id": None}}, "metadata.user_id"),
        ({"metadata": {"user_id": "u"}, "extra": 1}, "extra"),
        ({}, "metadata"),
    ]
    for body, field in cases:
        response = await client.post(ERASURE, json=body, headers=worker.headers)
        assert response.status_code == 400, body
        assert response.json()["success"] is False
        assert any(name.startswith(field) for name in response.json()["errors"]), response.json()
    huge = await client.post(ERASURE, json={"metadata": {"n": 2**64}}, headers=worker.headers)
    assert (huge.status_code, huge.json()["errors"]) == (
        400,
        {"metadata.n": ["Integers must be between -9223372036854775808 and 9223372036854775807."]},
    )
    quoted = await client.post(ERASURE, json={"metadata": {'a"b': "x"}}, headers=worker.headers)
    assert (quoted.status_code, quoted.json()["errors"]["metadata"][0]) == (
        400,
        "Key 'a\"b' is not a plain key of at most 200 characters.",
    )
    anonymous = await client.post(ERASURE, json={"metadata": {"user_id": "u"}})
    assert anonymous.status_code == 401


async def test_erasure_runs_in_windows_and_an_interrupted_one_resumes(
    app: Any, factory: Factory
) -> None:
    database = factory.database
    owner = await factory.user()
    character = await factory.character(owner)
    person = unique("u")
    await _sessions_of(factory, character, [{"user_id": person}] * 7)
    caller = Caller(user_id=owner.id, is_staff=False, tenant_id=owner.tenant_id)

    class Interrupted(Exception):
        pass

    calls = 0
    real = deletions.delete_sessions

    async def interrupted_after_two_batches(db: Any, batch: Any, *, now: datetime) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Interrupted
        await real(db, batch, now=now)

    recordings = app_state(app).recording_deletions
    deletions.delete_sessions = interrupted_after_two_batches  # type: ignore[assignment]
    try:
        with pytest.raises(Interrupted):
            await deletions.erase_by_metadata(
                database, recordings, caller, {"user_id": person}, window=2
            )
    finally:
        deletions.delete_sessions = real  # type: ignore[assignment]
    remaining = await rows(
        database, "SELECT count(*) AS n FROM sessions WHERE character_id = :c", c=character.id
    )
    assert remaining == [{"n": 3}], "the two batches before the interruption were committed"
    receipt = await deletions.erase_by_metadata(
        database, recordings, caller, {"user_id": person}, window=2
    )
    assert receipt.sessions == 3
    assert await rows(
        database, "SELECT count(*) AS n FROM sessions WHERE character_id = :c", c=character.id
    ) == [{"n": 0}]
    assert await rows(
        database,
        "SELECT sessions FROM usage_by_character_day WHERE character_id = :c",
        c=character.id,
    ) == [{"sessions": 0}]


async def test_patch_changes_retention_and_redaction_settings(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character(allowed_origins=["https://a.example"])
    path = f"{CHARACTERS}{slug}/"
    changed = await client.patch(
        path,
        json={
            "name": "Kept a week",
            "allowed_origins": ["https://b.example"],
            "is_active": True,
            "retention_days": 7,
            "pii_redaction": "store",
        },
        headers=worker.headers,
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data == {
        "slug": slug,
        "name": "Kept a week",
        "allowed_origins": ["https://b.example"],
        "is_active": True,
        "transcripts_enabled": True,
        "retention_days": 7,
        "pii_redaction": "store",
        "created_at": data["created_at"],
    }
    back = await client.patch(
        path, json={"retention_days": None, "pii_redaction": "none"}, headers=worker.headers
    )
    assert (back.json()["data"]["retention_days"], back.json()["data"]["pii_redaction"]) == (
        None,
        "none",
    )
    for body, field in [
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": "7"}, "retention_days"),
        ({"pii_redaction": "hash"}, "pii_redaction"),
        ({"pii_redaction": None}, "pii_redaction"),
    ]:
        refused = await client.patch(path, json=body, headers=worker.headers)
        assert refused.status_code == 400, body
        assert list(refused.json()["errors"]) == [field]


SPOKEN = "Sure, my number is five five five, one two three four and my email is dana@northwind.com"
REDACTED = "Sure, my number is [PHONE] and my email is [EMAIL]"


async def test_pii_redaction_store_keeps_raw_text_out_of_the_database(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    database = factory.database
    _, worker = await owner_worker(client, factory)
    slug = await worker.character()
    session_id = await worker.start(slug)
    # Switched on mid-session: the next append is redacted.
    before = [
        {"turn_index": 0, "role": "assistant", "text": "Card 4111 1111 1111 1111?", "ts": 0.5}
    ]
    assert (await worker.turns(session_id, before)).status_code == 200
    patched = await client.patch(
        f"{CHARACTERS}{slug}/", json={"pii_redaction": "store"}, headers=worker.headers
    )
    assert patched.status_code == 200
    batch = [
        {"turn_index": 1, "role": "user", "text": SPOKEN, "ts": 2.0},
        {"turn_index": 2, "role": "user", "text": "Call 415-555-2671 at 5pm", "ts": 4.0},
    ]
    appended = await worker.turns(session_id, batch)
    assert appended.json()["data"]["inserted"] == 2
    # A retry of the same raw batch is the same batch: nothing new, no conflict.
    retried = await worker.turns(session_id, batch)
    assert (retried.status_code, retried.json()["data"]["inserted"]) == (200, 0)
    stored = await rows(
        database,
        "SELECT t.turn_index, t.text FROM turns t JOIN sessions s ON s.id = t.session_pk"
        " WHERE s.session_id = :s ORDER BY t.turn_index",
        s=sid(uuid.UUID(session_id), database),
    )
    assert stored == [
        {"turn_index": 0, "text": "Card 4111 1111 1111 1111?"},  # stored before the switch
        {"turn_index": 1, "text": REDACTED},
        {"turn_index": 2, "text": "Call [PHONE] at 5pm"},
    ]
    counted = await rows(
        database,
        "SELECT text_bytes FROM sessions WHERE session_id = :s",
        s=sid(uuid.UUID(session_id), database),
    )
    assert counted == [{"text_bytes": sum(len(row["text"].encode()) for row in stored)}]


async def test_redact_pii_on_the_transcript_read_in_both_dialects(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    _, api_key = await factory.api_key(owner)
    session = await factory.session(
        await factory.character(owner),
        turns=turns(
            ("assistant", "How can I reach you?"),
            ("user", SPOKEN),
            ("user", "Order 123456789 ships at 10:30 for $19.99"),
        ),
    )
    raw_texts = ["How can I reach you?", SPOKEN, "Order 123456789 ships at 10:30 for $19.99"]
    redacted_texts = ["How can I reach you?", REDACTED, raw_texts[2]]
    for headers in ({"X-API-Key": api_key}, {"Authorization": f"Bearer {factory.token(owner.id)}"}):
        for path in (
            f"/api/agents/agent-session/{session.session_id}/transcript/",
            f"/api/billing/sessions/{session.session_id}",
        ):
            raw = (await client.get(path, headers=headers)).json()["data"]
            assert [item["text"] for item in raw["transcript"]] == raw_texts
            redacted = await client.get(path, params={"redact": "pii"}, headers=headers)
            assert redacted.status_code == 200
            data = redacted.json()["data"]
            assert [item["text"] for item in data["transcript"]] == redacted_texts
            assert data["transcript_text"] == "\n".join(
                [f"Assistant: {redacted_texts[0]}", f"User: {REDACTED}", f"User: {raw_texts[2]}"]
            )
            assert data | {"transcript": None, "transcript_text": None} == raw | {
                "transcript": None,
                "transcript_text": None,
            }
        history = await client.get(USAGE, params={"redact": "pii"}, headers=headers)
        [listed] = history.json()["data"]["sessions"]
        assert [item["text"] for item in listed["transcript"]] == redacted_texts
        assert listed["transcript_text"] == data["transcript_text"]
        raw_history = await client.get(USAGE, headers=headers)
        assert raw_history.json()["data"]["sessions"][0]["transcript"] == raw["transcript"]
        refused = await client.get(USAGE, params={"redact": "PII"}, headers=headers)
        assert (refused.status_code, refused.json()) == (
            400,
            failure("Invalid redact.", {"redact": ["Must be pii."]}),
        )
        anam_path = f"/v1/sessions/{session.session_id}/transcript"
        anam = await client.get(anam_path, params={"redact": "pii"}, headers=headers)
        assert [message["message"] for message in anam.json()["messages"]] == redacted_texts
        anam_raw = await client.get(anam_path, headers=headers)
        assert [message["message"] for message in anam_raw.json()["messages"]] == raw_texts

        refused = await client.get(anam_path, params={"redact": "all"}, headers=headers)
        assert (refused.status_code, refused.json()) == (
            400,
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "Invalid redact (redact: Must be pii.)",
            },
        )
        refused = await client.get(
            f"/api/agents/agent-session/{session.session_id}/transcript/?redact=pii&redact=none",
            headers=headers,
        )
        assert (refused.status_code, refused.json()) == (
            400,
            failure("Invalid redact.", {"redact": ["Must be pii."]}),
        )


async def test_purge_service_deletes_each_expired_session_once_and_lists_in_a_dry_run(
    app: Any, factory: Factory
) -> None:
    database = factory.database
    owner = await factory.user()
    week = await factory.character(owner, retention_days=7)
    default = await factory.character(owner)
    now = datetime.now(UTC)
    old = await factory.session(week, started_at=now - timedelta(days=8), usage=SEED_USAGE)
    young = await factory.session(week, started_at=now - timedelta(days=6))
    ancient = await factory.session(default, started_at=now - timedelta(days=400))

    listed = [
        expired.session_id
        async for expired in deletions.expired_sessions(database, default_days=None)
        if expired.character_slug in {week.slug, default.slug}
    ]
    assert listed == [old.session_id]
    listed_with_default = {
        expired.session_id
        async for expired in deletions.expired_sessions(database, default_days=365)
        if expired.character_slug in {week.slug, default.slug}
    }
    assert listed_with_default == {old.session_id, ancient.session_id}
    # The dry runs changed nothing.
    assert (await what_is_left(database, old.id, old.session_id))["sessions"] == 1

    recordings = app_state(app).recording_deletions
    await deletions.purge_expired(database, recordings, default_days=None)
    assert await what_is_left(database, old.id, old.session_id) == GONE
    for session in (young, ancient):
        assert (await what_is_left(database, session.id, session.session_id))["sessions"] == 1


async def test_a_delete_racing_appends_and_finalize_leaves_only_the_tombstone(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    database = factory.database
    owner, worker = await owner_worker(client, factory)
    slug = await worker.character()
    session_id = await worker.start(slug)
    key = sid(uuid.UUID(session_id), database)
    pk = (await rows(database, "SELECT id FROM sessions WHERE session_id = :s", s=key))[0]["id"]

    def batch(index: int) -> list[dict[str, Any]]:
        return [{"turn_index": index, "role": "user", "text": f"Turn {index}", "ts": float(index)}]

    answers = await asyncio.gather(
        *(worker.turns(session_id, batch(index)) for index in range(6)),
        client.delete(DELETE_AGENTS.format(session_id), headers=worker.headers),
        *(worker.turns(session_id, batch(index)) for index in range(6, 12)),
        worker.finalize(session_id, **{"llm_input_tokens": 10}),
    )
    deleted = answers[6]
    assert deleted.status_code == 204
    # Each write ran wholly before the deletion (200, or 409 for an append the finalize had
    # already closed) or found the session gone (404): nothing in between, no failure.
    assert {answer.status_code for answer in answers[:6] + answers[7:]} <= {200, 404, 409}
    assert await what_is_left(database, pk, uuid.UUID(session_id)) == GONE
    assert await rows(
        database,
        "SELECT sessions, llm_input_tokens FROM usage_by_character_day WHERE owner_id = :o",
        o=owner.id,
    ) == [{"sessions": 0, "llm_input_tokens": 0}]


async def test_staff_delete_any_session_and_again(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    owner = await factory.user()
    session = await factory.session(await factory.character(owner), turns=turns(("user", "Hi")))
    staff = await factory.user(staff=True)
    _, staff_key = await factory.api_key(staff)
    headers = {"X-API-Key": staff_key}
    for _ in range(2):
        response = await client.delete(DELETE_ANAM.format(session.session_id), headers=headers)
        assert (response.status_code, response.content) == (204, b"")
    assert await what_is_left(factory.database, session.id, session.session_id) == GONE
    # The owner, who did not delete it, is answered as its owner: it is deleted.
    _, owner_key = await factory.api_key(owner)
    mine = await client.delete(
        DELETE_AGENTS.format(session.session_id), headers={"X-API-Key": owner_key}
    )
    assert mine.status_code == 204
