"""Recordings: a private ``s3://bucket/key`` becomes a time-limited link on every read.

Two stores behind one interface:

- ``S3RecordingStore``: AWS S3, MinIO or any S3 endpoint, through aioboto3. Presigning is
  local computation (SigV4), so a read never calls S3 and an unreachable endpoint cannot slow
  it down. Credentials come from the standard AWS chain.
- ``LocalRecordingStore``: the embedded default. ``s3://bucket/key`` lives at
  ``<RECORDINGS_DIR>/bucket/key`` and the service itself serves it through HMAC-signed,
  expiring links that honour ``Range`` (so an ``<audio>`` element can seek). The links are
  built from ``PUBLIC_URL``: a request's ``Host`` header is the client's to choose, so a link
  made from it could point anywhere.

Links are never stored, and only a ``READY`` recording gets one (``link_for``): a link to an
object that is not there yet would only answer 404. ``check`` runs once, when a recording is
registered, to settle its status; reads never look at the object. ``sign_upload`` answers a
presigned PUT of a key the service hands out (``transcripts.recording_keys``); a local upload
link's signature covers the method, so a GET link cannot be used to write.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from transcripts.domain import RecordingStatus, SessionRecord, SignedUpload, SignedUrl
from transcripts.recording_keys import MEDIA_TYPES
from transcripts.settings import Settings

__all__ = [
    "LocalRecordingStore",
    "RecordingStore",
    "S3RecordingStore",
    "link_for",
    "media_type",
    "open_recording_store",
    "parse_s3_uri",
]

logger = logging.getLogger(__name__)

LOCAL_ROUTE = "/recordings"


class RecordingStore(Protocol):
    async def sign(self, recording_url: str) -> SignedUrl | None:
        """A fresh link for the recording, or None (logged) when it cannot be signed."""

    async def sign_upload(self, recording_url: str) -> SignedUpload | None:
        """A fresh presigned PUT of the recording, or None (logged) when it cannot be signed."""

    async def check(self, recording_url: str) -> RecordingStatus:
        """READY if the object is there, PENDING if not yet, FAILED if it never can be."""

    async def delete(self, recording_url: str) -> None:
        """Remove the object; done when it is gone (already absent included). Raises when
        the store could not be asked or refused: the deletion is then tried again later."""


def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key or parts.query or parts.fragment:
        return None
    return parts.netloc, key


def _expiry(ttl_seconds: int) -> int:
    return int(time.time()) + ttl_seconds


def media_type(key: str) -> str:
    """What a recording is served (and uploaded) as, from its extension."""
    return MEDIA_TYPES.get(key.rpartition(".")[2].lower(), "application/octet-stream")


class S3RecordingStore:
    """Presigns GETs, and the PUTs of uploads, with one aioboto3 client made in the lifespan."""

    def __init__(self, client: Any, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> S3RecordingStore:
        import aioboto3
        from botocore.config import Config

        client = await stack.enter_async_context(
            aioboto3.Session().client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                config=Config(
                    # SigV4, which AWS and MinIO require (boto's default presigns SigV2).
                    signature_version="s3v4",
                    # Path style works with any endpoint, including MinIO and local servers.
                    s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
                    # check() runs on the write path: fail fast rather than hold the worker.
                    connect_timeout=3,
                    read_timeout=5,
                    retries={"max_attempts": 2, "mode": "standard"},
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
        signed = await self._presign("get_object", {"Bucket": bucket, "Key": key})
        return None if signed is None else SignedUrl(*signed)

    async def sign_upload(self, recording_url: str) -> SignedUpload | None:
        location = parse_s3_uri(recording_url)
        if location is None:
            logger.warning("recording URL is not an s3://bucket/key URI; upload not signed")
            return None
        bucket, key = location
        # The content type is a signed header: the uploader must send exactly this one, and
        # S3 serves the recording with it.
        headers = {"Content-Type": media_type(key)}
        params = {"Bucket": bucket, "Key": key, "ContentType": headers["Content-Type"]}
        signed = await self._presign("put_object", params)
        if signed is None:
            return None
        return SignedUpload(recording_url, signed[0], signed[1], "PUT", headers)

    async def _presign(self, operation: str, params: dict[str, str]) -> tuple[str, datetime] | None:
        expires = _expiry(self._ttl)
        try:
            url: str = await self._client.generate_presigned_url(
                operation, Params=params, ExpiresIn=self._ttl
            )
        except Exception as exc:  # NoCredentialsError and the like: the read still succeeds
            logger.warning("could not sign recording URL: %s", type(exc).__name__)
            return None
        return url, datetime.fromtimestamp(expires, UTC)

    async def check(self, recording_url: str) -> RecordingStatus:
        from botocore.exceptions import BotoCoreError, ClientError

        location = parse_s3_uri(recording_url)
        if location is None:
            return RecordingStatus.FAILED
        bucket, key = location
        try:
            await self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                return RecordingStatus.PENDING
            logger.warning("recording cannot be read (%s); marked failed", code or "error")
            return RecordingStatus.FAILED
        except BotoCoreError as exc:
            # Unreachable or no credentials: nothing is known yet; a later registration decides.
            logger.warning("recording not checked: %s", type(exc).__name__)
            return RecordingStatus.PENDING
        return RecordingStatus.READY

    async def delete(self, recording_url: str) -> None:
        location = parse_s3_uri(recording_url)
        if location is None:
            # Nothing that could ever be deleted: no store holds a key that is no URI.
            logger.warning("recording URL is not an s3://bucket/key URI; nothing to delete")
            return
        bucket, key = location
        # S3 answers 204 whether or not the key exists: a repeated deletion is a success.
        await self._client.delete_object(Bucket=bucket, Key=key)


class LocalRecordingStore:
    """Recordings in a directory, served by the service under ``/recordings``."""

    def __init__(
        self,
        directory: Path,
        signing_key: bytes | None,
        ttl_seconds: int,
        *,
        public_url: str,
        max_upload_bytes: int,
    ) -> None:
        self.directory = directory.resolve()
        self._key = signing_key
        self._ttl = ttl_seconds
        self._base_url = public_url.rstrip("/")
        self.max_upload_bytes = max_upload_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRecordingStore:
        key = settings.recordings_signing_key
        return cls(
            Path(settings.recordings_dir),
            key.get_secret_value().encode() if key else None,
            settings.presign_ttl_seconds,
            public_url=settings.public_url,
            max_upload_bytes=settings.recordings_max_upload_bytes,
        )

    def path_for(self, bucket: str, key: str) -> Path | None:
        """The file behind bucket/key, or None if the name would leave the directory."""
        candidate = (self.directory / bucket / key).resolve()
        if not candidate.is_relative_to(self.directory) or candidate == self.directory:
            return None
        return candidate

    def _signature(self, method: str, bucket: str, key: str, expires: int) -> str:
        assert self._key is not None
        # The method first: a link to read is not a link to write, nor the other way round.
        message = f"{method}\n{bucket}\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _link(self, method: str, recording_url: str) -> tuple[str, datetime] | None:
        location = parse_s3_uri(recording_url)
        if location is None:
            logger.warning("recording URL is not an s3://bucket/key URI; not signed")
            return None
        if self._key is None:
            logger.warning("TRANSCRIPTS_RECORDINGS_SIGNING_KEY is not set; recording not signed")
            return None
        bucket, key = location
        expires = _expiry(self._ttl)
        signature = self._signature(method, bucket, key, expires)
        query = urlencode({"expires": expires, "signature": signature})
        path = f"{LOCAL_ROUTE}/{quote(bucket, safe='')}/{quote(key)}"
        return f"{self._base_url}{path}?{query}", datetime.fromtimestamp(expires, UTC)

    async def sign(self, recording_url: str) -> SignedUrl | None:
        link = self._link("GET", recording_url)
        return None if link is None else SignedUrl(*link)

    async def sign_upload(self, recording_url: str) -> SignedUpload | None:
        link = self._link("PUT", recording_url)
        if link is None:
            return None
        headers = {"Content-Type": media_type(recording_url)}
        return SignedUpload(recording_url, link[0], link[1], "PUT", headers)

    def verify(self, method: str, bucket: str, key: str, expires: int, signature: str) -> bool:
        """Whether the link allows ``method`` (``GET`` also covers ``HEAD``) on bucket/key."""
        if self._key is None or expires < time.time():
            return False
        signed_for = "GET" if method == "HEAD" else method
        expected = self._signature(signed_for, bucket, key, expires)
        # As bytes: compare_digest raises TypeError for a str with non-ASCII characters, and
        # a forged signature must be the 403 of any other wrong one.
        return hmac.compare_digest(expected.encode(), signature.encode())

    async def check(self, recording_url: str) -> RecordingStatus:
        location = parse_s3_uri(recording_url)
        path = self.path_for(*location) if location else None
        if path is None:
            return RecordingStatus.FAILED
        return RecordingStatus.READY if path.is_file() else RecordingStatus.PENDING

    async def delete(self, recording_url: str) -> None:
        location = parse_s3_uri(recording_url)
        path = self.path_for(*location) if location else None
        if path is None:
            logger.warning("recording URL names no file of the store; nothing to delete")
            return
        path.unlink(missing_ok=True)


async def link_for(store: RecordingStore, record: SessionRecord) -> SignedUrl | None:
    """A fresh link to the session's recording, only once it is ``READY``: every answer that
    carries a link (both dialects' reads, Session History, finalize) makes it here."""
    if record.recording_url is None or record.recording_status != RecordingStatus.READY:
        return None
    return await store.sign(record.recording_url)


async def open_recording_store(settings: Settings, stack: AsyncExitStack) -> RecordingStore:
    if settings.recordings_backend == "s3":
        return await S3RecordingStore.open(settings, stack)
    return LocalRecordingStore.from_settings(settings)
