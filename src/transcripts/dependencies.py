"""FastAPI dependencies shared by both dialects, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.auth import CredentialsDep, get_credentials
from transcripts.db.engine import Database
from transcripts.db.repository import Repository
from transcripts.domain import Caller
from transcripts.recordings import RecordingStore
from transcripts.settings import Settings

__all__ = [
    "CallerDep",
    "DbSessionDep",
    "OptionalCallerDep",
    "RecordingStoreDep",
    "RepositoryDep",
    "SettingsDep",
]


async def get_repository(request: Request) -> Repository:
    repository: Repository = request.app.state.repository
    return repository


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one transaction, committed before the response is sent.

    ``scope="function"`` below runs the commit as soon as the endpoint returns, so a failed
    commit becomes the error response instead of following a 2xx the client already saw.
    An exception from the endpoint skips the commit and closing the session rolls back.
    """
    database: Database = request.app.state.database
    async with database.sessionmaker() as session:
        yield session
        await session.commit()


DbSessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]


async def get_caller(credentials: CredentialsDep, repository: RepositoryDep) -> Caller:
    return await repository.resolve_caller(credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_recording_store(request: Request) -> RecordingStore:
    store: RecordingStore = request.app.state.recording_store
    return store


RecordingStoreDep = Annotated[RecordingStore, Depends(get_recording_store)]


async def get_optional_caller(request: Request, repository: RepositoryDep) -> Caller | None:
    """The caller, or None for a request with no credentials at all (the browser widget).

    Credentials that are sent but wrong are still a 401: they never fall back to anonymous.
    """
    headers = request.headers
    if "x-api-key" not in headers and "authorization" not in headers:
        return None
    return await repository.resolve_caller(await get_credentials(request))


OptionalCallerDep = Annotated[Caller | None, Depends(get_optional_caller)]
