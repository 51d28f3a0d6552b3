"""FastAPI dependencies shared by every dialect, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.auth import credentials_from_headers
from transcripts.db.dashboard import DashboardReads
from transcripts.db.hot_read import TranscriptReads
from transcripts.domain import Caller, Credentials
from transcripts.recordings import RecordingStore
from transcripts.services.deletions import RecordingDeletions
from transcripts.settings import Settings
from transcripts.state import AppState, app_state

__all__ = [
    "AppStateDep",
    "CallerDep",
    "CredentialsDep",
    "DashboardDep",
    "DbSessionDep",
    "OptionalCallerDep",
    "RecordingDeletionsDep",
    "RecordingStoreDep",
    "SettingsDep",
    "TranscriptsDep",
    "get_credentials",
]


async def get_app_state(request: Request) -> AppState:
    return app_state(request.app)


AppStateDep = Annotated[AppState, Depends(get_app_state)]


async def get_credentials(request: Request) -> Credentials:
    headers = request.headers
    return credentials_from_headers(
        headers.get("x-api-key"),
        headers.get("authorization"),
        app_state(request.app).token_verifier,
    )


CredentialsDep = Annotated[Credentials, Depends(get_credentials)]


async def get_transcripts(state: AppStateDep) -> TranscriptReads:
    return state.transcripts


TranscriptsDep = Annotated[TranscriptReads, Depends(get_transcripts)]


async def get_dashboard(state: AppStateDep) -> DashboardReads:
    return state.dashboard


DashboardDep = Annotated[DashboardReads, Depends(get_dashboard)]


async def get_settings(state: AppStateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_db_session(state: AppStateDep) -> AsyncIterator[AsyncSession]:
    """The request's one transaction, committed before the response is sent.

    ``scope="function"`` below runs the commit as soon as the endpoint returns, so a failed
    commit becomes the error response instead of following a 2xx the client already saw.
    An exception from the endpoint skips the commit and closing the session rolls back.
    """
    async with state.database.sessionmaker() as session:
        yield session
        await session.commit()


DbSessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]


async def widget_origins_changed(state: AppStateDep) -> AsyncIterator[None]:
    """Drops the widget's preflight origins (``transcripts.widget_origins``) once the
    request's transaction is committed.

    A route takes it *before* ``DbSessionDep``: dependencies of one scope are left in the
    reverse order of their entry, so this one's exit follows the commit, and a preflight
    meanwhile cannot keep the origins from before the change.
    """
    yield
    state.widget_origins.invalidate()


WidgetOriginsChangedDep = Annotated[None, Depends(widget_origins_changed, scope="function")]


async def get_caller(credentials: CredentialsDep, transcripts: TranscriptsDep) -> Caller:
    return await transcripts.caller(credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_recording_store(state: AppStateDep) -> RecordingStore:
    return state.recordings


RecordingStoreDep = Annotated[RecordingStore, Depends(get_recording_store)]


async def get_optional_caller(request: Request, transcripts: TranscriptsDep) -> Caller | None:
    """The caller, or None for a request with no credentials at all (the browser widget).

    Credentials that are sent but wrong are still a 401: they never fall back to anonymous.
    """
    headers = request.headers
    if "x-api-key" not in headers and "authorization" not in headers:
        return None
    return await transcripts.caller(await get_credentials(request))


async def get_recording_deletions(state: AppStateDep) -> RecordingDeletions:
    return state.recording_deletions


RecordingDeletionsDep = Annotated[RecordingDeletions, Depends(get_recording_deletions)]


OptionalCallerDep = Annotated[Caller | None, Depends(get_optional_caller)]
