"""The deliverer: every replica runs one, started and stopped by the app's lifespan.

It claims due deliveries (``services.webhooks.claim_due``: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas take disjoint sets), commits the claim, renders the bodies of
events written without one (session.finalized: ``services.webhooks.render_bodies``, in a
transaction of its own), then makes each attempt outside any transaction: the body stored
in the outbox, signed with the ``standardwebhooks``
library for this attempt's timestamp, POSTed without following redirects to an address the
SSRF rules checked (``transcripts.webhook_targets``). The outcome is recorded in a
transaction of its own. A deliverer that dies mid-attempt leaves the claim to expire, and
another attempt is made: delivery is at least once, with the same ``webhook-id``.

It wakes as soon as a transaction of this process that wrote an event commits, so an event
is on its way within milliseconds; events written by other replicas, and retries, are
found by polling every ``WEBHOOK_POLL_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks import Webhook

from transcripts import __version__
from transcripts.db.engine import Database, is_unavailable
from transcripts.domain import WebhookAttempt, WebhookClaim
from transcripts.observability import WebhookMetrics
from transcripts.services import webhooks
from transcripts.settings import Settings
from transcripts.webhook_targets import ResolvedTarget, TargetRefused, resolve_target

__all__ = ["WebhookDeliverer", "signed_headers"]

logger = logging.getLogger("transcripts.webhooks")

# How long stop() lets attempts in flight finish before cancelling them (their claims then
# expire and another deliverer makes the attempt again).
STOP_GRACE_SECONDS = 5.0
MAX_ERROR_CHARACTERS = 500


def signed_headers(claim: WebhookClaim, timestamp: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    assert claim.payload is not None  # rendered by the claim
    signature = Webhook(claim.secret).sign(claim.event_id, timestamp, claim.payload)
    return {
        "webhook-id": claim.event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": f"transcripts-webhooks/{__version__}",
    }


class WebhookDeliverer:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        metrics: WebhookMetrics,
        *,
        summarize: webhooks.Summarize,
    ) -> None:
        self._database = database
        self._summarize = summarize
        self._settings = settings
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._backlog = False
        self._claim_batch = max(1, settings.webhook_concurrency // 4)
        self._next_retry: float | None = None  # monotonic time of the soonest known retry
        self._task: asyncio.Task[None] | None = None
        self._unhook: Callable[[], None] = lambda: None
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=settings.webhook_timeout_seconds,
            # Receivers are other parties' servers: no proxy from the environment.
            trust_env=False,
            # Every slot keeps its connection: one closed after each attempt would be set up
            # again (TCP, TLS) for the next.
            limits=httpx.Limits(
                max_connections=settings.webhook_concurrency,
                max_keepalive_connections=settings.webhook_concurrency,
            ),
        )

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._unhook = webhooks.on_commit_with_events(self._database.engine, self.wake)
        self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self) -> None:
        self._unhook()
        if self._task is not None:
            self._task.cancel()
            # Bounded: a claim cut off mid-statement may wait on a database that is gone,
            # and shutting down must not (its claim simply expires).
            await asyncio.wait({self._task}, timeout=STOP_GRACE_SECONDS)
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._client.aclose()

    async def refresh_metrics(self) -> None:
        """Read the pending deliveries into the metrics (at scrape time)."""
        try:
            async with self._database.session() as db:
                summary = await webhooks.pending_summary(db)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            return  # the last values stand; the database's own alerts say why
        self._metrics.pending = summary.count
        self._metrics.oldest_pending_at = summary.oldest_created_at

    async def _run(self) -> None:
        poll = self._settings.webhook_poll_interval_seconds
        while True:
            self._wake.clear()
            claimed = 0
            capacity = self._settings.webhook_concurrency - len(self._in_flight)
            # With attempts in flight, claim again only once a quarter of the slots are
            # free: one claim per few deliveries, not one per delivery.
            if capacity >= self._claim_batch or (capacity > 0 and not self._in_flight):
                try:
                    claimed = self._launch(await self._claim(capacity))
                except Exception as exc:
                    if not is_unavailable(exc):
                        logger.exception("webhook deliverer: claiming failed")
                    else:
                        logger.warning("webhook deliverer: database unavailable")
                self._backlog = claimed == capacity
                if self._backlog:
                    continue  # there may be more due already
            timeout = poll
            if self._next_retry is not None:
                timeout = min(timeout, max(0.0, self._next_retry - time.monotonic()))
                if timeout == 0.0:
                    self._next_retry = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _claim(self, limit: int) -> list[WebhookClaim]:
        async with self._database.session() as db:
            claims = await webhooks.claim_due(
                db, limit=limit, timeout_seconds=self._settings.webhook_timeout_seconds
            )
            await db.commit()
        if all(claim.payload is not None for claim in claims):
            return claims
        async with self._database.session() as db:
            claims = await webhooks.render_bodies(
                db,
                claims,
                summarize=self._summarize,
                max_payload_bytes=self._settings.webhook_max_payload_bytes,
            )
            await db.commit()
        return claims

    def _launch(self, claims: list[WebhookClaim]) -> int:
        for claim in claims:
            task = asyncio.create_task(self._deliver(claim))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(claims)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        free = self._settings.webhook_concurrency - len(self._in_flight)
        if self._backlog and (free >= self._claim_batch or not self._in_flight):
            self._wake.set()  # slots are free and more may be waiting

    async def _deliver(self, claim: WebhookClaim) -> None:
        at = datetime.now(UTC)
        started = time.perf_counter()
        response_code, error = await self._attempt(claim, at)
        attempt = WebhookAttempt(
            at=at,
            response_code=response_code,
            error=error[:MAX_ERROR_CHARACTERS] if error else None,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
        try:
            async with self._database.session() as db:
                result = await webhooks.record_attempt(
                    db,
                    claim,
                    attempt,
                    retry_schedule=self._settings.webhook_retry_schedule,
                    disable_after=timedelta(seconds=self._settings.webhook_disable_after_seconds),
                )
                await db.commit()
        except Exception:
            # The claim expires and the attempt is made again: at least once.
            logger.exception("webhook deliverer: recording delivery %s failed", claim.delivery_id)
            return
        if result.outcome != "gone":
            self._metrics.attempted(result.outcome)
        if result.disabled:
            logger.warning("webhook endpoint %s disabled: %s", claim.endpoint_id, error)
        if result.next_attempt_at is not None:
            due = time.monotonic() + (result.next_attempt_at - datetime.now(UTC)).total_seconds()
            if self._next_retry is None or due < self._next_retry:
                self._next_retry = due
                self._wake.set()  # to sleep no longer than until then

    async def _attempt(self, claim: WebhookClaim, at: datetime) -> tuple[int | None, str | None]:
        """(status code, error) of one POST; the error is None for a 2xx."""
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                target = await resolve_target(
                    claim.url, allow_private=self._settings.webhook_allow_private_targets
                )
                code = await self._post(target, claim)
        except TargetRefused as exc:
            return None, f"Target refused: {exc}"
        except TimeoutError:
            return None, f"No answer within {self._settings.webhook_timeout_seconds:g} s."
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARACTERS]
        if 200 <= code < 300:
            return code, None
        if 300 <= code < 400:
            return code, f"HTTP {code}: redirects are not followed."
        return code, f"HTTP {code}"

    async def _post(self, target: ResolvedTarget, claim: WebhookClaim) -> int:
        assert claim.payload is not None  # rendered by the claim
        # Signed just before sending: the timestamp is this attempt's.
        headers = signed_headers(claim, datetime.now(UTC))
        headers["host"] = target.url.netloc
        extensions = {"sni_hostname": target.hostname} if target.url.scheme == "https" else {}
        body = claim.payload.encode()
        failure: httpx.HTTPError | None = None
        for address in target.addresses:
            host = f"[{address}]" if ":" in address else address
            url = target.url._replace(netloc=f"{host}:{target.port}").geturl()
            try:
                async with self._client.stream(
                    "POST", url, content=body, headers=headers, extensions=extensions
                ) as response:
                    # The body is never read: nothing in it matters, and it may be large.
                    return response.status_code
            except httpx.ConnectError as exc:
                failure = exc  # try the name's next checked address
        assert failure is not None
        raise failure
