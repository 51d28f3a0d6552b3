"""LiveKit access tokens: what a participant shows a LiveKit server to join a session's room.

The token is LiveKit's documented JWT (HS256 with the API secret, ``iss`` = API key,
``sub`` = participant identity, a ``video`` grant), so any LiveKit server with the same
key pair accepts it; no LiveKit SDK is needed to mint one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from transcripts.settings import Settings

__all__ = ["LiveKit"]


@dataclass(frozen=True, slots=True)
class LiveKit:
    url: str
    api_key: str
    api_secret: str

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveKit | None:
        if not (settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret):
            return None
        return cls(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret.get_secret_value(),
        )

    def access_token(self, *, identity: str, room: str, ttl_seconds: int) -> str:
        now = datetime.now(UTC)
        claims = {
            "iss": self.api_key,
            "sub": identity,
            "name": identity,
            "nbf": now,
            "exp": now + timedelta(seconds=ttl_seconds),
            "video": {"roomJoin": True, "room": room, "canPublish": True, "canSubscribe": True},
        }
        return jwt.encode(claims, self.api_secret, algorithm="HS256")
