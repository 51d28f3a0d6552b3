"""Webhooks (DESIGN.md, "Webhooks"): the endpoint API, the outbox, signed deliveries to a
real receiver on loopback, retries, replay, disabling, SSRF refusals and the metrics.

Each test that delivers runs an app of its own on a database of its own (both backends):
its deliverer is the only one that sees its endpoints.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from tests.conftest import asgi_client, make_settings, migrate, running_app
from tests.factories import Factory
from tests.webhook_receiver import receiver
from tests.write_path import FINALIZE, TRANSCRIPT, Worker, failure, ok, seed_turn
from transcripts.db.tables import WebhookEvent
from transcripts.dialects.agents.mapper import webhook_summary
from transcripts.domain import UserRecord, WebhookAttempt
from transcripts.services import sessions, webhooks
from transcripts.settings import Settings
from transcripts.state import app_state
from transcripts.webhook_targets import is_public

ENDPOINTS = "/api/webhooks/endpoints/"
ENDPOINT = "/api/webhooks/endpoints/{}/"
DELIVERIES = "/api/webhooks/endpoints/{}/deliveries/"
REPLAY = "/api/webhooks/deliveries/{}/replay/"
ALL_EVENTS = ["session.started", "turns.appended", "session.finalized", "session.deleted"]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@dataclass
class Env:
    client: httpx.AsyncClient
    factory: Factory
    settings: Settings


async def _env(url: str, **overrides: Any) -> AsyncIterator[Env]:
    values: dict[str, Any] = {
        "webhook_allow_private_targets": True,
        "webhook_retry_schedule": "0.2,0.2,0.2",
        "webhook_poll_interval_seconds": 0.2,
        "webhook_deliverer_enabled": True,
        **overrides,
    }
    settings = make_settings(url, **values)
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            yield Env(client, Factory(app_state(app).database, settings), settings)
        await app_state(app).key_usage.drain()


@pytest.fixture
async def env(empty_database: str) -> AsyncIterator[Env]:
    async for running in _env(migrate(empty_database)):
        yield running


async def _user(env: Env, *, jwt_auth: bool = False) -> tuple[UserRecord, dict[str, str]]:
    user = await env.factory.user()
    if jwt_auth:
        return user, {"Authorization": f"Bearer {env.factory.token(user.id)}"}
    _, key = await env.factory.api_key(user)
    return user, {"X-API-Key": key}


async def _create(
    env: Env, headers: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = await env.client.post(
        ENDPOINTS, json={"url": url, "events": events or ALL_EVENTS}, headers=headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def _deliveries(env: Env, headers: dict[str, str], endpoint_id: int) -> list[Any]:
    response = await env.client.get(DELIVERIES.format(endpoint_id), headers=headers)
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["data"]
    return found


async def _until(condition: Any, within: float = 30.0) -> None:
    """Poll without blocking the app's loop (its deliverer runs on it); a hang detector."""
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"not so within {within} s"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("jwt_auth", [False, True], ids=["api-key", "jwt"])
async def test_endpoint_api_create_list_change_rotate_delete(env: Env, jwt_auth: bool) -> None:
    _, headers = await _user(env, jwt_auth=jwt_auth)
    with receiver() as hook:
        created = await env.client.post(
            ENDPOINTS,
            json={"url": hook.url, "events": ["session.finalized"], "description": "CRM"},
            headers=headers,
        )
        assert created.status_code == 201
        data = created.json()["data"]
        secret = data.pop("secret")
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
        Webhook(secret)  # the library takes it as it is
        assert ISO_Z.match(data.pop("created_at"))
        endpoint_id = data.pop("id")
        assert data == {
            "url": hook.url,
            "events": ["session.finalized"],
            "description": "CRM",
            "is_active": True,
            "failing_since": None,
        }

        listed = await env.client.get(ENDPOINTS, headers=headers)
        assert listed.status_code == 200
        (entry,) = listed.json()["data"]
        assert "secret" not in entry
        assert entry["id"] == endpoint_id

        changed = await env.client.patch(
            ENDPOINT.format(endpoint_id),
            json={"events": ["session.started", "session.finalized"], "description": None},
            headers=headers,
        )
        assert changed.status_code == 200
        assert changed.json()["data"]["events"] == ["session.started", "session.finalized"]
        assert changed.json()["data"]["description"] is None
        assert "secret" not in changed.json()["data"]

        rotated = await env.client.post(
            ENDPOINT.format(endpoint_id) + "rotate-secret/", headers=headers
        )
        assert rotated.status_code == 200
        assert rotated.json()["data"]["secret"].startswith("whsec_")
        assert rotated.json()["data"]["secret"] != secret

        # The test event is signed with the new secret.
        hook.secrets = [rotated.json()["data"]["secret"]]
        tested = await env.client.post(ENDPOINT.format(endpoint_id) + "test/", headers=headers)
        assert tested.status_code == 202
        assert tested.json()["data"]["event_type"] == "webhook.test"
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
        assert hook.deliveries[0].payload["type"] == "webhook.test"
        assert hook.rejected == []

        deleted = await env.client.delete(ENDPOINT.format(endpoint_id), headers=headers)
        assert deleted.status_code == 204
        assert deleted.content == b""
        gone = await env.client.get(DELIVERIES.format(endpoint_id), headers=headers)
        assert gone.status_code == 404
        assert gone.json() == failure("Webhook endpoint not found.")
        assert (await env.client.get(ENDPOINTS, headers=headers)).json() == ok([])


