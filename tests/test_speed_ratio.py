"""A loose, in-process guard on the hot read's speed; `make bench` measures it for real.

The service and a bare Starlette + raw driver application (bench/baseline_app.py, B0) read
the same 10-turn transcript from the same database, called straight through ASGI by 16
concurrent clients, alternately for several rounds. In process, without HTTP and uvicorn
around both, the service measures 0.85-1.0 of B0 on a quiet machine (0.6 before the read
borrowed pooled connections without greenlets and the request log left `logging`); the
bound leaves room for a busy one, and a regression to two thirds of the speed fails here.
"""

from __future__ import annotations

import statistics
import time

from fastapi import FastAPI
from starlette.types import ASGIApp

from bench.asgi import asgi_get, read_concurrently
from bench.baseline_app import baseline_app, service_pool_bounds
from tests.factories import SEED_USAGE, Factory
from transcripts.auth import hash_api_key
from transcripts.demo import long_transcript
from transcripts.settings import Settings

MINIMUM_RATIO = 0.6
CLIENTS = 16
REQUESTS = 320
ROUNDS = 7


async def _seconds(app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    await read_concurrently(app, path, headers, REQUESTS, CLIENTS)
    return time.perf_counter() - started


async def test_transcript_read_keeps_close_to_the_bare_stack(
    app: FastAPI, factory: Factory, settings: Settings
) -> None:
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(
        await factory.character(owner),
        user_id=owner.id,
        turns=long_transcript(10),
        usage=SEED_USAGE,
    )
    service = (f"/v1/sessions/{session.session_id}/transcript", [(b"x-api-key", key.encode())])
    bare = (f"/anam/key/{session.session_id}", [])
    _, most = service_pool_bounds(settings)
    b0 = baseline_app(settings, key_hash=hash_api_key(key), user_id=owner.id, pool=(1, most))
    async with b0.router.lifespan_context(b0):
        assert await asgi_get(app, *service) == await asgi_get(b0, *bare)  # the same bytes
        await _seconds(app, *service)  # warm both pools up to the clients' count
        await _seconds(b0, *bare)
        ratios = []
        for round_number in range(ROUNDS):
            if round_number % 2:
                service_seconds = await _seconds(app, *service)
                bare_seconds = await _seconds(b0, *bare)
            else:
                bare_seconds = await _seconds(b0, *bare)
                service_seconds = await _seconds(app, *service)
            ratios.append(bare_seconds / service_seconds)
    ratio = statistics.median(ratios)
    assert ratio >= MINIMUM_RATIO, f"S/B0 = {ratio:.2f} (rounds: {ratios})"
