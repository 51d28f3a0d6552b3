"""Service configuration, read from ``TRANSCRIPTS_*`` environment variables (or a ``.env`` file).

S3 credentials are deliberately absent: they come from the standard AWS chain.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from transcripts.pricing import DEFAULT_PRICES, PriceTable

__all__ = ["DEFAULT_DATABASE_URL", "Settings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./transcripts.db"
MIN_JWT_SECRET_BYTES = 32
# Values copied from examples and tutorials; a deployment that still carries one is misconfigured.
PLACEHOLDER_SECRETS = frozenset({"secret", "demo", "insecure"})
PLACEHOLDER_MARKERS = ("changethis", "changeme", "change-me", "change_me")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRANSCRIPTS_", env_file=".env", extra="ignore", frozen=True
    )

    # "demo" is what `transcripts demo` runs as; it is the only mode allowed a generated secret.
    environment: Literal["production", "development", "demo"] = "production"

    database_url: str = DEFAULT_DATABASE_URL
    # The pool keeps db_pool_size connections; an overflow connection is closed as soon as it
    # is returned, so every burst above the pool would pay a connection set-up (TLS included)
    # per request. Hence a pool as large as the concurrency a worker serves, and no overflow.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=10.0, gt=0)

    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=0, ge=0)

    # Recordings. "local" (the embedded default) keeps them in a directory and serves them
    # through signed links; "s3" presigns against S3. S3 credentials come from the standard
    # AWS chain, never from here.
    recordings_backend: Literal["local", "s3"] = "local"
    recordings_dir: str = "./recordings"
    recordings_signing_key: SecretStr | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    presign_ttl_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)

    # JSON, e.g. {"llm": {"openai/gpt-4o-mini": {...}}, "stt": {...}, "tts": {...}}.
    prices: PriceTable = DEFAULT_PRICES

    # With all three set, a session start also answers a LiveKit access token and the URL.
    livekit_url: str | None = None
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None

    # The HTTP server's own bounds, per worker process (transcripts.server).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    max_requests_in_flight: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Settings:
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else None
        if secret is None:
            return self
        lowered = secret.strip().lower()
        if lowered in PLACEHOLDER_SECRETS or any(mark in lowered for mark in PLACEHOLDER_MARKERS):
            raise ValueError("TRANSCRIPTS_JWT_SECRET is a placeholder value; set a random secret")
        if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(
                f"TRANSCRIPTS_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes long"
            )
        return self

    @model_validator(mode="after")
    def _livekit_all_or_nothing(self) -> Settings:
        given = [self.livekit_url, self.livekit_api_key, self.livekit_api_secret]
        if any(value is not None for value in given) and None in given:
            raise ValueError(
                "set all of TRANSCRIPTS_LIVEKIT_URL, TRANSCRIPTS_LIVEKIT_API_KEY and"
                " TRANSCRIPTS_LIVEKIT_API_SECRET, or none of them"
            )
        return self

    @property
    def database_backend(self) -> Literal["postgresql", "sqlite"]:
        if self.database_url.startswith("postgresql"):
            return "postgresql"
        if self.database_url.startswith("sqlite"):
            return "sqlite"
        raise ValueError(
            "TRANSCRIPTS_DATABASE_URL must be a postgresql+asyncpg or sqlite+aiosqlite URL"
        )
