"""What the rate limiter adds to a request, in process: the figures behind the choice of
storage in ``src/transcripts/ratelimit.py`` and the limiter's share of a hot read.

``python -m bench.ratelimit_cost`` wraps an application that answers at once in the
middleware and calls it the way uvicorn does (the event loop runs between requests, so the
tasks a storage starts do run), for clients with 1 to 10,000 different API keys, each with
a window open. It prints the CPU time the limiter adds per request (the best of a few
rounds: a loaded machine only adds to them) with ``limits``' own async MemoryStorage, whose
upkeep walks every key after every increment, and with ``MemoryWindows``, the service's.

``python -m bench.ratelimit_cost --instructions`` counts, under callgrind, the instructions
of the service's hot read (a 10-turn transcript from SQLite, an API key, 16 concurrent
clients, as ``bench/instructions.py`` counts them) with the limiter counting in memory and
with it switched off, in the same process, alternately: instruction counts do not move
with the load of a shared machine, which wall-clock rounds do by tens of percent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from limits.aio.storage import MemoryStorage, Storage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.asgi import header_list, read_concurrently
from bench.instructions import _callgrind, read_dumps
from bench.load import RATE_LIMIT
from transcripts.auth import TokenVerifier, generate_api_key
from transcripts.ratelimit import MemoryWindows, Rate, RateLimiter, RateLimits
from transcripts.settings import Settings

ROUNDS = 3
IDENTITIES = (1, 100, 1000, 10000)
CLIENTS = 16
READS = 320


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _scope(key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/v1/sessions/00000000-0000-0000-0000-000000000000/transcript",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"x-api-key", key.encode()), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
    }


async def _microseconds(app: ASGIApp, scopes: list[dict[str, Any]], requests: int) -> float:
    started = time.process_time()
    for index in range(requests):
        await app(scopes[index % len(scopes)], _receive, _send)
        await asyncio.sleep(0)  # what the server's loop does between requests
    return (time.process_time() - started) / requests * 1e6


async def cost(storage: Callable[[], Storage], identities: int, requests: int) -> float:
    """Microseconds of CPU the limiter adds to a request, with ``identities`` clients."""
    rate = Rate(RATE_LIMIT)
    limiter = RateLimiter(storage(), per_credential=rate, anonymous=rate)
    verifier = TokenVerifier(Settings(_env_file=None))  # type: ignore[call-arg]
    limited = RateLimits(_answer, limiter, ["/v1"], verifier, render_error=lambda *_: None)
    scopes = [_scope(generate_api_key().key) for _ in range(identities)]
    for scope in scopes:  # every window open
        await limited(scope, _receive, _send)
    bare = min([await _microseconds(_answer, scopes, requests) for _ in range(ROUNDS)])
    wrapped = min([await _microseconds(limited, scopes, requests) for _ in range(ROUNDS)])
    return wrapped - bare


async def storages() -> None:
    kinds: dict[str, Callable[[], Storage]] = {
        "limits MemoryStorage": MemoryStorage,
        "MemoryWindows": MemoryWindows,
    }
    for name, storage in kinds.items():
        for identities in IDENTITIES:
            # Enough requests to visit every key, fewer where each one walks them all.
            requests = max(identities, 2000) if name == "MemoryWindows" else 2000
            microseconds = await cost(storage, identities, requests)
            print(f"{name:>22}, {identities:>6} clients: +{microseconds:7.1f} µs a request")


# ---------------------------------------------------------------- the hot read, counted


def _settings(url: str, directory: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        environment="development",
        recordings_dir=directory,
        rate_limit=RATE_LIMIT,
    )


async def _seed(settings: Settings) -> dict[str, str]:
    from transcripts.app import create_app
    from transcripts.demo import long_transcript
    from transcripts.pricing import Usage
    from transcripts.services import accounts, sessions
    from transcripts.state import app_state

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        app_state(app).database.sessionmaker.begin() as db,
    ):
        owner = await accounts.create_user(db, "cost@example.com", tenant_slug="cost")
        character = await accounts.create_character(db, owner.id, slug="cost", name="C")
        session = await sessions.start_session(db, character, user_id=owner.id)
        await sessions.append_turns(db, session, long_transcript(10))
        await sessions.finalize_session(db, session, Usage(), settings.prices)
        _, generated = await accounts.create_api_key(db, owner.id)
    return {"path": f"/v1/sessions/{session.session_id}/transcript", "key": generated.key}


async def _count(plan: dict[str, str]) -> None:
    """Under callgrind: the hot read's instructions with the limiter and without."""
    import logging.config

    from transcripts.app import create_app
    from transcripts.observability import LOGGING_CONFIG
    from transcripts.state import app_state

    logging.config.dictConfig(LOGGING_CONFIG)  # as uvicorn applies it for transcripts serve
    settings = _settings(plan["url"], plan["directory"])
    apps = {
        "on": create_app(settings),
        "off": create_app(settings.model_copy(update={"rate_limit_enabled": False})),
    }
    request = (plan["path"], header_list({"X-API-Key": plan["key"]}))
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
            # Its once-a-minute write would weigh a hundred times more under valgrind.
            app_state(app).key_usage._interval = math.inf
            await read_concurrently(app, *request, 2 * CLIENTS, CLIENTS)
        _callgrind("--instr=on")
        _callgrind("--zero")
        _callgrind("--dump=floor")
        for round_number in range(ROUNDS):
            for side in ("on", "off") if round_number % 2 == 0 else ("off", "on"):
                _callgrind("--zero")
                await read_concurrently(apps[side], *request, READS, CLIENTS)
                _callgrind(f"--dump={side}-{round_number}")
        for app in apps.values():
            await app_state(app).key_usage.drain()


def instructions() -> None:
    from transcripts.migrate import upgrade_to_head

    with tempfile.TemporaryDirectory(prefix="transcripts-ratelimit-cost-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'cost.db'}"
        upgrade_to_head(url)
        plan = {"url": url, "directory": directory, **asyncio.run(_seed(_settings(url, "")))}
        (Path(directory) / "plan.json").write_text(json.dumps(plan))
        out = Path(directory) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.ratelimit_cost",
                "--count",
                str(Path(directory) / "plan.json"),
            ],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
            capture_output=True,
            timeout=3600,
        )
        counts = read_dumps(out)
    floor = counts.pop("floor")
    per_read = {label: (total - floor) / READS for label, total in counts.items()}
    on = statistics.median(v for label, v in per_read.items() if label.startswith("on"))
    off = statistics.median(v for label, v in per_read.items() if label.startswith("off"))
    print(
        f"hot read, instructions: {on:,.0f} with the rate limiter, {off:,.0f} without"
        f" (+{on - off:,.0f}, +{(on - off) / off:.1%}; without/with = {off / on:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--count", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.count is not None:
        import uvloop

        uvloop.run(_count(json.loads(arguments.count.read_text())))
    elif arguments.instructions:
        instructions()
    else:
        asyncio.run(storages())


if __name__ == "__main__":
    main()
