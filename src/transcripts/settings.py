"""Service configuration, read from ``TRANSCRIPTS_*`` environment variables (or a ``.env`` file).

S3 credentials are deliberately absent: they come from the standard AWS chain.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from transcripts.domain import SessionLimits
from transcripts.pricing import DEFAULT_PRICES, PriceTable
from transcripts.recording_keys import PrefixTemplate, validate_bucket

__all__ = ["DEFAULT_DATABASE_URL", "RATE_LIMIT_REDIS_SCHEMES", "Settings"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./transcripts.db"
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
# Values copied from examples and tutorials; a deployment that still carries one is misconfigured.
PLACEHOLDER_SECRETS = frozenset({"secret", "demo", "insecure"})
PLACEHOLDER_MARKERS = ("changethis", "changeme", "change-me", "change_me")
MIN_METRICS_TOKEN_CHARACTERS = 16
RATE_LIMIT_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


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
    # Which keys a caller may register (DESIGN.md, "Recordings"): under this template with
    # {tenant} the session's tenant slug, e.g. s3://recordings/{tenant}/; unset, only keys the
    # service handed out (uploads/<tenant>/<session>/<random>.<ext> in the upload bucket).
    recordings_prefix: str | None = None
    recordings_upload_bucket: str = "recordings"
    # The local store's cap on one upload (S3 enforces its own, 5 GB per PUT).
    recordings_max_upload_bytes: int = Field(default=1024**3, ge=1)
    # The service's address as players reach it: the local store's links are built from it,
    # never from a request's Host header.
    public_url: str = "http://127.0.0.1:8000"

    # What one session may hold. A two-hour call is about 2,000 turns and 200 KB of text;
    # the caps keep a runaway worker from growing one transcript (and every read of it)
    # without bound.
    max_turns_per_session: int = Field(default=10_000, ge=1, le=2**31 - 1)
    max_transcript_bytes: int = Field(default=2 * 1024 * 1024, ge=1)

    # Full-text search on PostgreSQL: the text-search configuration of turns.search_vector
    # (stemming and stop words of a language; `simple` for none). The migration builds the
    # column with it; after changing it, run `transcripts search-reindex`.
    search_config: str = Field(
        default="english", pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$"
    )

    # JSON, e.g. {"llm": {"openai/gpt-4o-mini": {...}}, "stt": {...}, "tts": {...}}.
    prices: PriceTable = DEFAULT_PRICES

    # With all three set, a session start also answers a LiveKit access token and the URL.
    livekit_url: str | None = None
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None

    # Browser origins allowed to call the API from a page (the dashboard's), comma-separated,
    # e.g. "https://app.example.com,https://admin.example.com". The widget routes also admit
    # each active character's allowed_origins. Empty: no other page may read an answer.
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # The widget's preflights are granted from the active characters' origins as read at
    # most this long ago (transcripts.widget_origins): a flood of them reads the database
    # once per period. A change made through this process counts at once.
    widget_origins_ttl_seconds: float = Field(default=10.0, gt=0, le=3600)

    # When set, /metrics answers only `Authorization: Bearer <this token>` (Prometheus's
    # `authorization.credentials_file`); the probes stay open.
    metrics_token: SecretStr | None = None

    # Proxies whose X-Forwarded-For/-Proto uvicorn believes (comma-separated addresses or
    # networks, or "*"): the client address the anonymous rate limit counts, and the scheme.
    # Anyone else's X-Forwarded-* is ignored. Loopback only by default, for a proxy on the
    # same host; behind a load balancer, its addresses.
    forwarded_allow_ips: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.1", "::1")

    # The HTTP server's own bounds, per worker process (transcripts.server).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    max_requests_in_flight: int = Field(default=256, ge=1)
    # A request's body must arrive within body_timeout_seconds, plus a second for every
    # body_min_rate_bytes received (Apache's mod_reqtimeout "body=20,MinRate=500"): a client
    # trickling a body cannot hold a request slot for ever, a slow but steady upload can.
    body_timeout_seconds: float = Field(default=20.0, gt=0)
    body_min_rate_bytes: int = Field(default=500, ge=1)

    # Rate limits (README, "Rate limits"): requests per window for each API key or token
    # user, and for each client address sending no valid credentials (the widget); counted
    # in the process (memory://) or in Redis shared by every replica (redis://host:port/db).
    rate_limit_enabled: bool = True
    rate_limit: str = "1200/minute"
    rate_limit_anonymous: str = "120/minute"
    rate_limit_storage_url: str = "memory://"
    # Oshara's 429 at session start: sessions of one character in progress at once. A
    # session counts until finalized, or until it started this long ago (a worker that died
    # mid-call never finalizes).
    max_concurrent_sessions_per_character: int = Field(default=50, ge=1)
    concurrent_session_window_seconds: int = Field(default=2 * 3600, ge=60)

    # Webhooks (DESIGN.md, "Webhooks"). Targets must be https on a public address unless
    # private targets are allowed (then http and loopback too: tests, development).
    webhook_allow_private_targets: bool = False
    # A 2xx within this is a success; anything else, or nothing, is a failed attempt.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Seconds from a failed attempt to the next, comma-separated: one retry each.
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    )
    # An endpoint whose every attempt failed for this long is disabled (five days).
    webhook_disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    # Above this, session.finalized leaves the transcript out (and says so).
    webhook_max_payload_bytes: int = Field(default=512 * 1024, ge=1024)
    # The deliverer wakes at once after a commit that wrote an event in this process; this
    # is how often it also looks for events written by other replicas and for due retries.
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # Attempts in flight at once, per process.
    webhook_concurrency: int = Field(default=32, ge=1, le=1000)
    webhook_deliverer_enabled: bool = True

    # Data rights (README, "Data rights"): a session is deleted, with its recording, this
    # many days after it started, unless its character sets retention_days; unset: kept.
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    # How often each replica offers to sweep (one replica at a time sweeps: PostgreSQL's
    # advisory lock): expired sessions, and recording deletions due to be tried again.
    retention_sweep_seconds: float = Field(default=300.0, gt=0)
    # The live transcript (README, "Live transcripts"), per worker process.
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    stream_max_per_caller: int = Field(default=20, ge=1)
    # A stream that has had nothing to send for this long ends (a worker that died mid-call
    # never finalizes); the client may connect again with Last-Event-ID.
    stream_idle_seconds: float = Field(default=1800.0, gt=0)
    # Notices a stream may have waiting; past this it has fallen behind and is dropped.
    stream_queue_size: int = Field(default=64, ge=1)
    # A send the client leaves unread this long ends the stream.
    stream_send_timeout_seconds: float = Field(default=30.0, gt=0)
    # The `retry:` hint (milliseconds) sent to open streams when the server shuts down.
    stream_retry_ms: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        # Every HMAC key: the JWT secret (HS256), the local store's link signatures, and the
        # LiveKit secret the service signs access tokens with (LiveKit asks 32 characters).
        for name, secret in (
            ("JWT_SECRET", self.jwt_secret),
            ("RECORDINGS_SIGNING_KEY", self.recordings_signing_key),
            ("LIVEKIT_API_SECRET", self.livekit_api_secret),
        ):
            if secret is not None:
                _refuse_weak_secret(f"TRANSCRIPTS_{name}", secret.get_secret_value())
        return self

    @model_validator(mode="after")
    def _public_key_is_one(self) -> Settings:
        if self.jwt_public_key is not None:
            jwt_verification_key(self.jwt_public_key)
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

    @model_validator(mode="after")
    def _recording_keys_are_valid(self) -> Settings:
        if self.recordings_prefix is not None:
            PrefixTemplate.parse(self.recordings_prefix)
        try:
            validate_bucket(self.recordings_upload_bucket)
        except ValueError as exc:
            raise ValueError(f"TRANSCRIPTS_RECORDINGS_UPLOAD_BUCKET: {exc}") from None
        url = urlsplit(self.public_url)
        if url.scheme not in {"http", "https"} or not url.hostname or url.query or url.fragment:
            raise ValueError(
                f"TRANSCRIPTS_PUBLIC_URL {self.public_url!r} must be an http(s) URL such as"
                " https://transcripts.example.com"
            )
        return self

    @property
    def session_limits(self) -> SessionLimits:
        return SessionLimits(self.max_turns_per_session, self.max_transcript_bytes)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(float(entry) for entry in value.split(",") if entry.strip())
            except ValueError:
                raise ValueError("must be seconds, comma-separated (e.g. 5,300,1800)") from None
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_delays_non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must not be negative")
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _forwarded_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(entry.strip() for entry in value.split(",") if entry.strip())
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_only(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        for entry in entries:
            if entry == "*":
                continue
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"TRANSCRIPTS_FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or"
                    " network (e.g. 10.0.0.0/8), nor *"
                ) from None
        return entries

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_only(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        # A browser's Origin is scheme://host[:port], lowercased: an entry with a path (a
        # trailing slash, say) would never match, so it is refused here, not ignored later.
        for origin in origins:
            if not _is_origin(origin):
                raise ValueError(
                    f"TRANSCRIPTS_CORS_ALLOW_ORIGINS: {origin!r} is not an origin"
                    " (scheme://host[:port], no path)"
                )
        return tuple(origin.lower() for origin in origins)

    @model_validator(mode="after")
    def _metrics_token_long_enough(self) -> Settings:
        token = self.metrics_token.get_secret_value() if self.metrics_token else None
        if token is not None and len(token) < MIN_METRICS_TOKEN_CHARACTERS:
            raise ValueError(
                "TRANSCRIPTS_METRICS_TOKEN must be at least"
                f" {MIN_METRICS_TOKEN_CHARACTERS} characters long"
            )
        return self

    @field_validator("rate_limit", "rate_limit_anonymous")
    @classmethod
    def _one_rate(cls, value: str) -> str:
        rates = parse_many(value)  # ValueError for what the limits library cannot read
        if len(rates) != 1 or rates[0].amount < 1:
            raise ValueError(f"{value!r} is not one rate of at least 1 (e.g. '600/minute')")
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        if value != "memory://" and not value.startswith(RATE_LIMIT_REDIS_SCHEMES):
            raise ValueError("must be memory:// or a redis://, rediss:// or redis+unix:// URL")
        return value

    @property
    def database_backend(self) -> Literal["postgresql", "sqlite"]:
        if self.database_url.startswith("postgresql"):
            return "postgresql"
        if self.database_url.startswith("sqlite"):
            return "sqlite"
        raise ValueError(
            "TRANSCRIPTS_DATABASE_URL must be a postgresql+asyncpg or sqlite+aiosqlite URL"
        )


def _refuse_weak_secret(name: str, secret: str) -> None:
    """One sentence naming the setting, never quoting its value."""
    lowered = secret.strip().lower()
    if lowered in PLACEHOLDER_SECRETS or any(mark in lowered for mark in PLACEHOLDER_MARKERS):
        raise ValueError(f"{name} is a placeholder value; set a random secret")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long"
            " (e.g. the output of: openssl rand -base64 48)"
        )


def jwt_verification_key(pem: str) -> tuple[Literal["RS256", "ES256"], PublicKeyTypes]:
    """The algorithm and key of ``TRANSCRIPTS_JWT_PUBLIC_KEY``, or one sentence why not."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "TRANSCRIPTS_JWT_PUBLIC_KEY is not a PEM public key"
            " (-----BEGIN PUBLIC KEY----- ...; not a private key, nor a certificate)"
        ) from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ValueError(
        f"TRANSCRIPTS_JWT_PUBLIC_KEY must be an RSA key of at least {MIN_RSA_BITS} bits"
        " (RS256) or a P-256 EC key (ES256)"
    )


def _is_origin(value: str) -> bool:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises for a port that is not one)
    except ValueError:
        return False
    return (
        parts.scheme.lower() in {"http", "https"}
        and bool(parts.hostname)
        and parts.username is None
        and not (parts.path or parts.query or parts.fragment)
        and not value.endswith(("?", "#"))
    )