async def test_bodies_are_parsed_strictly(env: Env) -> None:
    _, headers = await _user(env)
    unknown = await env.client.post(
        ENDPOINTS,
        json={"url": "http://127.0.0.1:9/x", "events": ALL_EVENTS, "secret": "mine"},
        headers=headers,
    )
    assert unknown.status_code == 400
    assert unknown.json()["success"] is False
    assert "secret" in unknown.json()["errors"]
    bad_event = await env.client.post(
        ENDPOINTS, json={"url": "http://127.0.0.1:9/x", "events": ["call.ended"]}, headers=headers
    )
    assert bad_event.status_code == 400
    no_events = await env.client.post(
        ENDPOINTS, json={"url": "http://127.0.0.1:9/x", "events": []}, headers=headers
    )
    assert no_events.status_code == 400
    endpoint = await _create(env, headers, "http://127.0.0.1:9/x")
    empty = await env.client.patch(ENDPOINT.format(endpoint["id"]), json={}, headers=headers)
    assert empty.status_code == 400
    assert empty.json() == failure(
        "Invalid body.", {"body": ["Give at least one field to change."]}
    )
    null = await env.client.patch(
        ENDPOINT.format(endpoint["id"]), json={"is_active": None}, headers=headers
    )
    assert null.json() == failure("Invalid is_active.", {"is_active": ["Must not be null."]})


async def test_not_owned_endpoints_and_deliveries_are_not_found(env: Env) -> None:
    owner, owner_headers = await _user(env)
    _, other_headers = await _user(env, jwt_auth=True)
    endpoint = await _create(env, owner_headers, "http://127.0.0.1:9/x")
    tested = await env.client.post(ENDPOINT.format(endpoint["id"]) + "test/", headers=owner_headers)
    delivery_id = tested.json()["data"]["id"]
    unknown_endpoint = 2**62
    calls = [
        ("GET", DELIVERIES),
        ("PATCH", ENDPOINT),
        ("DELETE", ENDPOINT),
        ("POST", ENDPOINT + "rotate-secret/"),
        ("POST", ENDPOINT + "test/"),
    ]
    for method, path in calls:
        body = {"is_active": False} if method == "PATCH" else None
        theirs = await env.client.request(
            method, path.format(endpoint["id"]), json=body, headers=other_headers
        )
        missing = await env.client.request(
            method, path.format(unknown_endpoint), json=body, headers=other_headers
        )
        assert theirs.status_code == 404, (method, path)
        assert theirs.content == missing.content
        assert theirs.headers == missing.headers
    theirs = await env.client.post(REPLAY.format(delivery_id), headers=other_headers)
    missing = await env.client.post(REPLAY.format(2**62), headers=other_headers)
    assert theirs.status_code == 404
    assert theirs.content == missing.content
    assert theirs.json() == failure("Webhook delivery not found.")
    # Nothing changed for the owner.
    listed = await env.client.get(ENDPOINTS, headers=owner_headers)
    assert [entry["is_active"] for entry in listed.json()["data"]] == [True]
    assert (await env.client.get(ENDPOINTS, headers=other_headers)).json() == ok([])
    assert owner.id


