"""What the live transcript costs: latency across replicas, and memory per idle stream.

1. Latency. Two ``transcripts serve`` replicas on one PostgreSQL database. A worker appends
   1,000 turns, one request each, through replica A; a reader follows the session's stream
   on replica B. For each turn: the time from the append's acknowledgement (its 200 read by
   the worker) to the turn's event read by the reader, on one clock (both clients are this
   process). The worker appends the next turn once the event arrived, so each figure is one
   turn's trip, not a queue. Negative: the event arrived before the acknowledgement.
2. Memory. One worker process holds 1,000 open, idle streams (1,000 sessions, one stored turn
   each, read, then nothing); its resident memory before, at 500 and at 1,000: the increase
   over all 1,000, and over the second 500 (what one more stream costs once the process's
   pools and caches are warm), each per stream.

    python -m bench.streams            # prints the figures bench/STREAMS.md records

A fresh PostgreSQL database on the local server (dropped afterwards); servers on loopback.
A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from bench.load import RATE_LIMIT

ADMIN = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TURNS = int(os.environ.get("BENCH_STREAM_TURNS", "1000"))
STREAMS = int(os.environ.get("BENCH_IDLE_STREAMS", "1000"))
TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))
TEXT = "Could you tell me what the delivery window is for the order I placed this morning?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [TRANSCRIPTS, *args], env=env, check=True, capture_output=True, text=True
    ).stdout


@contextmanager
def _server(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with (
        log.open("w") as output,
        subprocess.Popen(
            [TRANSCRIPTS, "serve", "--port", str(port)], env=env, stdout=output, stderr=output
        ) as process,
    ):
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(base + "/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            yield base, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _start(client: httpx.AsyncClient, headers: dict[str, str], slug: str) -> str:
    response = await client.post(
        "/api/agents/agent-session/", json={"agent": slug}, headers=headers
    )
    response.raise_for_status()
    session_id: str = response.json()["data"]["session_id"]
    return session_id


def _turn(index: int) -> dict[str, object]:
    role = "assistant" if index % 2 == 0 else "user"
    return {"turn_index": index, "role": role, "text": TEXT, "ts": index * 3.0}


async def _latency(writer: str, reader: str, headers: dict[str, str], slug: str) -> list[float]:
    async with (
        httpx.AsyncClient(base_url=writer, timeout=30) as write,
        httpx.AsyncClient(base_url=reader, timeout=httpx.Timeout(30, read=None)) as read,
    ):
        session_id = await _start(write, headers, slug)
        received: dict[int, float] = {}
        arrived = asyncio.Event()
        opened = asyncio.Event()

        async def follow() -> None:
            path = f"/v1/sessions/{session_id}/transcript/stream"
            async with read.stream("GET", path, headers=headers) as response:
                response.raise_for_status()
                opened.set()
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        data = json.loads(line[6:])
                        if "turnIndex" in data:
                            received[data["turnIndex"]] = time.perf_counter()
                            arrived.set()

        follower = asyncio.create_task(follow())
        await opened.wait()
        await asyncio.sleep(0.5)  # the stream's first read is done: it waits for notices
        latencies = []
        path = f"/api/agents/agent-session/{session_id}/turns/"
        for index in range(TURNS):
            arrived.clear()
            response = await write.post(path, json=[_turn(index)], headers=headers)
            acknowledged = time.perf_counter()
            response.raise_for_status()
            while index not in received:
                await asyncio.wait_for(arrived.wait(), 10)
                arrived.clear()
            latencies.append((received[index] - acknowledged) * 1000)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        return latencies


async def _open_idle_streams(
    base: str, headers: dict[str, str], session_ids: list[str]
) -> list[asyncio.StreamWriter]:
    """A raw connection per session, each reading its stream until the stored turn."""
    port = int(base.rsplit(":", 1)[1])
    ((name, value),) = headers.items()

    async def one(session_id: str) -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /v1/sessions/{session_id}/transcript/stream HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\n{name}: {value}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        seen = b""
        while b"event: turn" not in seen:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"stream of {session_id} ended: {seen[:300]!r}")
            seen += chunk
        return writer

    writers = []
    for start in range(0, len(session_ids), 20):
        writers += await asyncio.gather(*(one(s) for s in session_ids[start : start + 20]))
    return writers


async def _idle_memory(
    writer: str, server: str, pid: int, headers: dict[str, str], slug: str
) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=writer, timeout=30) as client:
        session_ids = []
        for _ in range(STREAMS + 20):
            session_id = await _start(client, headers, slug)
            path = f"/api/agents/agent-session/{session_id}/turns/"
            (await client.post(path, json=[_turn(0)], headers=headers)).raise_for_status()
            session_ids.append(session_id)
    # Warm up: the code paths and the pool are loaded before the baseline is read.
    warm = await _open_idle_streams(server, headers, session_ids[:20])
    for connection in warm:
        connection.close()
    await asyncio.sleep(2)
    before = _rss_kib(pid)
    half = STREAMS // 2
    started = time.perf_counter()
    streams = await _open_idle_streams(server, headers, session_ids[20 : 20 + half])
    await asyncio.sleep(3)
    middle = _rss_kib(pid)
    streams += await _open_idle_streams(server, headers, session_ids[20 + half :])
    opened_in = time.perf_counter() - started
    await asyncio.sleep(5)  # idle: heartbeats only
    after = _rss_kib(pid)
    for connection in streams:
        connection.close()
    return {
        "streams": len(streams),
        "rss_before_mib": before / 1024,
        "rss_middle_mib": middle / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_stream": (after - before) / len(streams),
        "kib_per_stream_second_half": (after - middle) / (len(streams) - half),
        "opened_in_s": opened_in,
    }


def main() -> None:
    database = f"transcripts_streams_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    url = f"{ADMIN.rsplit('/', 1)[0]}/{database}".replace("postgresql://", "postgresql+asyncpg://")
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")
    } | {
        "TRANSCRIPTS_DATABASE_URL": url,
        "TRANSCRIPTS_ENVIRONMENT": "development",
        "TRANSCRIPTS_JWT_SECRET": "streams-bench-" + "x" * 40,
        "TRANSCRIPTS_RATE_LIMIT": RATE_LIMIT,
        "TRANSCRIPTS_DB_POOL_SIZE": "10",
        "TRANSCRIPTS_MAX_CONCURRENT_SESSIONS_PER_CHARACTER": "100000",
        "TRANSCRIPTS_STREAM_MAX_PER_CALLER": str(STREAMS + 100),
        "TRANSCRIPTS_MAX_CONNECTIONS": str(STREAMS + 200),
    }
    logs = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="bench-streams-"))
    try:
        _cli(env, "migrate")
        user = json.loads(
            _cli(env, "users", "create", "--email", "s@example.com", "--tenant", "s", "--json")
        )
        key = json.loads(_cli(env, "api-keys", "create", "--user", str(user["id"]), "--json"))
        headers = {"X-API-Key": key["key"]}
        with (
            _server(env, logs / "streams-a.log") as (writer, _),
            _server(env, logs / "streams-b.log") as (reader, reader_pid),
        ):
            created = httpx.post(
                writer + "/api/ai-characters/",
                json={"slug": "streams", "name": "Streams"},
                headers=headers,
                timeout=30,
            )
            created.raise_for_status()
            latencies = asyncio.run(_latency(writer, reader, headers, "streams"))
            gc.collect()
            memory = asyncio.run(_idle_memory(writer, reader, reader_pid, headers, "streams"))
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"turns: {len(latencies)}")
    print(
        "append acknowledged -> event received on the other replica (ms):"
        f" p50 {statistics.median(latencies):.2f}, p99 {_percentile(latencies, 0.99):.2f},"
        f" max {max(latencies):.2f}, min {min(latencies):.2f};"
        f" event before acknowledgement: {sum(value < 0 for value in latencies)}"
    )
    print(
        f"idle streams on one worker: {memory['streams']:.0f}, opened in"
        f" {memory['opened_in_s']:.1f} s; RSS {memory['rss_before_mib']:.1f} MiB ->"
        f" {memory['rss_middle_mib']:.1f} MiB (half) -> {memory['rss_after_mib']:.1f} MiB:"
        f" {memory['kib_per_stream']:.1f} KiB per stream overall,"
        f" {memory['kib_per_stream_second_half']:.1f} KiB per stream of the second half"
    )


if __name__ == "__main__":
    main()
