"""Which recordings a session may register (DESIGN.md, "Recordings").

A caller names its recording as ``s3://bucket/key``; the service then checks and signs that
object with its own credentials, so a caller may name only an object that belongs to it:

- a key under its tenant's prefix: ``RECORDINGS_PREFIX``, a template such as
  ``s3://recordings/{tenant}/``, rendered with the slug of the session's tenant; or
- the key the service handed out for that very session with a presigned upload, which lies in
  the service's upload area, ``s3://<RECORDINGS_UPLOAD_BUCKET>/uploads/…``.

Both comparisons run on the URI as written, and only a canonical URI passes: exactly
``s3://bucket/key``, with no query, fragment, empty, ``.`` or ``..`` segment, backslash or
control character. So the string compared is the string stored, checked and signed; nothing
that a parser would normalise differently later (``s3://recordings/acme/../other/x``,
``s3://recordings//other/x``) can slip through. ``{tenant}`` must be a whole path segment
followed by ``/`` (or lie in the bucket name, which is compared exactly), so tenant ``acme``
never covers ``acme-evil/``.

The upload area is reserved: a key in it is accepted only as the key handed out for the
session, even where a tenant's prefix would cover it (tenant ``uploads`` under
``s3://recordings/{tenant}/`` with the default upload bucket).
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transcripts.settings import Settings

__all__ = [
    "MEDIA_TYPES",
    "UPLOAD_AREA",
    "PrefixTemplate",
    "RecordingKeys",
    "S3Location",
    "canonical_location",
    "validate_bucket",
]

TENANT = "{tenant}"
# Where handed-out keys live in the upload bucket: uploads/<tenant>/<session_id>/<random>.<ext>
UPLOAD_AREA = "uploads/"
# S3's rules for a bucket name (lower case, digits, dots, hyphens; 3 to 63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A tenant slug that can stand as one path segment as it is.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FORBIDDEN_IN_KEY = re.compile(r"[\x00-\x1f\x7f?#\\]")

# The formats an upload may take: extension -> media type (the local store serves by suffix).
MEDIA_TYPES = {
    "mp4": "audio/mp4",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "webm": "audio/webm",
}


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def canonical_location(uri: str) -> S3Location | None:
    """Bucket and key of ``uri`` when it is a canonical ``s3://bucket/key``, else None."""
    if not uri.startswith("s3://"):
        return None
    bucket, slash, key = uri.removeprefix("s3://").partition("/")
    if not slash or not _BUCKET.fullmatch(bucket) or _FORBIDDEN_IN_KEY.search(key):
        return None
    if any(segment in {"", ".", ".."} for segment in key.split("/")):
        return None
    return S3Location(bucket, key)


def upload_session_id(key: str) -> uuid.UUID | None:
    """The session a handed-out key (``uploads/<tenant>/<session_id>/<random>.<ext>``) was
    handed out for, or None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or f"{parts[0]}/" != UPLOAD_AREA:
        return None
    try:
        return uuid.UUID(parts[2])
    except ValueError:
        return None


def validate_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    return bucket


@dataclass(frozen=True, slots=True)
class PrefixTemplate:
    """``s3://bucket/…`` with ``{tenant}`` once: in the bucket name, or as a whole segment
    of the key; the key part is empty or ends with ``/``."""

    template: str

    @classmethod
    def parse(cls, template: str) -> PrefixTemplate:
        problem = cls._problem(template)
        if problem:
            raise ValueError(
                f"TRANSCRIPTS_RECORDINGS_PREFIX {template!r} {problem}; expected a template"
                " such as s3://recordings/{tenant}/"
            )
        return cls(template)

    @staticmethod
    def _problem(template: str) -> str | None:
        if not template.startswith("s3://"):
            return "is not an s3:// URI"
        if template.count("{") != 1 or template.count("}") != 1 or TENANT not in template:
            return "must contain {tenant} once, and no other braces"
        _, slash, key = template.removeprefix("s3://").partition("/")
        if not slash:
            return "has no / after the bucket"
        if key and not key.endswith("/"):
            return "must end with /"
        if TENANT in key and TENANT not in key.split("/"):
            return "must have {tenant} as a whole path segment"
        if canonical_location(template.replace(TENANT, "tenant") + "x") is None:
            return "is not an s3://bucket/key prefix"
        return None

    def render(self, tenant_slug: str) -> S3Location | None:
        """The tenant's prefix (its key empty or ending with ``/``); None when the slug
        cannot stand in it as it is (then only handed-out keys are the tenant's)."""
        if not _SEGMENT.fullmatch(tenant_slug):
            return None
        # A sample key after the prefix, so that an empty key part is canonical too.
        location = canonical_location(self.template.replace(TENANT, tenant_slug) + "x")
        if location is None:
            return None
        return S3Location(location.bucket, location.key.removesuffix("x"))


@dataclass(frozen=True, slots=True)
class RecordingKeys:
    """The registration rule, and the keys the service hands out."""

    prefix: PrefixTemplate | None
    upload_bucket: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingKeys:
        prefix = settings.recordings_prefix
        return cls(
            PrefixTemplate.parse(prefix) if prefix else None, settings.recordings_upload_bucket
        )

    def tenant_prefix(self, tenant_slug: str) -> S3Location | None:
        return None if self.prefix is None else self.prefix.render(tenant_slug)

    def may_register(self, uri: str, *, tenant_slug: str, handed_out: str | None) -> bool:
        if handed_out is not None and uri == handed_out:
            return True
        location = canonical_location(uri)
        if location is None or self._reserved(location):
            return False
        prefix = self.tenant_prefix(tenant_slug)
        return (
            prefix is not None
            and location.bucket == prefix.bucket
            and location.key.startswith(prefix.key)
        )

    def upload_key(
        self, *, tenant_slug: str, session_id: uuid.UUID, extension: str, handed_out: str | None
    ) -> S3Location:
        """The key to hand out: the one handed out before, when it has this extension (so a
        retried request answers the same key), else a new one with 128 random bits."""
        if handed_out is not None and handed_out.endswith(f".{extension}"):
            earlier = canonical_location(handed_out)
            if earlier is not None:
                return earlier
        tenant = tenant_slug if _SEGMENT.fullmatch(tenant_slug) else "_"
        return S3Location(
            self.upload_bucket,
            f"{UPLOAD_AREA}{tenant}/{session_id}/{secrets.token_hex(16)}.{extension}",
        )

    def _reserved(self, location: S3Location) -> bool:
        return location.bucket == self.upload_bucket and location.key.startswith(UPLOAD_AREA)