async def test_session_events_are_signed_and_finalized_carries_the_read(env: Env) -> None:
    owner, headers = await _user(env)
    _, stranger_headers = await _user(env)
    with receiver() as hook, receiver() as stranger_hook:
        endpoint = await _create(env, headers, hook.url)
        hook.secrets = [endpoint["secret"]]
        stranger = await _create(env, stranger_headers, stranger_hook.url)
        stranger_hook.secrets = [stranger["secret"]]
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        appended = await worker.turns(session_id, [seed_turn(0), seed_turn(1)])
        assert appended.status_code == 200
        finalized = await worker.finalize(session_id, llm_input_tokens=10)
        assert finalized.status_code == 200
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 3)

        types = sorted(delivery.payload["type"] for delivery in hook.deliveries)
        assert types == ["session.finalized", "session.started", "turns.appended"]
        assert hook.rejected == []
        (started,) = hook.of_type("session.started")
        assert started.payload["data"]["session_id"] == session_id
        (turns,) = hook.of_type("turns.appended")
        assert [turn["turn_index"] for turn in turns.payload["data"]["turns"]] == [0, 1]
        assert turns.payload["data"]["turn_count"] == 2
        (final,) = hook.of_type("session.finalized")
        assert set(final.payload) == {"type", "timestamp", "data"}
        assert ISO_Z.match(final.payload["timestamp"])
        assert final.headers["webhook-id"].startswith("msg_")
        assert final.headers["webhook-signature"].startswith("v1,")
        read = await worker.read(session_id)
        assert final.payload["data"] == read
        assert final.payload["data"]["transcript"][1]["text"] == seed_turn(1)["text"]
        # A session the stranger cannot read never reaches the stranger's endpoint.
        await asyncio.sleep(0.5)
        assert stranger_hook.requests == 0

        logged = await _deliveries(env, headers, endpoint["id"])
        assert [entry["status"] for entry in logged] == ["succeeded"] * 3
        assert all(entry["attempt_log"][0]["response_code"] == 200 for entry in logged)

        # A repeated finalize answers the stored result and sends nothing more.
        again = await worker.finalize(session_id)
        assert again.status_code == 200
        await asyncio.sleep(0.5)
        assert len(hook.deliveries) == 3
    assert owner.id


async def test_finalized_is_rendered_once_when_first_claimed_and_sent_alike_to_all(
    empty_database: str,
) -> None:
    """The finalize writes session.finalized without its body; the deliverer that first
    claims it renders the session as the read answers it, once: an owner's and a staff
    endpoint receive the same bytes, each signed with its own secret."""
    url = migrate(empty_database)
    with receiver() as owner_hook, receiver() as staff_hook:
        async for quiet in _env(url, webhook_deliverer_enabled=False):
            _, headers = await _user(quiet)
            staff = await quiet.factory.user(staff=True)
            _, staff_key = await quiet.factory.api_key(staff)
            staff_headers = {"X-API-Key": staff_key}
            owned = await _create(quiet, headers, owner_hook.url, ["session.finalized"])
            owner_hook.secrets = [owned["secret"]]
            watched = await _create(quiet, staff_headers, staff_hook.url, ["session.finalized"])
            staff_hook.secrets = [watched["secret"]]
            worker = Worker(quiet.client, headers)
            session_id = await worker.start(await worker.character())
            await worker.turns(session_id, [seed_turn(0), seed_turn(1)])
            assert (await worker.finalize(session_id, llm_input_tokens=7)).status_code == 200
            read = await worker.read(session_id)
            (waiting,) = await _deliveries(quiet, headers, owned["id"])
            assert waiting["status"] == "pending"
            async with quiet.factory.database.sessionmaker() as db:
                stored = await db.scalar(
                    select(WebhookEvent.payload).where(WebhookEvent.id == waiting["event_id"])
                )
            assert stored is None  # nothing of the summary written in the finalize's transaction
        async for _ in _env(url):
            await asyncio.to_thread(owner_hook.wait_for, lambda: len(owner_hook.deliveries) == 1)
            await asyncio.to_thread(staff_hook.wait_for, lambda: len(staff_hook.deliveries) == 1)
    (to_owner,), (to_staff,) = owner_hook.deliveries, staff_hook.deliveries
    assert owner_hook.rejected == staff_hook.rejected == []
    assert to_owner.body == to_staff.body
    assert to_owner.webhook_id == to_staff.webhook_id == waiting["event_id"]
    assert to_owner.payload["type"] == "session.finalized"
    assert to_owner.payload["data"] == read
    assert read["llm_input_tokens"] == 7
    assert [turn["text"] for turn in read["transcript"]] == [
        seed_turn(0)["text"],
        seed_turn(1)["text"],
    ]


