"""``make bench``'s first step: a quick in-process guard on the hot read's speed.

The service and a bare Starlette + raw driver application (bench/baseline_app.py, B0) read
the same 10-turn transcript from the same SQLite database, called straight through ASGI by
16 concurrent clients, alternately for several rounds. In process, without HTTP and uvicorn
around both, the service measures 0.85-1.0 of B0 on a quiet machine; below ``MINIMUM_RATIO``
the step fails. It is a benchmark, not a test: on a loaded two-core machine a correctness
suite must not depend on timings (it once read 0.51 there, with rounds from 0.25 to 2.5).

The service runs as deployed, its rate limiter counting every read in memory against a
budget that never runs out (``RATE_LIMIT``); a second copy with the limiter switched off runs
in the same rounds, so the limiter's own cost prints beside the verdict.

Run alone with ``python -m bench.guard``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.types import ASGIApp

from bench.asgi import asgi_get, read_concurrently
from bench.baseline_app import baseline_app, service_pool_bounds
from bench.load import RATE_LIMIT
from transcripts.app import create_app
from transcripts.auth import hash_api_key
from transcripts.demo import long_transcript
from transcripts.migrate import upgrade_to_head
from transcripts.pricing import Usage
from transcripts.services import accounts, sessions
from transcripts.settings import Settings
from transcripts.state import app_state

MINIMUM_RATIO = 0.6
CLIENTS = 16
REQUESTS = 320
ROUNDS = 7


async def _seconds(app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    await read_concurrently(app, path, headers, REQUESTS, CLIENTS)
    return time.perf_counter() - started


async def measure(settings: Settings) -> tuple[list[float], list[float]]:
    """B0's time over the service's, per round: with the rate limiter, and without."""
    app = create_app(settings)
    unlimited = create_app(settings.model_copy(update={"rate_limit_enabled": False}))
    async with app.router.lifespan_context(app), unlimited.router.lifespan_context(unlimited):
        database = app_state(app).database
        async with database.sessionmaker.begin() as db:
            owner = await accounts.create_user(db, "guard@example.com", tenant_slug="guard")
            character = await accounts.create_character(db, owner.id, slug="guard", name="G")
            session = await sessions.start_session(db, character, user_id=owner.id)
            await sessions.append_turns(db, session, long_transcript(10))
            await sessions.finalize_session(db, session, Usage(), settings.prices)
            _, generated = await accounts.create_api_key(db, owner.id)
        key = generated.key
        service = (f"/v1/sessions/{session.session_id}/transcript", [(b"x-api-key", key.encode())])
        bare = (f"/anam/key/{session.session_id}", [])
        _, most = service_pool_bounds(settings)
        b0 = baseline_app(settings, key_hash=hash_api_key(key), user_id=owner.id, pool=(1, most))
        async with b0.router.lifespan_context(b0):
            if await asgi_get(app, *service) != await asgi_get(b0, *bare):
                raise SystemExit("the service and B0 answer different bytes")
            sides = {"S": (app, service), "S-off": (unlimited, service), "B0": (b0, bare)}
            for side_app, (path, headers) in sides.values():
                await _seconds(side_app, path, headers)  # warm the pools up to the clients' count
            limited, off = [], []
            for round_number in range(ROUNDS):
                order = list(sides)
                shift = round_number % len(order)  # each side goes first in turn
                seconds = {}
                for side in order[shift:] + order[:shift]:
                    side_app, (path, headers) = sides[side]
                    seconds[side] = await _seconds(side_app, path, headers)
                limited.append(seconds["B0"] / seconds["S"])
                off.append(seconds["B0"] / seconds["S-off"])
        await app_state(app).key_usage.drain()
        await app_state(unlimited).key_usage.drain()
    return limited, off


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="transcripts-guard-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'guard.db'}"
        upgrade_to_head(url)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            environment="development",
            recordings_dir=directory,
            rate_limit=RATE_LIMIT,
        )
        ratios, without_limiter = asyncio.run(measure(settings))
    ratio = statistics.median(ratios)
    rounds = ", ".join(f"{value:.2f}" for value in ratios)
    verdict = "ok" if ratio >= MINIMUM_RATIO else f"below {MINIMUM_RATIO}"
    print(f"guard: in-process S/B0 = {ratio:.2f} (rounds: {rounds}): {verdict}")
    rounds = ", ".join(f"{value:.2f}" for value in without_limiter)
    print(
        f"guard: without the rate limiter S/B0 = {statistics.median(without_limiter):.2f}"
        f" (rounds: {rounds})"
    )
    return 0 if ratio >= MINIMUM_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
