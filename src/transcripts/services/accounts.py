"""Users, tenants, API keys and characters: who may act for whom."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.auth import GeneratedApiKey, generate_api_key
from transcripts.db.accounts import AccountRepository, CharacterRepository
from transcripts.domain import ApiKeyRecord, Caller, CharacterRecord, PiiRedaction, UserRecord
from transcripts.errors import BadRequest, Conflict, Forbidden, NotAuthenticated, NotFound

__all__ = [
    "CHARACTER_NOT_FOUND",
    "active_allowed_origins",
    "character_open_to",
    "create_api_key",
    "create_character",
    "create_user",
    "origin_allowed",
    "revoke_api_key",
    "revoke_api_keys_named",
    "update_character",
    "user_by_email",
]

CHARACTER_NOT_FOUND = "Character not found."


async def create_user(
    db: AsyncSession, email: str, *, tenant_slug: str | None = None, is_staff: bool = False
) -> UserRecord:
    """A user in ``tenant_slug`` (created when new); without one, in a tenant of its own, so
    that every user can create characters."""
    accounts = AccountRepository(db)
    if await accounts.email_in_use(email):
        raise Conflict("A user with this email already exists.", {"email": ["Already in use."]})
    tenant_slug = tenant_slug or _own_tenant_slug(email)
    tenant_id = await accounts.tenant_id(tenant_slug, create_as=tenant_slug)
    return await accounts.add_user(email, tenant_id=tenant_id, is_staff=is_staff)


def _own_tenant_slug(email: str) -> str:
    """``dana-3f9a1c`` for dana@northwind.example: readable, and new."""
    name = re.sub(r"[^a-z0-9]+", "-", email.split("@", 1)[0].lower()).strip("-")[:40]
    return f"{name or 'user'}-{secrets.token_hex(3)}"


async def user_by_email(db: AsyncSession, email: str) -> UserRecord | None:
    return await AccountRepository(db).user_by_email(email)


async def create_api_key(
    db: AsyncSession, user_id: int, name: str = "default"
) -> tuple[ApiKeyRecord, GeneratedApiKey]:
    accounts = AccountRepository(db)
    if await accounts.user(user_id) is None:
        raise NotFound("User not found.")
    generated = generate_api_key()
    api_key = await accounts.add_api_key(
        user_id, name=name, key_hash=generated.key_hash, key_preview=generated.key_preview
    )
    return api_key, generated


async def revoke_api_key(
    db: AsyncSession, api_key_id: int, *, owner_id: int | None = None
) -> ApiKeyRecord:
    """Deactivate a key; with ``owner_id``, only one of that user's (else the same 404)."""
    api_key = await AccountRepository(db).deactivate_api_key(
        api_key_id, owner_id=owner_id, now=datetime.now(UTC)
    )
    if api_key is None:
        raise NotFound("API key not found.")
    return api_key


async def revoke_api_keys_named(db: AsyncSession, user_id: int, name: str) -> None:
    """Retire every key of the user's that carries ``name`` (the demo's, run after run)."""
    for api_key_id in await AccountRepository(db).api_key_ids_named(user_id, name):
        await revoke_api_key(db, api_key_id)


async def create_character(
    db: AsyncSession,
    creator_id: int,
    *,
    slug: str,
    name: str,
    allowed_origins: Sequence[str] = (),
    transcripts_enabled: bool = True,
    retention_days: int | None = None,
    pii_redaction: PiiRedaction = "none",
) -> CharacterRecord:
    creator = await AccountRepository(db).user(creator_id)
    if creator is None:
        raise NotFound("User not found.")
    if creator.tenant_id is None:
        raise BadRequest("Only a member of a tenant can create a character.")
    characters = CharacterRepository(db)
    if await characters.slug_in_use(slug):
        raise Conflict("A character with this slug already exists.", {"slug": ["Already in use."]})
    return await characters.add(
        slug=slug,
        name=name,
        tenant_id=creator.tenant_id,
        created_by_id=creator.id,
        allowed_origins=allowed_origins,
        transcripts_enabled=transcripts_enabled,
        retention_days=retention_days,
        pii_redaction=pii_redaction,
    )


async def update_character(
    db: AsyncSession, caller: Caller, slug: str, changes: dict[str, Any]
) -> CharacterRecord:
    """Change a character's settings; another's character is the same 404 as an unknown one.

    ``changes`` holds only the fields the request gave (name, allowed_origins, is_active,
    transcripts_enabled, retention_days, pii_redaction); a session already started keeps the
    transcripts setting it started with, but redaction at write applies to its next append
    and a new retention to its next sweep.
    """
    owner_id = None if caller.is_staff else caller.user_id
    character = await CharacterRepository(db).update(slug, owner_id=owner_id, changes=changes)
    if character is None:
        raise NotFound(CHARACTER_NOT_FOUND)
    return character


async def character_open_to(
    db: AsyncSession, slug: str, *, caller: Caller | None, origin: str | None, field: str
) -> CharacterRecord:
    """The active character ``slug``, if this requester may act for it (start a session,
    submit a form).

    With credentials the caller must own it (or be staff): anything else is the same 404 as
    an unknown slug. Without, the request must come from a browser origin on the character's
    ``allowed_origins`` (Oshara's widget). ``field`` names the slug in the request.
    """
    if caller is None and origin is None:
        raise NotAuthenticated()
    owner_id = caller.user_id if caller is not None and not caller.is_staff else None
    character = await CharacterRepository(db).active(slug, owner_id=owner_id)
    if character is None:
        raise NotFound(CHARACTER_NOT_FOUND, {field: [CHARACTER_NOT_FOUND]})
    if caller is None and not origin_allowed(origin, character.allowed_origins):
        raise Forbidden("This origin may not use this character.")
    return character


def origin_allowed(origin: str | None, allowed_origins: Sequence[str]) -> bool:
    """Whether a browser's ``Origin`` is on a character's ``allowed_origins``."""
    # Scheme and host are case-insensitive; browsers send them lowercased, people may not.
    return origin is not None and origin.lower() in {entry.lower() for entry in allowed_origins}


async def active_allowed_origins(db: AsyncSession) -> frozenset[str]:
    """Every origin some active character allows, lowercased."""
    return await CharacterRepository(db).active_allowed_origins()
