"""Finalize through HTTP: the cost from the price table, and bodies it refuses."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory
from tests.write_path import SEED_COST, SEED_USAGE_BODY, failure, owner_worker
from transcripts.pricing import LlmPrice, PriceTable


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
