"""Webhooks with real processes: `transcripts serve` delivering to a real receiver on
loopback that verifies every signature with the ``standardwebhooks`` library.

- the receiver is down while the service restarts, and the event is still delivered after;
- two `transcripts serve` on one PostgreSQL deliver each of 1,000 events of 500 sessions
  exactly once, and both take part.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import (
    POSTGRES_ADMIN_URL,
    TEST_JWT_SECRET,
    _admin_execute,
    make_settings,
    migrate,
    run_elsewhere,
)
from tests.factories import Factory
from tests.servers import free_port, transcripts_process
from tests.webhook_receiver import receiver
from tests.write_path import FINALIZE, START
from transcripts.db.engine import Database

ENDPOINTS = "/api/webhooks/endpoints/"
DELIVERIES = "/api/webhooks/endpoints/{}/deliveries/"
SUCCEEDED = re.compile(r'^transcripts_webhook_deliveries_total\{outcome="succeeded"\} (\S+)$', re.M)


def _env(url: str, **settings: str) -> dict[str, str]:
    return {
        "TRANSCRIPTS_DATABASE_URL": url,
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        "TRANSCRIPTS_RATE_LIMIT_ENABLED": "false",
        "TRANSCRIPTS_DB_POOL_SIZE": "5",
        "TRANSCRIPTS_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "TRANSCRIPTS_WEBHOOK_POLL_INTERVAL_SECONDS": "0.2",
        "TRANSCRIPTS_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.3"] * 30),
        **{f"TRANSCRIPTS_{name.upper()}": value for name, value in settings.items()},
    }


def _seed(url: str) -> tuple[str, str]:
    """An owner's API key and a character of theirs."""

    async def seed() -> tuple[str, str]:
        settings = make_settings(url)
        database = Database(settings)
        try:
            factory = Factory(database, settings)
            owner = await factory.user()
            character = await factory.character(owner)
            _, key = await factory.api_key(owner)
            return key, character.slug
        finally:
            await database.dispose()

    return run_elsewhere(seed)


def _wait(condition: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not so within {within} s"
        time.sleep(0.05)


def test_the_receiver_down_while_the_service_restarts(empty_database: str) -> None:
    url = migrate(empty_database)
    key, slug = _seed(url)
    headers = {"X-API-Key": key}
    port = free_port()  # the receiver's, nothing listening there yet
    hook_url = f"http://127.0.0.1:{port}/hooks"
    with transcripts_process("serve", env=_env(url)) as first:
        api = httpx.Client(base_url=first.base_url, headers=headers, timeout=30)
        created = api.post(ENDPOINTS, json={"url": hook_url, "events": ["session.finalized"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()["data"]
        session_id = api.post(START, json={"agent": slug}).json()["data"]["session_id"]
        assert api.post(FINALIZE.format(session_id), json={}).status_code == 200

        def failed_once() -> bool:
            found = api.get(DELIVERIES.format(endpoint["id"])).json()["data"]
            return bool(found and found[0]["attempt_log"])

        _wait(failed_once)
        (delivery,) = api.get(DELIVERIES.format(endpoint["id"])).json()["data"]
        assert delivery["status"] == "pending"
        assert delivery["last_response_code"] is None
        assert delivery["last_error"].startswith("ConnectError")
        api.close()

    with receiver(port=port) as hook:
        hook.secrets = [endpoint["secret"]]  # before the service can send anything
        with transcripts_process("serve", env=_env(url)) as second:
            hook.wait_for(lambda: len(hook.deliveries) == 1, timeout=60)
            (received,) = hook.deliveries
            assert received.webhook_id == delivery["event_id"]
            assert received.payload["type"] == "session.finalized"
            assert received.payload["data"]["session_id"] == session_id
            assert hook.rejected == []
            with httpx.Client(base_url=second.base_url, headers=headers, timeout=30) as api:

                def settled() -> bool:
                    found = api.get(DELIVERIES.format(endpoint["id"])).json()["data"]
                    return bool(found[0]["status"] == "succeeded")

                _wait(settled)
                (done,) = api.get(DELIVERIES.format(endpoint["id"])).json()["data"]
                assert done["attempts"] >= 2
                assert done["attempt_log"][-1]["response_code"] == 200


@pytest.fixture
def postgresql_database() -> Iterator[str]:
    """A fresh PostgreSQL database of the test's own (replicas share one; SQLite has one
    deliverer by design, so this test is PostgreSQL's alone)."""
    name = f"transcripts_webhooks_{uuid.uuid4().hex[:12]}"
    run_elsewhere(lambda: _admin_execute(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield migrate(f"{base}/{name}")
    finally:
        run_elsewhere(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


SESSIONS = 500


async def _drive(base_urls: list[str], key: str, slug: str) -> None:
    """Start and finalize SESSIONS sessions, alternating between the replicas."""
    clients = [
        httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=60)
        for base in base_urls
    ]
    limit = asyncio.Semaphore(8)

    async def one(index: int) -> None:
        client = clients[index % len(clients)]
        async with limit:
            started = await client.post(START, json={"agent": slug})
            assert started.status_code == 201, started.text
            session_id = started.json()["data"]["session_id"]
            other = clients[(index + 1) % len(clients)]  # finalized by the other replica
            finalized = await other.post(FINALIZE.format(session_id), json={})
            assert finalized.status_code == 200, finalized.text

    try:
        await asyncio.gather(*(one(index) for index in range(SESSIONS)))
    finally:
        for client in clients:
            await client.aclose()


def test_two_replicas_deliver_each_event_exactly_once(postgresql_database: str) -> None:
    url = postgresql_database
    key, slug = _seed(url)
    env = _env(url)
    with (
        receiver() as hook,
        transcripts_process("serve", env=env) as first,
        transcripts_process("serve", env=env) as second,
    ):
        created = httpx.post(
            first.base_url + ENDPOINTS,
            json={"url": hook.url, "events": ["session.started", "session.finalized"]},
            headers={"X-API-Key": key},
        )
        assert created.status_code == 201, created.text
        hook.secrets = [created.json()["data"]["secret"]]

        asyncio.run(_drive([first.base_url, second.base_url], key, slug))
        hook.wait_for(lambda: len(hook.deliveries) >= 2 * SESSIONS, timeout=120)
        time.sleep(1.0)  # a duplicate would arrive about now

        counts = Counter(delivery.webhook_id for delivery in hook.deliveries)
        assert len(counts) == 2 * SESSIONS
        assert set(counts.values()) == {1}
        assert hook.requests == 2 * SESSIONS
        assert hook.rejected == []
        types = Counter(delivery.payload["type"] for delivery in hook.deliveries)
        assert types == {"session.started": SESSIONS, "session.finalized": SESSIONS}
        by_replica = []
        for server in (first, second):
            text = httpx.get(server.base_url + "/metrics").text
            match = SUCCEEDED.search(text)
            assert match is not None, text
            by_replica.append(float(match.group(1)))
        # Each replica delivered some, and together each event once.
        assert sum(by_replica) == 2 * SESSIONS
        assert all(count > 0 for count in by_replica), by_replica