async def test_two_deliverers_rendering_one_event_both_send_the_body_stored_first(
    empty_database: str,
) -> None:
    """Two deliverers each claim one of the two deliveries of one session.finalized, then
    render it at once: the second's store waits on the first's (the event row's lock on
    PostgreSQL, the write lock on SQLite), finds the body there, and sends it, so every
    endpoint, and every retry, gets the same bytes under the same webhook-id."""
    async for env in _env(migrate(empty_database), webhook_deliverer_enabled=False):
        _, headers = await _user(env)
        staff = await env.factory.user(staff=True)
        _, staff_key = await env.factory.api_key(staff)
        await _create(env, headers, "http://127.0.0.1:9/o", ["session.finalized"])
        await _create(env, {"X-API-Key": staff_key}, "http://127.0.0.1:9/s", ["session.finalized"])
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        await worker.finalize(session_id)
        sessionmaker = env.factory.database.sessionmaker
        claimed = []
        for _ in range(2):
            async with sessionmaker.begin() as db:
                claimed += await webhooks.claim_due(db, limit=1, timeout_seconds=10)
        assert [claim.payload for claim in claimed] == [None, None]

        async def render(db: Any, claim: Any, name: str) -> Any:
            (rendered,) = await webhooks.render_bodies(
                db,
                [claim],
                summarize=lambda record: {"session_id": record.session_id, "rendered_by": name},
                max_payload_bytes=4096,
            )
            return rendered

        async with sessionmaker() as first, sessionmaker() as second:
            first_claim = await render(first, claimed[0], "first")
            racing = asyncio.create_task(render(second, claimed[1], "second"))
            await asyncio.sleep(0.3)
            assert not racing.done()
            await first.commit()
            second_claim = await racing
            await second.commit()
    assert first_claim.delivery_id != second_claim.delivery_id
    assert first_claim.event_id == second_claim.event_id
    assert first_claim.payload == second_claim.payload
    assert first_claim.payload is not None
    body = json.loads(first_claim.payload)
    assert body["data"] == {"session_id": session_id, "rendered_by": "first"}


async def _delete_session(env: Env, headers: dict[str, str], session_id: str) -> httpx.Response:
    return await env.client.delete(f"/api/agents/agent-session/{session_id}/", headers=headers)


