"""What the write path's tests share: its paths, the seed's usage, a worker driving a session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.factories import SEED_USAGE, Factory, unique
from transcripts.demo import SEED_EXAMPLE_TURNS
from transcripts.domain import UserRecord

CHARACTERS = "/api/ai-characters/"
START = "/api/agents/agent-session/"
TURNS = "/api/agents/agent-session/{}/turns/"
FINALIZE = "/api/agents/agent-session/{}/finalize/"
RECORDING_UPLOAD = "/api/agents/agent-session/{}/recording/upload/"
TRANSCRIPT = "/api/agents/agent-session/{}/transcript/"
BILLING = "/api/billing/sessions/{}/"

# README.md, "Price table": what the seed's example usage costs with the shipped prices.
SEED_COST = "0.009873"
SEED_USAGE_BODY = {
    "llm_input_tokens": SEED_USAGE.llm_input_tokens,
    "llm_output_tokens": SEED_USAGE.llm_output_tokens,
    "llm_model": SEED_USAGE.llm_model,
    "llm_provider": SEED_USAGE.llm_provider,
    "stt_audio_seconds": SEED_USAGE.stt_audio_seconds,
    "stt_provider": SEED_USAGE.stt_provider,
    "tts_characters": SEED_USAGE.tts_characters,
    "tts_provider": SEED_USAGE.tts_provider,
}


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "message": "OK", "data": data, "errors": None}


def failure(message: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "success": False,
        "message": message,
        "data": None,
        "errors": errors or {"detail": [message]},
    }


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seed_turn(index: int) -> dict[str, Any]:
    """Turn ``index`` of Oshara's example conversation, as a worker sends it."""
    role, text = SEED_EXAMPLE_TURNS[index]
    return {
        "turn_index": index,
        "role": role,
        "text": text,
        "ts": round(0.42 + index * 12.8, 2),
        "speaking_duration_seconds": round(len(text) / 15, 2),
        "was_interrupted": index in (4, 8),
    }


class Worker:
    """Drives sessions over HTTP the way the voice worker does."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def character(self, slug: str | None = None, **fields: Any) -> str:
        slug = slug or unique("bot")
        response = await self.client.post(
            CHARACTERS, json={"slug": slug, "name": "Cara", **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return slug

    async def start(self, slug: str, **fields: Any) -> str:
        response = await self.client.post(
            START, json={"agent": slug, **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        session_id: str = response.json()["data"]["session_id"]
        return session_id

    async def turns(self, session_id: str, batch: Any) -> httpx.Response:
        return await self.client.post(TURNS.format(session_id), json=batch, headers=self.headers)

    async def finalize(self, session_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(FINALIZE.format(session_id), json=body, headers=self.headers)

    async def read(self, session_id: str) -> dict[str, Any]:
        response = await self.client.get(TRANSCRIPT.format(session_id), headers=self.headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


async def owner_worker(
    client: httpx.AsyncClient, factory: Factory, *, jwt_auth: bool = False, tenant: str = ""
) -> tuple[UserRecord, Worker]:
    owner = await factory.user(tenant=tenant or None)
    if jwt_auth:
        return owner, Worker(client, {"Authorization": f"Bearer {factory.token(owner.id)}"})
    _, key = await factory.api_key(owner)
    return owner, Worker(client, {"X-API-Key": key})


class _AnyLink:
    """Equal to any non-empty string: the recording link and its expiry change per read."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<a fresh signed link>"


ANY_LINK = _AnyLink()


async def deactivate_character(factory: Factory, character_id: int) -> None:
    from sqlalchemy import update

    from transcripts.db.tables import Character

    async with factory.database.sessionmaker.begin() as db:
        await db.execute(
            update(Character).where(Character.id == character_id).values(is_active=False)
        )
