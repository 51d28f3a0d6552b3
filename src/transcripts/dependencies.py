"""FastAPI dependencies shared by both dialects, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from transcripts.db.repository import Repository

__all__ = ["RepositoryDep"]


async def get_repository(request: Request) -> Repository:
    repository: Repository = request.app.state.repository
    return repository


RepositoryDep = Annotated[Repository, Depends(get_repository)]