async def test_deleting_sessions_around_the_render_of_their_events_never_deadlocks(
    empty_database: str,
) -> None:
    """The deliverer commits its claim before it renders, in a transaction that locks the
    events alone. A deletion of a session (which locks its events, then their deliveries)
    after the claim proceeds at once, and the render then leaves that event out; a deletion
    during the render waits for it, then takes the event, body and deliveries with the
    session. (Rendered inside the claim's transaction, the second order deadlocked on
    PostgreSQL: the DELETE answered 500.)"""
    async for env in _env(migrate(empty_database), webhook_deliverer_enabled=False):
        _, headers = await _user(env)
        endpoint = await _create(env, headers, "http://127.0.0.1:9/x", ["session.finalized"])
        worker = Worker(env.client, headers)
        first, second = [await worker.start(await worker.character()) for _ in range(2)]
        for session_id in (first, second):
            await worker.finalize(session_id)
        sessionmaker = env.factory.database.sessionmaker
        async with sessionmaker.begin() as db:
            claims = await webhooks.claim_due(db, limit=10, timeout_seconds=10)
        assert len(claims) == 2

        delete = functools.partial(_delete_session, env, headers)
        assert (await asyncio.wait_for(delete(first), 10)).status_code == 204
        async with sessionmaker() as db:
            (rendered,) = await webhooks.render_bodies(
                db, claims, summarize=webhook_summary, max_payload_bytes=1 << 20
            )
            assert rendered.session_id == uuid.UUID(second)
            deleting = asyncio.create_task(delete(second))
            await asyncio.sleep(0.3)
            assert not deleting.done()
            await db.commit()
        assert (await asyncio.wait_for(deleting, 10)).status_code == 204
        assert await _deliveries(env, headers, endpoint["id"]) == []


async def test_an_attempt_on_a_delivery_deleted_meanwhile_touches_no_other(
    empty_database: str,
) -> None:
    """A session is deleted while its finalized event's attempt is in flight; the
    session.deleted that follows may take the deleted delivery's id (SQLite reuses the
    highest rowid; PostgreSQL never reuses one, and there the test checks the rest). The
    late outcome of the first attempt is not recorded on it, nor held against the endpoint,
    nor counted: session.deleted is still due, once."""
    async for env in _env(migrate(empty_database), webhook_deliverer_enabled=False):
        _, headers = await _user(env)
        endpoint = await _create(
            env, headers, "http://127.0.0.1:9/x", ["session.finalized", "session.deleted"]
        )
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        await worker.finalize(session_id)
        async with env.factory.database.sessionmaker.begin() as db:
            (claim,) = await webhooks.claim_due(db, limit=10, timeout_seconds=10)
        deleted = await env.client.delete(
            f"/api/agents/agent-session/{session_id}/", headers=headers
        )
        assert deleted.status_code == 204
        (waiting,) = await _deliveries(env, headers, endpoint["id"])
        assert waiting["event_type"] == "session.deleted"
        if "sqlite" in env.settings.database_url:
            assert waiting["id"] == claim.delivery_id  # the case this guards against

        late = WebhookAttempt(
            at=datetime.now(UTC), response_code=500, error="HTTP 500", duration_ms=3
        )
        async with env.factory.database.sessionmaker.begin() as db:
            result = await webhooks.record_attempt(
                db, claim, late, retry_schedule=(60.0,), disable_after=timedelta(seconds=0)
            )
        assert result == webhooks.AttemptResult("gone", None)
        (still,) = await _deliveries(env, headers, endpoint["id"])
        assert still == waiting
        assert still["status"] == "pending"
        assert still["attempts"] == 0
        listed = await env.client.get(ENDPOINTS, headers=headers)
        assert listed.json()["data"][0]["is_active"] is True
        assert listed.json()["data"][0]["failing_since"] is None


async def test_a_large_transcript_is_left_out_with_a_flag(empty_database: str) -> None:
    async for env in _env(migrate(empty_database), webhook_max_payload_bytes=1024):
        _, headers = await _user(env)
        with receiver() as hook:
            endpoint = await _create(env, headers, hook.url, ["session.finalized"])
            hook.secrets = [endpoint["secret"]]
            worker = Worker(env.client, headers)
            session_id = await worker.start(await worker.character())
            await worker.turns(session_id, [seed_turn(index) for index in range(8)])
            await worker.finalize(session_id)
            await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
            data = hook.deliveries[0].payload["data"]
            read = await worker.read(session_id)
            assert data == {
                **read,
                "transcript": [],
                "transcript_text": "",
                "transcript_omitted": True,
            }
            assert read["turn_count"] == 8
            assert len(read["transcript"]) == 8


