"""What very long transcripts cost a server: the outside test's flood of issue 16, item 4.

A worker writes as many turns as the server takes into 20 sessions (5,000 turns of about
2 KB each, 10 MB a session, in batches of 100); then 20 clients read all 20 transcripts at
once, several rounds, while another client times ``/healthz``. It prints what the server
stored, its resident memory before and at the peak of the reads, and ``/healthz``'s
latency meanwhile.

    python -m bench.long_reads                      # the service in this checkout
    python -m bench.long_reads --src /tmp/old/src   # another version's src/, e.g. before

It runs on a fresh PostgreSQL database (dropped afterwards) on the local server, one
``transcripts serve`` worker on loopback. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.load import RATE_LIMIT, peak_rss_while

ADMIN = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SESSIONS = 20
TURNS = 5_000
BATCH = 100
READ_ROUNDS = 3
TEXT = ("I would like to go over every line of the invoice once more, slowly. " * 30)[:2_000]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _python(src: Path, code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return result.stdout


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _fill(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    slug = f"long-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/api/ai-characters/", json={"slug": slug, "name": "L"}, headers=headers
    )
    created.raise_for_status()
    session_ids = []
    for _ in range(SESSIONS):
        started = await client.post(
            "/api/agents/agent-session/", json={"agent": slug}, headers=headers
        )
        session_ids.append(started.json()["data"]["session_id"])

    async def write(session_id: str) -> None:
        for first in range(0, TURNS, BATCH):
            batch = [
                {
                    "turn_index": i,
                    "role": "user" if i % 2 else "assistant",
                    "text": TEXT,
                    "ts": float(i),
                }
                for i in range(first, first + BATCH)
            ]
            answer = await client.post(
                f"/api/agents/agent-session/{session_id}/turns/", json=batch, headers=headers
            )
            if answer.status_code != 200:  # the cap: the server refuses the rest
                return

    await asyncio.gather(*(write(session_id) for session_id in session_ids))
    return session_ids


async def _read_while_probing(
    client: httpx.AsyncClient, headers: dict[str, str], session_ids: list[str]
) -> tuple[list[float], list[int]]:
    probes: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=60) as prober:
            while not done.is_set():
                started = time.perf_counter()
                await prober.get("/healthz")
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

    async def read(session_id: str) -> int:
        answer = await client.get(f"/v1/sessions/{session_id}/transcript", headers=headers)
        return len(answer.content)

    prober = asyncio.create_task(probe())
    sizes: list[int] = []
    for _ in range(READ_ROUNDS):
        sizes = await asyncio.gather(*(read(session_id) for session_id in session_ids))
    done.set()
    await prober
    return probes, sizes


async def _write(base: str, headers: dict[str, str]) -> tuple[list[str], int]:
    """Fill the sessions; the turns the server stored in one of them."""
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=_LIMITS) as client:
        session_ids = await _fill(client, headers)
        first = await client.get(
            f"/api/agents/agent-session/{session_ids[0]}/transcript/", headers=headers
        )
        return session_ids, int(first.json()["data"]["turn_count"])


async def _read(
    base: str, headers: dict[str, str], session_ids: list[str]
) -> tuple[list[float], list[int]]:
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=_LIMITS) as client:
        return await _read_while_probing(client, headers, session_ids)


_LIMITS = httpx.Limits(max_connections=SESSIONS + 5)


def measure(src: Path) -> dict[str, object]:
    database = f"transcripts_long_reads_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    url = f"{ADMIN.rsplit('/', 1)[0]}/{database}".replace("postgresql://", "postgresql+asyncpg://")
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("TRANSCRIPTS_")
    } | {
        "TRANSCRIPTS_DATABASE_URL": url,
        "TRANSCRIPTS_ENVIRONMENT": "development",
        "TRANSCRIPTS_JWT_SECRET": "long-reads-" + "x" * 40,
        # The writer and readers are one client: measured, never throttled.
        "TRANSCRIPTS_RATE_LIMIT": RATE_LIMIT,
    }
    cli = "from transcripts.cli import main; main({})"
    try:
        _python(src, cli.format("['migrate']"), env)
        user = json.loads(
            _python(
                src,
                cli.format(
                    "['users', 'create', '--email', 'l@example.com', '--tenant', 'l', '--json']"
                ),
                env,
            )
        )
        key = json.loads(
            _python(
                src, cli.format(f"['api-keys', 'create', '--user', '{user['id']}', '--json']"), env
            )
        )["key"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with subprocess.Popen(
            [sys.executable, "-c", cli.format(f"['serve', '--port', '{port}']")],
            env={**env, "PYTHONPATH": str(src)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as server:
            try:
                _wait_for(base)
                headers = {"X-API-Key": key}
                session_ids, stored = asyncio.run(_write(base, headers))
                with peak_rss_while(server.pid) as rss:
                    probes, sizes = asyncio.run(_read(base, headers, session_ids))
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    return {
        "turns stored per session": stored,
        "body per read (MB)": round(statistics.mean(sizes) / 1e6, 2),
        "RSS before the reads (MiB)": round(rss["idle_kib"] / 1024),
        "RSS peak during 20 concurrent reads (MiB)": round(rss["peak_kib"] / 1024),
        "/healthz p50 / max during the reads (ms)": (
            f"{statistics.median(probes) * 1000:.0f} / {max(probes) * 1000:.0f}"
        ),
    }


def _wait_for(base: str) -> None:
    for _ in range(600):
        try:
            httpx.get(base + "/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    args = parser.parse_args()
    for name, value in measure(args.src.resolve()).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
