"""Soak: a real `transcripts serve` on a fresh PostgreSQL database, under writers and readers.

Writers drive sessions as the voice worker does: start one, append its turns in small
shuffled batches, resend some batches (retries) and some turns again (overlaps), finalize,
start the next. Readers read those sessions meanwhile, in both dialects, with an API key,
the key as a Bearer value and a JWT, and check every turn they see. At the end every
session is read back and every acknowledged turn must be there exactly once.

    make soak                      # 60 s
    SOAK_SECONDS=300 make soak     # longer; SOAK_WRITERS, SOAK_READERS (8 each) too

The database (created on TRANSCRIPTS_TEST_POSTGRES_ADMIN_URL's server, default the local
one) and the server are removed at the end, whatever happens. Exits non-zero when any
request failed or any turn was lost or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.load import server

TRANSCRIPTS = str(Path(sys.executable).with_name("transcripts"))
ADMIN_URL = os.environ.get(
    "TRANSCRIPTS_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WRITERS = int(os.environ.get("SOAK_WRITERS", "8"))
READERS = int(os.environ.get("SOAK_READERS", "8"))
WORDS = (
    "hello",
    "can",
    "you",
    "help",
    "me",
    "book",
    "a",
    "demo",
    "for",
    "next",
    "week",
    "sure",
    "what",
    "time",
    "works",
    "café",
    "東京",
    "🙂",
)


def expected_turn(session_id: str, index: int) -> dict[str, Any]:
    """Turn ``index`` of a session, the same whoever computes it: readers check against it."""
    rng = random.Random(f"{session_id}/{index}")
    return {
        "turn_index": index,
        "role": "assistant" if index % 2 == 0 else "user",
        "text": f"{index}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 60))),
        "ts": round(index * 1.25 + rng.random(), 3),
        "speaking_duration_seconds": round(rng.uniform(0.2, 9.0), 2),
        "was_interrupted": index % 2 == 0 and rng.random() < 0.1,
    }


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # session_id -> turn indexes the service acknowledged (a 200 for their batch)
    written: dict[str, set[int]] = field(default_factory=dict)
    finalized: set[str] = field(default_factory=set)

    def error(self, what: str) -> None:
        if len(self.errors) < 20:
            print(f"  error: {what}", file=sys.stderr)
        self.errors.append(what)


class Api:
    def __init__(self, http: httpx.AsyncClient, tally: Tally, credentials: list[dict[str, str]]):
        self.http = http
        self.tally = tally
        self.credentials = credentials

    async def call(
        self, kind: str, method: str, path: str, *, expect: int = 200, json_body: Any = None
    ) -> Any:
        headers = random.choice(self.credentials)
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, json=json_body, headers=headers)
        except httpx.HTTPError as exc:
            self.tally.error(f"{kind}: {type(exc).__name__}")
            return None
        self.tally.latencies.append(time.perf_counter() - started)
        self.tally.requests[kind] += 1
        if response.status_code != expect:
            self.tally.error(f"{kind}: {response.status_code} {response.text[:200]}")
            return None
        return response.json()


async def writer(api: Api, slug: str, deadline: float) -> None:
    tally = api.tally
    while time.monotonic() < deadline:
        started = await api.call(
            "start", "POST", "/api/agents/agent-session/", expect=201, json_body={"agent": slug}
        )
        if started is None:
            continue
        session_id = started["data"]["session_id"]
        stored = tally.written.setdefault(session_id, set())
        planned = random.randint(10, 120)
        cursor = 0
        while cursor < planned and time.monotonic() < deadline:
            indexes = list(range(cursor, min(planned, cursor + random.randint(1, 8))))
            cursor = indexes[-1] + 1
            if stored and random.random() < 0.2:  # overlap with turns already stored
                indexes += random.sample(sorted(stored), min(len(stored), 3))
            random.shuffle(indexes)
            batch = [expected_turn(session_id, index) for index in indexes]
            for attempt in range(2 if random.random() < 0.15 else 1):  # a retry, at times
                answer = await api.call(
                    "append",
                    "POST",
                    f"/api/agents/agent-session/{session_id}/turns/",
                    json_body=batch,
                )
                if answer is None:
                    break
                new = set(indexes) - stored
                if answer["data"]["inserted"] != len(new):
                    tally.error(
                        f"append: inserted {answer['data']['inserted']}, expected {len(new)}"
                        f" (attempt {attempt + 1})"
                    )
                stored |= new
        if cursor >= planned:
            finalized = await api.call(
                "finalize",
                "POST",
                f"/api/agents/agent-session/{session_id}/finalize/",
                json_body={"llm_input_tokens": planned * 20, "llm_provider": "openai"},
            )
            if finalized is not None:
                tally.finalized.add(session_id)


def check_turns(tally: Tally, where: str, session_id: str, seen: list[tuple[int, str]]) -> None:
    indexes = [index for index, _ in seen]
    if indexes != sorted(set(indexes)):
        tally.error(f"{where}: turns out of order or repeated in {session_id}")
    for index, text in seen:
        if text != expected_turn(session_id, index)["text"]:
            tally.error(f"{where}: turn {index} of {session_id} is not what was written")


async def reader(api: Api, deadline: float) -> None:
    tally = api.tally
    while time.monotonic() < deadline:
        if not tally.written:
            await asyncio.sleep(0.05)
            continue
        session_id = random.choice(list(tally.written))
        choice = random.random()
        if choice < 0.35:
            body = await api.call(
                "read agents", "GET", f"/api/agents/agent-session/{session_id}/transcript/"
            )
            if body is not None:
                turns = [(t["turn_index"], t["text"]) for t in body["data"]["transcript"]]
                check_turns(tally, "read agents", session_id, turns)
        elif choice < 0.7:
            body = await api.call("read anam", "GET", f"/v1/sessions/{session_id}/transcript")
            if body is not None:
                # Anam's messages carry no index: their texts say which turn each one is.
                texts = [m["message"] for m in body["messages"]]
                seen = [(int(text.split(":", 1)[0]), text) for text in texts]
                check_turns(tally, "read anam", session_id, seen)
        elif choice < 0.8:
            await api.call("read anam session", "GET", f"/v1/sessions/{session_id}")
        elif choice < 0.9:
            await api.call("list anam", "GET", "/v1/sessions?perPage=20")
        else:
            await api.call("session history", "GET", "/api/billing/usage/?page_size=20")


async def verify(api: Api) -> tuple[int, int, int]:
    """Reads every session back once more: (turns acknowledged, lost, duplicated)."""
    tally = api.tally
    acknowledged = lost = duplicated = 0
    for session_id, stored in tally.written.items():
        body = await api.call(
            "verify", "GET", f"/api/agents/agent-session/{session_id}/transcript/"
        )
        if body is None:
            lost += len(stored)
            continue
        indexes = Counter(turn["turn_index"] for turn in body["data"]["transcript"])
        acknowledged += len(stored)
        lost += len(stored - set(indexes))
        duplicated += sum(count - 1 for count in indexes.values())
        turns = [(t["turn_index"], t["text"]) for t in body["data"]["transcript"]]
        check_turns(tally, "verify", session_id, turns)
        if (body["data"]["finalized_at"] is not None) != (session_id in tally.finalized):
            tally.error(f"verify: {session_id} finalized state differs from what was acknowledged")
    return acknowledged, lost, duplicated


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    name = f"transcripts_soak_{secrets.token_hex(6)}"
    admin = ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}".replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )
    finally:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [TRANSCRIPTS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"transcripts {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


async def soak() -> int:
    async with fresh_database() as database_url:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRANSCRIPTS_")},
            "TRANSCRIPTS_DATABASE_URL": database_url,
            "TRANSCRIPTS_JWT_SECRET": secrets.token_hex(32),
        }
        run(env, "migrate")
        user = json.loads(
            run(env, "users", "create", "--email", "soak@example.com", "--tenant", "soak", "--json")
        )
        key = json.loads(run(env, "api-keys", "create", "--user", str(user["id"]), "--json"))["key"]
        token = run(
            env, "tokens", "mint", "--user", str(user["id"]), "--ttl", str(int(SECONDS) + 600)
        ).strip()
        credentials = [
            {"X-API-Key": key},
            {"Authorization": f"Bearer {key}"},
            {"Authorization": f"Bearer {token}"},
        ]
        with tempfile.TemporaryDirectory(prefix="transcripts-soak-") as scratch:
            log = Path(scratch) / "server.log"
            # The benchmark's server runner: same flags, pinned to the server core.
            with server("soak", [TRANSCRIPTS, "serve"], env, log, log.parent) as running:
                base_url = running.base_url
                return await drive(base_url, credentials, log)


async def drive(base_url: str, credentials: list[dict[str, str]], log: Path) -> int:
    tally = Tally()
    limits = httpx.Limits(
        max_connections=WRITERS + READERS, max_keepalive_connections=WRITERS + READERS
    )
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        api = Api(http, tally, credentials)
        slug = f"soak-{uuid.uuid4().hex[:8]}"
        if (
            await api.call(
                "character",
                "POST",
                "/api/ai-characters/",
                expect=201,
                json_body={"slug": slug, "name": "Soak"},
            )
            is None
        ):
            return 1
        print(
            f"soak: {SECONDS:g} s, {WRITERS} writers, {READERS} readers,"
            f" one uvicorn worker on PostgreSQL at {base_url}"
        )
        started = time.monotonic()
        deadline = started + SECONDS
        await asyncio.gather(
            *(writer(api, slug, deadline) for _ in range(WRITERS)),
            *(reader(api, deadline) for _ in range(READERS)),
        )
        elapsed = time.monotonic() - started
        under_load = sum(tally.requests.values())
        acknowledged, lost, duplicated = await verify(api)
        served = sum(tally.requests.values())

    latencies = sorted(tally.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    by_kind = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.requests.items()))
    print(
        f"requests served: {served} ({under_load} in {elapsed:.1f} s under load,"
        f" {under_load / elapsed:.0f}/s; the rest to verify): {by_kind}"
    )
    print(f"latency: p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(
        f"sessions: {len(tally.written)} ({len(tally.finalized)} finalized),"
        f" turns written: {acknowledged}"
    )
    print(f"errors: {len(tally.errors)}")
    print(f"turns lost: {lost}")
    print(f"turns duplicated: {duplicated}")
    if tally.errors or lost or duplicated:
        tail = (await asyncio.to_thread(log.read_text))[-3000:]
        print(f"server log, last lines:\n{tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(soak()))