async def test_retries_keep_the_webhook_id_and_replay_sends_it_again(env: Env) -> None:
    _, headers = await _user(env)
    with receiver(answers=(500, 503)) as hook:
        endpoint = await _create(env, headers, hook.url, ["session.finalized"])
        hook.secrets = [endpoint["secret"]]
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        await worker.finalize(session_id)
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
        assert hook.requests == 3

        async def settled() -> bool:
            found = await _deliveries(env, headers, endpoint["id"])
            return bool(found[0]["status"] == "succeeded")

        await _until(settled)
        (delivery,) = await _deliveries(env, headers, endpoint["id"])
        assert delivery["attempts"] == 3
        assert [entry["response_code"] for entry in delivery["attempt_log"]] == [500, 503, 200]
        assert [entry["error"] for entry in delivery["attempt_log"]] == [
            "HTTP 500",
            "HTTP 503",
            None,
        ]
        assert delivery["event_id"] == hook.deliveries[0].webhook_id

        replayed = await env.client.post(REPLAY.format(delivery["id"]), headers=headers)
        assert replayed.status_code == 202
        assert replayed.json()["data"]["event_id"] == delivery["event_id"]
        assert replayed.json()["data"]["status"] == "pending"
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 2)
        assert hook.deliveries[1].webhook_id == hook.deliveries[0].webhook_id
        assert hook.deliveries[1].body == hook.deliveries[0].body


async def test_a_failed_finalize_writes_no_event(env: Env) -> None:
    _, headers = await _user(env)
    with receiver() as hook:
        endpoint = await _create(env, headers, hook.url)
        hook.secrets = [endpoint["secret"]]
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        refused = await env.client.post(
            FINALIZE.format(session_id),
            json={"ended_at": "2000-01-01T00:00:00Z"},
            headers=headers,
        )
        assert refused.status_code == 400
        refused_turns = await worker.turns(session_id, [{**seed_turn(0), "role": "robot"}])
        assert refused_turns.status_code == 400
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
        await asyncio.sleep(0.5)
        assert [delivery.payload["type"] for delivery in hook.deliveries] == ["session.started"]
        logged = await _deliveries(env, headers, endpoint["id"])
        assert [entry["event_type"] for entry in logged] == ["session.started"]
        read = await env.client.get(TRANSCRIPT.format(session_id), headers=headers)
        assert read.json()["data"]["finalized_at"] is None


async def test_a_transaction_that_rolls_back_leaves_no_event(env: Env) -> None:
    owner, headers = await _user(env)
    endpoint = await _create(env, headers, "http://127.0.0.1:9/x", ["session.started"])
    character = await env.factory.character(owner)
    database = env.factory.database

    async def start_then_fail() -> None:
        async with database.sessionmaker.begin() as db:
            await sessions.start_session(db, character, user_id=None)
            raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        await start_then_fail()
    assert await _deliveries(env, headers, endpoint["id"]) == []


async def test_an_endpoint_failing_for_too_long_is_disabled_then_re_enabled(
    empty_database: str,
) -> None:
    url = migrate(empty_database)
    async for env in _env(url, webhook_disable_after_seconds=0.3):
        _, headers = await _user(env)
        with receiver(answers=(500,) * 100) as hook:
            endpoint = await _create(env, headers, hook.url)
            hook.secrets = [endpoint["secret"]]
            tested = await env.client.post(
                ENDPOINT.format(endpoint["id"]) + "test/", headers=headers
            )
            assert tested.status_code == 202

            async def disabled(env: Env = env, headers: dict[str, str] = headers) -> bool:
                listed = await env.client.get(ENDPOINTS, headers=headers)
                return listed.json()["data"][0]["is_active"] is False

            await _until(disabled)
            (delivery,) = await _deliveries(env, headers, endpoint["id"])
            assert delivery["status"] == "failed"
            assert delivery["last_error"] == webhooks.DISABLED_ERROR
            refused = await env.client.post(
                ENDPOINT.format(endpoint["id"]) + "test/", headers=headers
            )
            assert refused.status_code == 409

            hook.answers.clear()
            enabled = await env.client.patch(
                ENDPOINT.format(endpoint["id"]), json={"is_active": True}, headers=headers
            )
            assert enabled.status_code == 200
            assert enabled.json()["data"]["is_active"] is True
            assert enabled.json()["data"]["failing_since"] is None
            replayed = await env.client.post(REPLAY.format(delivery["id"]), headers=headers)
            assert replayed.status_code == 202
            await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
            assert hook.deliveries[0].payload["type"] == "webhook.test"


