"""Many writers on one session at once.

The 20 overlapping writers run on PostgreSQL only, where writes really proceed in parallel
(SQLite admits one writer at a time), so that test uses the PostgreSQL database directly
instead of the two-database ``client`` fixture. Appends racing a finalize run on both.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory
from tests.write_path import FINALIZE, SEED_USAGE_BODY, Worker, ok
from transcripts.migrate import upgrade_to_head
from transcripts.state import app_state

WRITERS = 20


@pytest.fixture(scope="module")
async def postgres_app(postgresql_url: str) -> AsyncIterator[FastAPI]:
    await asyncio.to_thread(upgrade_to_head, postgresql_url)
    async for app in running_app(make_settings(postgresql_url)):
        yield app


@pytest.fixture
async def pg_client(postgres_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(postgres_app) as client:
        yield client


@pytest.fixture
def pg_factory(postgres_app: FastAPI) -> Factory:
    return Factory(app_state(postgres_app).database, app_state(postgres_app).settings)


def turn(index: int) -> dict[str, Any]:
    return {
        "turn_index": index,
        "role": "assistant" if index % 2 == 0 else "user",
        "text": f"Turn number {index}.",
        "ts": index * 1.5,
    }


async def workers(client: httpx.AsyncClient, factory: Factory) -> list[Worker]:
    """The owner's writers, half with an API key and half with an access token."""
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    token = factory.token(owner.id)
    return [
        Worker(client, {"X-API-Key": key} if n % 2 else {"Authorization": f"Bearer {token}"})
        for n in range(WRITERS)
    ]


async def test_concurrent_overlapping_appends_lose_and_duplicate_nothing(
    pg_client: httpx.AsyncClient, pg_factory: Factory
) -> None:
    writers = await workers(pg_client, pg_factory)
    session_id = await writers[0].start(await writers[0].character())
    # Writer n sends turns 5n .. 5n+14: every turn is in up to three writers' batches.
    batches = [
        random.Random(n).sample([turn(i) for i in range(5 * n, 5 * n + 15)], 15)
        for n in range(WRITERS)
    ]
    total = 5 * (WRITERS - 1) + 15

    async def write(writer: Worker, batch: list[dict[str, Any]]) -> list[httpx.Response]:
        # Each batch goes twice, the way a worker retries after a timeout.
        first = await writer.turns(session_id, batch)
        return [first, await writer.turns(session_id, batch[::-1])]

    answers = await asyncio.gather(*map(write, writers, batches))

    responses = [response for pair in answers for response in pair]
    assert [response.status_code for response in responses] == [200] * 2 * WRITERS
    assert sum(response.json()["data"]["inserted"] for response in responses) == total
    assert {response.json()["data"]["received"] for response in responses} == {15}
    transcript = (await writers[0].read(session_id))["transcript"]
    assert transcript == [turn(i) for i in range(total)]


async def test_an_append_racing_finalize_never_lands_after_it(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    writers = await workers(client, factory)
    session_id = await writers[0].start(await writers[0].character())
    await writers[0].turns(session_id, [turn(i) for i in range(5)])

    async def append(n: int) -> httpx.Response:
        return await writers[n].turns(session_id, [turn(5 + n)])

    async def finalize() -> httpx.Response:
        await asyncio.sleep(0.005)
        return await client.post(
            FINALIZE.format(session_id), json=SEED_USAGE_BODY, headers=writers[0].headers
        )

    *appends, finalized = await asyncio.gather(*map(append, range(WRITERS - 1)), finalize())

    assert finalized.status_code == 200
    accepted = {5 + n for n, response in enumerate(appends) if response.status_code == 200}
    refused = [response for response in appends if response.status_code != 200]
    for response in refused:
        assert response.status_code == 409
        assert response.json()["message"] == "The session is finalized; no more turns can be added."
    stored = await writers[0].read(session_id)
    assert [item["turn_index"] for item in stored["transcript"]] == sorted({*range(5), *accepted})
    # What finalize answered is still the whole transcript: nothing slipped in after it.
    assert finalized.json() == ok(stored)
