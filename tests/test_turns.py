"""Appending turns through HTTP: idempotence, conflicts, and what a batch may hold."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory
from tests.write_path import TURNS, failure, owner_worker, seed_turn
from transcripts.state import app_state


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
    # Parsed strictly (the outside test's finding): nothing is coerced, nothing is dropped.
    "turn_index as a string": (
        [seed_turn(2) | {"turn_index": "2"}],
        {"0.turn_index": ["Input should be a valid integer"]},
    ),
    "turn_index as a float": (
        [seed_turn(2) | {"turn_index": 2.0}],
        {"0.turn_index": ["Input should be a valid integer"]},
    ),
    "ts as a boolean": (
        [seed_turn(2) | {"ts": True}],
        {"0.ts": ["Input should be a valid number"]},
    ),
    "ts as a string": (
        [seed_turn(2) | {"ts": "1.5"}],
        {"0.ts": ["Input should be a valid number"]},
    ),
    "was_interrupted as a word": (
        [seed_turn(2) | {"was_interrupted": "yes"}],
        {"0.was_interrupted": ["Input should be a valid boolean"]},
    ),
    "text as a number": (
        [seed_turn(2) | {"text": 42}],
        {"0.text": ["Input should be a valid string"]},
    ),
    "an unknown field": (
        [seed_turn(2) | {"speaker": "agent"}],
        {"0.speaker": ["Unknown field: not accepted here."]},
    ),
    "an unknown field whose name is no field's": (
        [seed_turn(2) | {"Bearer sk_secret": 1}],
        {"0": ["Unknown field: not accepted here."]},
    ),
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


async def test_a_session_holds_at_most_its_caps_of_turns_and_text(
    database_url: str, factory: Factory
) -> None:
    settings = make_settings(database_url, max_turns_per_session=4, max_transcript_bytes=60)
    async for app in running_app(settings):
        async with asgi_client(app) as client:
            _, worker = await owner_worker(client, factory)
            session_id = await worker.start(await worker.character())
            short = [seed_turn(i) | {"text": f"Turn {i}."} for i in range(5)]
            assert (await worker.turns(session_id, short[:3])).status_code == 200
            before = await worker.read(session_id)

            refused = await worker.turns(session_id, short[3:5])
            message = "A session holds at most 4 turns."
            assert refused.status_code == 409
            assert refused.json() == failure(message, {"body": [message]})
            assert await worker.read(session_id) == before, "the refused batch left nothing"

            # Retries of stored turns add nothing, so they are never refused.
            retried = await worker.turns(session_id, short[:3])
            assert retried.json()["data"] | {"session_id": None} == {
                "session_id": None,
                "received": 3,
                "inserted": 0,
                "turn_count": 3,
            }

            # Bytes: 21 so far; 40 more (UTF-8: "é" is two) would pass 60.
            wordy = seed_turn(3) | {"text": "é" * 20}
            refused = await worker.turns(session_id, [wordy])
            message = "A session's transcript holds at most 60 bytes of text."
            assert refused.status_code == 409
            assert refused.json() == failure(message, {"body": [message]})
            fits = await worker.turns(session_id, [seed_turn(3) | {"text": "é" * 18}])
            assert fits.json()["data"]["turn_count"] == 4
            assert (await worker.read(session_id))["turn_count"] == 4
        await app_state(app).key_usage.drain()