async def test_metrics_count_deliveries(env: Env) -> None:
    _, headers = await _user(env)
    with receiver(answers=(500,)) as hook:
        endpoint = await _create(env, headers, hook.url)
        hook.secrets = [endpoint["secret"]]
        await env.client.post(ENDPOINT.format(endpoint["id"]) + "test/", headers=headers)
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)

        async def recorded() -> bool:
            found = await _deliveries(env, headers, endpoint["id"])
            return bool(found[0]["status"] == "succeeded")

        await _until(recorded)
        text = (await env.client.get("/metrics")).text
        assert 'transcripts_webhook_deliveries_total{outcome="succeeded"} 1.0' in text
        assert 'transcripts_webhook_deliveries_total{outcome="retry"} 1.0' in text
        assert 'transcripts_webhook_deliveries_total{outcome="failed"} 0.0' in text
        assert "transcripts_webhook_deliveries_pending 0.0" in text
        assert "transcripts_webhook_oldest_pending_age_seconds 0.0" in text


# SSRF.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.215.14/hook", "Must be an absolute https URL."),
        ("https://127.0.0.1/hook", "Must resolve to public addresses only."),
        ("https://localhost:8443/hook", "Must resolve to public addresses only."),
        ("https://10.1.2.3/hook", "Must resolve to public addresses only."),
        ("https://[::ffff:192.168.0.1]/hook", "Must resolve to public addresses only."),
        ("https://169.254.169.254/latest", "Must resolve to public addresses only."),
        ("https://user:pw@93.184.215.14/hook", "Must not carry credentials."),
        ("ftp://93.184.215.14/hook", "Must be an absolute https URL."),
    ],
)
async def test_private_targets_are_refused_without_the_setting(
    client: httpx.AsyncClient, factory: Factory, url: str, reason: str
) -> None:
    _, key = await factory.api_key(await factory.user())
    response = await client.post(
        ENDPOINTS, json={"url": url, "events": ALL_EVENTS}, headers={"X-API-Key": key}
    )
    assert response.status_code == 400
    assert response.json() == failure("Invalid url.", {"url": [reason]})
    listed = await client.get(ENDPOINTS, headers={"X-API-Key": key})
    assert listed.json() == ok([])


def test_addresses_are_judged_through_their_ipv4_forms() -> None:
    public = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    private = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address judged, not bound)
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "224.0.0.1",
    ]
    assert all(is_public(ipaddress.ip_address(address)) for address in public)
    assert not any(is_public(ipaddress.ip_address(address)) for address in private)


async def test_a_private_target_is_refused_at_delivery_too(empty_database: str) -> None:
    """An endpoint stored while private targets were allowed is not connected to once they
    are not: the attempt fails before any connection is made."""
    url = migrate(empty_database)
    with receiver() as hook:
        async for env in _env(url, webhook_deliverer_enabled=False):
            owner, headers = await _user(env)
            endpoint = await _create(env, headers, hook.url)
        async for env in _env(url, webhook_allow_private_targets=False):
            tested = await env.client.post(
                ENDPOINT.format(endpoint["id"]) + "test/", headers=headers
            )
            assert tested.status_code == 202

            async def attempted(env: Env = env) -> bool:
                found = await _deliveries(env, headers, endpoint["id"])
                return bool(found[0]["attempt_log"])

            await _until(attempted)
            (delivery,) = await _deliveries(env, headers, endpoint["id"])
            assert delivery["last_error"] == ("Target refused: Must be an absolute https URL.")
            assert delivery["last_response_code"] is None
        assert hook.requests == 0
    assert owner.id


