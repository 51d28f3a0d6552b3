"""Recordings: a private ``s3://bucket/key`` is turned into a time-limited link on every read.

Signing is local computation (SigV4 over the request), so a read never calls S3 and an
unreachable endpoint cannot slow it down. The link is never stored.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from transcripts.domain import SignedUrl
from transcripts.settings import Settings

__all__ = ["RecordingSigner", "S3RecordingSigner", "parse_s3_uri"]

logger = logging.getLogger(__name__)


class RecordingSigner(Protocol):
    async def sign(self, recording_url: str) -> SignedUrl | None:
        """A fresh link for the recording, or None (logged) when it cannot be signed."""


def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key or parts.query or parts.fragment:
        return None
    return parts.netloc, key


class S3RecordingSigner:
    """Presigns GETs with aioboto3. Credentials come from the standard AWS chain."""

    def __init__(self, client: Any, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> S3RecordingSigner:
        import aioboto3
        from botocore.config import Config

        session = aioboto3.Session()
        client = await stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                # SigV4 (what AWS and MinIO require); path style works with any endpoint.
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
                ),
            )
        )
        return cls(client, settings.presign_ttl_seconds)

    async def sign(self, recording_url: str) -> SignedUrl | None:
        location = parse_s3_uri(recording_url)
        if location is None:
            logger.warning("recording URL is not an s3://bucket/key URI; not signed")
            return None
        bucket, key = location
        expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=self._ttl)
        try:
            url: str = await self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self._ttl
            )
        except Exception as exc:  # NoCredentialsError and friends: the read still succeeds
            logger.warning("could not sign recording URL: %s", type(exc).__name__)
            return None
        return SignedUrl(url=url, expires_at=expires_at)
