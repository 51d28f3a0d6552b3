"""Tenants, users, API keys and characters: the write side's statements about who owns what.

A repository wraps the unit of work (an ``AsyncSession``) it is given and never commits;
the caller of the service owns the transaction. Rows leave as domain records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.dashboard import api_key_record
from transcripts.db.tables import ApiKey, Character, Tenant, User
from transcripts.domain import ApiKeyRecord, CharacterRecord, UserRecord

__all__ = ["AccountRepository", "CharacterRepository", "character_record"]


def character_record(character: Character) -> CharacterRecord:
    return CharacterRecord(
        id=character.id,
        public_id=character.public_id,
        slug=character.slug,
        name=character.name,
        tenant_id=character.tenant_id,
        created_by_id=character.created_by_id,
        is_active=character.is_active,
        transcripts_enabled=character.transcripts_enabled,
        allowed_origins=list(character.allowed_origins),
        created_at=character.created_at,
        retention_days=character.retention_days,
        pii_redaction="store" if character.pii_redaction == "store" else "none",
    )


class AccountRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def tenant_id(self, slug: str, *, create_as: str | None = None) -> int | None:
        """The tenant's id; with ``create_as``, a new tenant of that name when there is none."""
        tenant_id = await self._db.scalar(select(Tenant.id).where(Tenant.slug == slug))
        if tenant_id is None and create_as is not None:
            tenant = Tenant(slug=slug, name=create_as)
            self._db.add(tenant)
            await self._db.flush()
            tenant_id = tenant.id
        return tenant_id

    async def email_in_use(self, email: str) -> bool:
        return await self._db.scalar(select(User.id).where(User.email == email)) is not None

    async def add_user(self, email: str, *, tenant_id: int | None, is_staff: bool) -> UserRecord:
        user = User(email=email, tenant_id=tenant_id, is_staff=is_staff)
        self._db.add(user)
        await self._db.flush()
        return await self._user_record(user)

    async def user(self, user_id: int) -> UserRecord | None:
        user = await self._db.get(User, user_id)
        return None if user is None else await self._user_record(user)

    async def user_by_email(self, email: str) -> UserRecord | None:
        user = await self._db.scalar(select(User).where(User.email == email))
        return None if user is None else await self._user_record(user)

    async def _user_record(self, user: User) -> UserRecord:
        tenant_slug = (
            await self._db.scalar(select(Tenant.slug).where(Tenant.id == user.tenant_id))
            if user.tenant_id is not None
            else None
        )
        return UserRecord(
            id=user.id,
            email=user.email,
            tenant_id=user.tenant_id,
            tenant_slug=tenant_slug,
            is_staff=user.is_staff,
            is_active=user.is_active,
        )

    async def add_api_key(
        self, user_id: int, *, name: str, key_hash: str, key_preview: str
    ) -> ApiKeyRecord:
        api_key = ApiKey(user_id=user_id, name=name, key_hash=key_hash, key_preview=key_preview)
        self._db.add(api_key)
        await self._db.flush()
        return api_key_record(api_key)

    async def deactivate_api_key(
        self, api_key_id: int, *, owner_id: int | None, now: datetime
    ) -> ApiKeyRecord | None:
        """Deactivate the key (once: a revoked key keeps its first ``revoked_at``); None when
        there is no such key, or it is not ``owner_id``'s."""
        api_key = await self._db.get(ApiKey, api_key_id)
        if api_key is None or (owner_id is not None and api_key.user_id != owner_id):
            return None
        if api_key.is_active:
            api_key.is_active = False
            api_key.revoked_at = now
            await self._db.flush()
        return api_key_record(api_key)

    async def api_key_ids_named(self, user_id: int, name: str) -> list[int]:
        return list(
            await self._db.scalars(
                select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.name == name)
            )
        )


class CharacterRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def slug_in_use(self, slug: str) -> bool:
        return await self._db.scalar(select(Character.id).where(Character.slug == slug)) is not None

    async def add(
        self,
        *,
        slug: str,
        name: str,
        tenant_id: int,
        created_by_id: int,
        allowed_origins: Sequence[str],
        transcripts_enabled: bool,
        retention_days: int | None = None,
        pii_redaction: str = "none",
    ) -> CharacterRecord:
        character = Character(
            slug=slug,
            name=name,
            tenant_id=tenant_id,
            created_by_id=created_by_id,
            allowed_origins=list(allowed_origins),
            transcripts_enabled=transcripts_enabled,
            retention_days=retention_days,
            pii_redaction=pii_redaction,
        )
        self._db.add(character)
        await self._db.flush()
        return character_record(character)

    async def update(
        self, slug: str, *, owner_id: int | None, changes: dict[str, Any]
    ) -> CharacterRecord | None:
        """Change the character ``slug`` (only ``owner_id``'s, when given); None when there
        is no such character for this owner."""
        statement = select(Character).where(Character.slug == slug)
        if owner_id is not None:
            statement = statement.where(Character.created_by_id == owner_id)
        character = await self._db.scalar(statement.with_for_update())
        if character is None:
            return None
        for name, value in changes.items():
            setattr(character, name, value)
        await self._db.flush()
        return character_record(character)

    async def active_allowed_origins(self) -> frozenset[str]:
        """Every origin on an active character's allowed_origins, lowercased: what the
        widget's preflights are answered from (``transcripts.widget_origins``)."""
        entries = self._origin_entries()
        statement = (
            select(func.lower(entries.c.value))
            .distinct()
            .select_from(Character)
            .join(entries, true())
            .where(Character.is_active)
        )
        return frozenset((await self._db.scalars(statement)).all())

    def _origin_entries(self) -> Any:
        if self._db.get_bind().dialect.name == "postgresql":
            # A function returning text names its one column after its alias unless told.
            return (
                func.json_array_elements_text(Character.allowed_origins)
                .table_valued("value")
                .render_derived()
            )
        return func.json_each(Character.allowed_origins).table_valued("value")

    async def active(self, slug: str, *, owner_id: int | None) -> CharacterRecord | None:
        """The active character ``slug``; with ``owner_id``, only if that user created it."""
        statement = select(Character).where(Character.slug == slug, Character.is_active)
        if owner_id is not None:
            statement = statement.where(Character.created_by_id == owner_id)
        character = await self._db.scalar(statement)
        return None if character is None else character_record(character)
