"""What the fuzzers found, pinned: each of these answered 500 (or changed data silently)
before it was fixed. Exact answers, in each dialect's body, on both databases."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import Factory
from tests.write_path import FINALIZE, START, TURNS, Worker, failure, owner_worker, seed_turn

JSON = {"Content-Type": "application/json"}
TEXT = "Must not contain the character U+0000 (NUL) or an unpaired surrogate."
INTEGER = "Integers must be between -9223372036854775808 and 9223372036854775807."
NUMBER = "Must be a finite number."
NO_NUL = "Must not contain the character U+0000 (NUL)."


def anam_bad_request(message: str) -> dict[str, Any]:
    return {"statusCode": 400, "error": "Bad Request", "message": message}


async def post_raw(worker: Worker, path: str, body: str) -> httpx.Response:
    """A body exactly as written: ``json=`` would refuse NaN and re-escape the rest."""
    return await worker.client.post(path, content=body.encode(), headers={**worker.headers, **JSON})


async def test_a_page_past_a_64_bit_offset_is_400(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # Schemathesis: /v1/sessions?perPage=84&page=237483007657124288 overflowed OFFSET.
    _, worker = await owner_worker(client, factory)
    response = await client.get(
        "/v1/sessions?perPage=84&page=237483007657124288", headers=worker.headers
    )
    assert response.status_code == 400
    assert response.json() == anam_bad_request(
        "Invalid page (page: Input should be less than or equal to 1000000)"
    )
    # Within the bound on page numbers (100,000 sessions deep), an empty page; past it, 400.
    last = await client.get("/v1/sessions?perPage=100&page=1000", headers=worker.headers)
    assert (last.status_code, last.json()["data"]) == (200, [])
    past = await client.get("/v1/sessions?perPage=100&page=1000000", headers=worker.headers)
    assert past.status_code == 400
    assert past.json()["message"].startswith("Invalid page (page: Pages reach 100000 sessions")


async def test_integers_past_64_bits_in_free_form_json_are_400(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # Schemathesis: a form response's values held 19393972700216696319871287296, which the
    # JSON column's encoder refused, as a 500. Session metadata took the same path.
    _, worker = await owner_worker(client, factory)
    slug = await worker.character()
    session_id = await worker.start(slug)

    started = await worker.client.post(
        START, json={"agent": slug, "metadata": {"n": 2**64}}, headers=worker.headers
    )
    form = await worker.client.post(
        f"/api/agents/{slug}/form-responses/",
        json={"session_id": session_id, "form_id": "f", "values": {"n": [-(2**63) - 1]}},
        headers=worker.headers,
    )

    assert started.status_code == 400
    assert started.json() == failure("Invalid metadata.n.", {"metadata.n": [INTEGER]})
    assert form.status_code == 400
    # Two levels of names at most: deeper values are reported at their ancestor.
    assert form.json() == failure("Invalid values.n.", {"values.n": [INTEGER]})
    widest = {"max": 2**63 - 1, "min": -(2**63)}
    kept = await worker.start(slug, metadata=widest)
    assert (await worker.read(kept))["metadata"] == widest


async def test_nul_in_a_turn_is_400_on_both_databases(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # Hypothesis and Schemathesis: PostgreSQL refuses U+0000 in text, as a 500; SQLite
    # stored it. Both now refuse it, and nothing of the batch is stored.
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())

    response = await worker.turns(session_id, [seed_turn(0), seed_turn(1) | {"text": "a\x00b"}])

    assert response.status_code == 400
    assert response.json() == failure("Invalid 1.text.", {"1.text": [TEXT]})
    assert (await worker.read(session_id))["transcript"] == []


async def test_unstorable_values_anywhere_in_a_body_are_400(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    _, worker = await owner_worker(client, factory)
    slug = await worker.character()
    session_id = await worker.start(slug)
    cases = {
        # A lone surrogate in free-form JSON reached the encoder (500); typed fields refused it.
        "lone surrogate": (
            START,
            f'{{"agent": "{slug}", "metadata": {{"note": "\\ud800"}}}}',
            {"metadata.note": [TEXT]},
        ),
        "NUL in a key": (
            START,
            f'{{"agent": "{slug}", "metadata": {{"\\u0000": 1}}}}',
            {"metadata": [TEXT]},
        ),
        # NaN and Infinity are not JSON: metadata kept them as null, silently.
        "NaN": (
            START,
            f'{{"agent": "{slug}", "metadata": {{"x": {{"deeper": NaN}}}}}}',
            {"metadata.x": [NUMBER]},
        ),
        "Infinity in a turn": (
            TURNS.format(session_id),
            '[{"turn_index": 0, "role": "user", "text": "hi", "ts": 1, '
            '"speaking_duration_seconds": -Infinity}]',
            {"0.speaking_duration_seconds": [NUMBER]},
        ),
        "NUL in finalize": (
            FINALIZE.format(session_id),
            '{"llm_model": "gpt\\u0000"}',
            {"llm_model": [TEXT]},
        ),
    }
    for name, (path, body, errors) in cases.items():
        response = await post_raw(worker, path, body)
        assert response.status_code == 400, name
        assert response.json() == failure(f"Invalid {', '.join(errors)}.", errors), name
    # The client's own keys are never echoed as a location.
    hidden = await post_raw(worker, START, f'{{"agent": "{slug}", "Secret-Key": "\\u0000"}}')
    assert hidden.json() == failure("Invalid body.", {"body": [TEXT]})
    # An escaped backslash before "u0000" is text, and a surrogate pair is one character.
    fine = '[{"turn_index": 0, "role": "user", "text": "C:\\\\u0000 \\ud83d\\ude00", "ts": 1}]'
    assert (await post_raw(worker, TURNS.format(session_id), fine)).status_code == 200
    assert (await worker.read(session_id))["transcript"][0]["text"] == "C:\\u0000 \U0001f600"
    assert (await worker.read(session_id))["finalized_at"] is None


async def test_nul_in_a_path_or_query_is_400_in_each_dialect(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # PostgreSQL refused these strings in comparisons too, as a 500.
    _, worker = await owner_worker(client, factory)
    anam = await client.get("/v1/sessions?search=a%00b", headers=worker.headers)
    history = await client.get("/api/billing/usage/?tenant_id=%00", headers=worker.headers)
    forms = await client.get("/api/agents/a%00b/form-responses/", headers=worker.headers)

    assert anam.status_code == 400
    assert anam.json() == anam_bad_request(f"Invalid query (query: {NO_NUL})")
    assert history.status_code == 400
    assert history.json() == failure("Invalid query.", {"query": [NO_NUL]})
    assert forms.status_code == 400
    assert forms.json() == failure("Invalid path.", {"path": [NO_NUL]})
    # A percent sign spelled out is only text.
    literal = await client.get("/v1/sessions?search=%2500", headers=worker.headers)
    assert literal.status_code == 200


async def test_moments_outside_the_utc_calendar_are_400(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    # Schemathesis-style boundaries: year 1 at +01:00 and year 9999 at -01:00 exist, but
    # not in UTC; converting them overflowed in the drivers, as a 500.
    _, worker = await owner_worker(client, factory)
    session_id = await worker.start(await worker.character())
    out_of_range = ["Out of range once converted to UTC."]

    early = await client.get(
        "/api/billing/usage/?start=0001-01-01T00:00:00%2B01:00", headers=worker.headers
    )
    late = await client.get(
        "/api/billing/usage/?end=9999-12-31T23:59:59-01:00", headers=worker.headers
    )
    finalized = await worker.finalize(session_id, ended_at="9999-12-31T23:59:59-01:00")

    assert early.json() == failure("Invalid start.", {"start": out_of_range})
    assert late.json() == failure("Invalid end.", {"end": out_of_range})
    assert finalized.status_code == 400
    assert finalized.json() == failure("Invalid ended_at.", {"ended_at": out_of_range})
    assert (await worker.read(session_id))["finalized_at"] is None
