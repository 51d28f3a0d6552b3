"""Test data, written through the service's own write functions and committed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import update

from transcripts.db.engine import Database
from transcripts.db.tables import User
from transcripts.domain import CharacterRecord, NewTurn, RecordingStatus, SessionRef, UserRecord
from transcripts.pricing import Usage
from transcripts.services import accounts, sessions
from transcripts.settings import Settings


@dataclass(frozen=True)
class Keys:
    hs_secret: str
    rsa_private: rsa.RSAPrivateKey
    rsa_public_pem: str
    ec_private: ec.EllipticCurvePrivateKey
    ec_public_pem: str


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


SEED_USAGE = Usage(
    llm_input_tokens=1840,
    llm_output_tokens=612,
    llm_model="gpt-4o-mini",
    llm_provider="openai",
    stt_audio_seconds=92.3,
    stt_provider="openai",
    tts_characters=1284,
    tts_provider="chatterbox",
)


class Factory:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    async def user(self, *, tenant: str | None = None, staff: bool = False) -> UserRecord:
        async with self.database.sessionmaker.begin() as db:
            return await accounts.create_user(
                db,
                f"{unique('user')}@example.com",
                tenant_slug=tenant or unique("tenant"),
                is_staff=staff,
            )

    async def tenant_slug(self, user: UserRecord) -> str:
        return user.tenant_slug or ""

    async def deactivate(self, user: UserRecord) -> None:
        async with self.database.sessionmaker.begin() as db:
            await db.execute(update(User).where(User.id == user.id).values(is_active=False))

    async def api_key(self, user: UserRecord) -> tuple[int, str]:
        async with self.database.sessionmaker.begin() as db:
            api_key, generated = await accounts.create_api_key(db, user.id, "test")
            return api_key.id, generated.key

    async def revoke(self, api_key_id: int) -> None:
        async with self.database.sessionmaker.begin() as db:
            await accounts.revoke_api_key(db, api_key_id)

    async def character(self, owner: UserRecord, **options: Any) -> CharacterRecord:
        async with self.database.sessionmaker.begin() as db:
            return await accounts.create_character(
                db,
                owner.id,
                slug=options.pop("slug", unique("bot")),
                name=options.pop("name", "Cara"),
                **options,
            )

    async def session(
        self,
        character: CharacterRecord,
        *,
        user_id: int | None = None,
        turns: Sequence[NewTurn] = (),
        usage: Usage | None = None,
        started_at: datetime | None = None,
        duration_seconds: float | None = None,
        recording_url: str | None = None,
        **options: Any,
    ) -> SessionRef:
        started_at = started_at or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        async with self.database.sessionmaker.begin() as db:
            session = await sessions.start_session(
                db, character, user_id=user_id, started_at=started_at, **options
            )
            await sessions.append_turns(db, session, turns)
            if usage is not None:
                session = await sessions.finalize_session(
                    db,
                    session,
                    usage,
                    self.settings.prices,
                    ended_at=started_at + timedelta(seconds=duration_seconds or 60),
                    # As if the store had found the object (tests of the check go over HTTP).
                    recording=sessions.RegisteredRecording(recording_url, RecordingStatus.READY)
                    if recording_url
                    else None,
                )
            return session

    def token(
        self, user_id: int | str | None, *, key: Any = None, algorithm: str = "HS256", **claims: Any
    ) -> str:
        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "token_type": "access",
            "user_id": user_id,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + timedelta(minutes=5),
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        signing_key = key if key is not None else self.settings.jwt_secret.get_secret_value()  # type: ignore[union-attr]
        return jwt.encode(payload, signing_key, algorithm=algorithm)


def turns(*pairs: tuple[str, str], spacing: float = 2.5) -> list[NewTurn]:
    return [
        NewTurn(turn_index=index, role=role, text=text, ts=round(0.42 + index * spacing, 2))  # type: ignore[arg-type]
        for index, (role, text) in enumerate(pairs)
    ]