async def test_forgetting_a_session_deletes_its_events_then_deleted_is_sent(
    empty_database: str,
) -> None:
    """What the delete of a session calls in its transaction: the session's stored events
    (they hold its transcript) go, undelivered ones included; session.deleted follows."""
    async for env in _env(migrate(empty_database), webhook_deliverer_enabled=False):
        owner, headers = await _user(env)
        other_owner, other_headers = await _user(env)
        endpoint = await _create(env, headers, "http://127.0.0.1:9/x")
        other_endpoint = await _create(env, other_headers, "http://127.0.0.1:9/y")
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        await worker.turns(session_id, [seed_turn(0)])
        await worker.finalize(session_id)
        other = Worker(env.client, other_headers)
        await other.start(await other.character())
        assert len(await _deliveries(env, headers, endpoint["id"])) == 3

        async with env.factory.database.sessionmaker.begin() as db:
            forgotten = await webhooks.forget_session(db, uuid.UUID(session_id))
            emitted = await webhooks.emit(
                db, "session.deleted", {"session_id": session_id}, session_owner_id=owner.id
            )
        assert forgotten == 3
        (deleted,) = await _deliveries(env, headers, endpoint["id"])
        assert deleted["event_type"] == "session.deleted"
        assert deleted["event_id"] == emitted
        # Another user's session's events are untouched.
        assert len(await _deliveries(env, other_headers, other_endpoint["id"])) == 1
        assert other_owner.id


async def test_staff_endpoints_receive_every_session_and_others_only_their_own(
    empty_database: str,
) -> None:
    async for env in _env(migrate(empty_database), webhook_deliverer_enabled=False):
        staff = await env.factory.user(staff=True)
        _, staff_key = await env.factory.api_key(staff)
        staff_headers = {"X-API-Key": staff_key}
        _, owner_headers = await _user(env)
        _, bystander_headers = await _user(env, jwt_auth=True)
        staff_endpoint = await _create(env, staff_headers, "http://127.0.0.1:9/s")
        owner_endpoint = await _create(env, owner_headers, "http://127.0.0.1:9/o")
        bystander_endpoint = await _create(env, bystander_headers, "http://127.0.0.1:9/b")
        worker = Worker(env.client, owner_headers)
        await worker.start(await worker.character())
        assert len(await _deliveries(env, staff_headers, staff_endpoint["id"])) == 1
        assert len(await _deliveries(env, owner_headers, owner_endpoint["id"])) == 1
        assert await _deliveries(env, bystander_headers, bystander_endpoint["id"]) == []
        # An endpoint that did not ask for an event type gets none of it.
        await env.client.patch(
            ENDPOINT.format(owner_endpoint["id"]),
            json={"events": ["session.finalized"]},
            headers=owner_headers,
        )
        await worker.start(await worker.character())
        assert len(await _deliveries(env, owner_headers, owner_endpoint["id"])) == 1
        assert len(await _deliveries(env, staff_headers, staff_endpoint["id"])) == 2


async def test_deleting_a_session_sends_session_deleted_and_drops_its_events(env: Env) -> None:
    owner, headers = await _user(env)
    with receiver() as hook:
        endpoint = await _create(env, headers, hook.url, ["session.deleted"])
        hook.secrets = [endpoint["secret"]]
        pending = await _create(env, headers, "http://127.0.0.1:9/down", ["session.finalized"])
        worker = Worker(env.client, headers)
        session_id = await worker.start(await worker.character())
        await worker.turns(session_id, [seed_turn(0)])
        await worker.finalize(session_id)
        # The dead endpoint's finalized event, transcript and all, waits for a retry.
        assert len(await _deliveries(env, headers, pending["id"])) == 1

        deleted = await env.client.delete(
            f"/api/agents/agent-session/{session_id}/", headers=headers
        )
        assert deleted.status_code == 204
        await asyncio.to_thread(hook.wait_for, lambda: len(hook.deliveries) == 1)
        (event,) = hook.deliveries
        assert event.payload["type"] == "session.deleted"
        assert event.payload["data"]["session_id"] == session_id
        assert ISO_Z.match(event.payload["data"]["deleted_at"])
        assert hook.rejected == []
        # What was stored about the session is gone with it, undelivered or not.
        assert await _deliveries(env, headers, pending["id"]) == []
        # A repeated DELETE deletes nothing more and sends nothing more.
        again = await env.client.delete(f"/api/agents/agent-session/{session_id}/", headers=headers)
        assert again.status_code == 204
        await asyncio.sleep(0.5)
        assert len(hook.deliveries) == 1
    assert owner.id
