"""What the rate limiter adds to one request, in process: the figures behind the choice of
storage in ``src/transcripts/ratelimit.py``.

The middleware wraps an application that answers at once, and is called the way uvicorn
calls it (the event loop runs between requests, so tasks a storage starts do run), by
clients with 1 to 10,000 different API keys, each with a window open. For each storage the
script prints the CPU time per request with and without the limiter (the best of a few
rounds; a loaded machine only adds to them): ``limits``' own async MemoryStorage, whose
upkeep walks every key after every increment, and ``MemoryWindows``, the service's.

Run with ``python -m bench.ratelimit_cost``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from limits.aio.storage import MemoryStorage, Storage
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.load import RATE_LIMIT
from transcripts.auth import TokenVerifier, generate_api_key
from transcripts.ratelimit import MemoryWindows, Rate, RateLimiter, RateLimits
from transcripts.settings import Settings

ROUNDS = 3
IDENTITIES = (1, 100, 1000, 10000)


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
    rate = Rate.parse(RATE_LIMIT)
    limiter = RateLimiter(storage(), per_credential=rate, anonymous=rate)
    verifier = TokenVerifier(Settings(_env_file=None))  # type: ignore[call-arg]
    limited = RateLimits(_answer, limiter, ["/v1"], verifier, render_error=lambda *_: None)
    scopes = [_scope(generate_api_key().key) for _ in range(identities)]
    for scope in scopes:  # every window open
        await limited(scope, _receive, _send)
    bare = min([await _microseconds(_answer, scopes, requests) for _ in range(ROUNDS)])
    wrapped = min([await _microseconds(limited, scopes, requests) for _ in range(ROUNDS)])
    return wrapped - bare


async def main() -> None:
    storages: dict[str, Callable[[], Storage]] = {
        "limits MemoryStorage": MemoryStorage,
        "MemoryWindows": MemoryWindows,
    }
    for name, storage in storages.items():
        for identities in IDENTITIES:
            # Enough requests to visit every key, fewer where each one walks them all.
            requests = max(identities, 2000) if name == "MemoryWindows" else 2000
            microseconds = await cost(storage, identities, requests)
            print(f"{name:>22}, {identities:>6} clients: +{microseconds:7.1f} µs a request")


if __name__ == "__main__":
    asyncio.run(main())
