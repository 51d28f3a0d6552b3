"""What the application holds while it runs, typed: the lifespan builds it, routes read it."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette

from transcripts.auth import TokenVerifier
from transcripts.db.dashboard import DashboardReads
from transcripts.db.engine import Database
from transcripts.db.hot_read import TranscriptReads
from transcripts.db.key_usage import ApiKeyUsage
from transcripts.db.search import TranscriptSearch
from transcripts.live import LiveHub
from transcripts.observability import AccessLog, Metrics
from transcripts.recordings import RecordingStore
from transcripts.services.deletions import RecordingDeletions
from transcripts.settings import Settings
from transcripts.webhook_deliverer import WebhookDeliverer
from transcripts.widget_origins import WidgetOrigins

__all__ = ["AppState", "app_state"]


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    token_verifier: TokenVerifier
    metrics: Metrics
    access_log: AccessLog
    database: Database
    key_usage: ApiKeyUsage
    transcripts: TranscriptReads
    dashboard: DashboardReads
    search: TranscriptSearch
    recordings: RecordingStore
    recording_deletions: RecordingDeletions
    widget_origins: WidgetOrigins
    live: LiveHub
    # None when this process runs no deliverer (TRANSCRIPTS_WEBHOOK_DELIVERER_ENABLED=false).
    webhooks: WebhookDeliverer | None = None


def app_state(app: Starlette) -> AppState:
    """The running application's state (set by its lifespan)."""
    state: AppState = app.state.transcripts
    return state
