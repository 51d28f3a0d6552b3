"""FastAPI dependencies shared by both dialects, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from transcripts.auth import CredentialsDep
from transcripts.db.repository import Repository
from transcripts.domain import Caller
from transcripts.recordings import RecordingStore

__all__ = ["CallerDep", "RecordingStoreDep", "RepositoryDep"]


async def get_repository(request: Request) -> Repository:
    repository: Repository = request.app.state.repository
    return repository


RepositoryDep = Annotated[Repository, Depends(get_repository)]


async def get_caller(credentials: CredentialsDep, repository: RepositoryDep) -> Caller:
    return await repository.resolve_caller(credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_recording_store(request: Request) -> RecordingStore:
    store: RecordingStore = request.app.state.recording_store
    return store


RecordingStoreDep = Annotated[RecordingStore, Depends(get_recording_store)]
