"""A GET straight through an ASGI application, with no HTTP server or client around it.

What the in-process measurements use (``bench/guard.py``, ``bench/instructions.py``):
uvicorn and the load generator are the same for the service and its baseline, so leaving
them out leaves exactly what the two applications do differently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message

__all__ = ["asgi_get", "header_list", "read_concurrently"]


def header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as an ASGI scope carries them: lower-case names, latin-1 bytes."""
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]


async def asgi_get(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    """The status and body of ``GET path``."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


async def read_concurrently(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], reads: int, clients: int
) -> None:
    """``reads`` GETs of ``path`` by ``clients`` concurrent clients, each answered 200."""

    async def client() -> None:
        for _ in range(reads // clients):
            status, _ = await asgi_get(app, path, headers)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")

    await asyncio.gather(*(client() for _ in range(clients)))
