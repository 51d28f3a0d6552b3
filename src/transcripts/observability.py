"""Request observability: one JSON log line and Prometheus samples per request.

A single pure-ASGI middleware wraps the whole app (inside it, nothing else pays for this):
it accepts or mints the request id, times the request, labels it by route template (never
by raw path: ids stay out of labels and logs), and is the last line of defence for an
unexpected exception, answered in the route's dialect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import select
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transcripts.errors import TranscriptsError

__all__ = [
    "LOGGING_CONFIG",
    "AccessLog",
    "GaugeCollector",
    "Metrics",
    "ObservabilityMiddleware",
    "PoolCollector",
    "WebhookMetrics",
]

# The request log's switch: its lines are written by AccessLog, not through its handlers.
access_logger = logging.getLogger("transcripts.access")
error_logger = logging.getLogger("transcripts")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "unmatched"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUCKET_LABELS = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]


class _Latency:
    """One histogram's state: a count per bucket (not cumulative), their sum, its birth."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.created = time.time()


class Metrics(Collector):
    """Request counts and latencies, kept as plain numbers and exported at scrape time.

    The exposition is what prometheus_client's Counter and Histogram write for the same
    names and labels (``_total``, ``_bucket``, ``_count``, ``_sum``, ``_created``). Their
    per-child locks and value objects cost about 1.7 µs a request, four times these
    increments; a worker's requests and scrapes all run on its one event loop thread, so
    nothing here needs a lock.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests: dict[tuple[str, str, int], list[float]] = {}  # [count, created]
        self._latency: dict[tuple[str, str], _Latency] = {}
        self.registry.register(self)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        requests = self._requests.get((route, method, status))
        if requests is None:
            requests = self._requests[route, method, status] = [0, time.time()]
        requests[0] += 1
        latency = self._latency.get((route, method))
        if latency is None:
            latency = self._latency[route, method] = _Latency()
        # The first bucket whose bound is >= seconds: Prometheus buckets are "le".
        latency.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.total += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "transcripts_http_requests",
            "HTTP requests, by route template, method and status.",
            labels=("route", "method", "status"),
        )
        for (route, method, status), (count, created) in self._requests.items():
            requests.add_metric((route, method, str(status)), count, created=created)
        yield requests
        latency = HistogramMetricFamily(
            "transcripts_http_request_duration_seconds",
            "Time to answer, by route template and method.",
            labels=("route", "method"),
        )
        for (route, method), state in self._latency.items():
            latency.add_metric(
                (route, method),
                list(zip(_BUCKET_LABELS, accumulate(state.counts), strict=True)),
                state.total,
            )
            latency.samples.append(
                Sample(
                    f"{latency.name}_created",
                    {"route": route, "method": method},
                    state.created,
                )
            )
        yield latency


class WebhookMetrics(Collector):
    """Webhook deliveries: this process's attempts by outcome, and the deliveries pending
    across every replica (read from the database when /metrics is scraped)."""

    OUTCOMES = ("succeeded", "retry", "failed")

    def __init__(self) -> None:
        self._created = time.time()
        self.attempts = dict.fromkeys(self.OUTCOMES, 0)
        self.pending = 0
        self.oldest_pending_at: datetime | None = None

    def attempted(self, outcome: str) -> None:
        self.attempts[outcome] += 1

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "transcripts_webhook_deliveries",
            "Webhook delivery attempts made by this process, by outcome: succeeded, retry"
            " (failed, another attempt is scheduled), failed (failed, no attempt left).",
            labels=("outcome",),
        )
        for outcome, count in self.attempts.items():
            attempts.add_metric((outcome,), count, created=self._created)
        yield attempts
        yield GaugeMetricFamily(
            "transcripts_webhook_deliveries_pending",
            "Webhook deliveries not yet succeeded or given up, across every replica.",
            value=self.pending,
        )
        age = 0.0
        if self.oldest_pending_at is not None:
            age = max(0.0, (datetime.now(UTC) - self.oldest_pending_at).total_seconds())
        yield GaugeMetricFamily(
            "transcripts_webhook_oldest_pending_age_seconds",
            "How long the oldest pending webhook delivery has waited (0 when none is).",
            value=age,
        )


class PoolCollector(Collector):
    """Database pool gauges, read at scrape time from SQLAlchemy's pool."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._pool()
        if not isinstance(pool, QueuePool):
            return
        for name, documentation, value in (
            ("size", "Connections the pool keeps.", pool.size()),
            ("checked_out", "Connections in use.", pool.checkedout()),
            ("checked_in", "Idle connections in the pool.", pool.checkedin()),
            ("overflow", "Connections beyond the pool size.", max(pool.overflow(), 0)),
        ):
            yield GaugeMetricFamily(f"transcripts_db_pool_{name}", documentation, value=value)


class GaugeCollector(Collector):
    """One gauge, read at scrape time."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        self._name = name
        self._documentation = documentation
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._name, self._documentation, value=self._read())


class AccessLog:
    """The request log: one JSON line per request on stderr, written in batches.

    The lines are those JsonFormatter writes for a record of the ``transcripts.access``
    logger, and that logger's level still turns them on and off. They do not go through
    ``logging`` itself: a LogRecord, the handler's lock, the formatter and a write and flush
    for every line came to about 50 µs a request on the benchmark's machine, a fifth of a
    short transcript read. A line is buffered instead, and the buffer written
    ``flush_after`` seconds after its first line, or once it holds ``flush_bytes``, and
    when the application stops: like nginx's ``access_log ... buffer= flush=``.
    """

    def __init__(self, flush_after: float = 0.25, flush_bytes: int = 64 * 1024) -> None:
        self.flush_after = flush_after
        self.flush_bytes = flush_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def request(
        self, request_id: str, method: str, route: str, status: int, duration_ms: float
    ) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        line = orjson.dumps(
            {
                "time": datetime.now(UTC),  # orjson writes isoformat()'s text, faster
                "level": "INFO",
                "logger": access_logger.name,
                "message": "request",
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": duration_ms,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.flush_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_after, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        # Whole lines, at most PIPE_BUF bytes a write: the kernel keeps such a write to a pipe
        # in one piece, so the lines of several workers sharing stderr never interleave.
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if size + len(line) > select.PIPE_BUF and chunk:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(chunk)

    @staticmethod
    def _write(lines: list[bytes]) -> None:
        # Looked up at each write, as logging's handler does: whoever replaced it gets the lines.
        stream = sys.stderr
        try:
            stream.write(b"".join(lines).decode())
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr is closed or gone: there is nowhere left to say so


ErrorResponder = Callable[[Request, TranscriptsError], Any]


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog,
        render_error: ErrorResponder,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            error_logger.error(
                "unhandled %s", type(exc).__name__, exc_info=exc, extra={"request_id": request_id}
            )
            if response_started:
                raise
            response = self.render_error(Request(scope), TranscriptsError())
            await response(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.observe(route, scope["method"], status, elapsed)
            self.access_log.request(
                request_id, scope["method"], route, status, round(elapsed * 1000, 3)
            )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    # Plain Starlette routes (the schema, the docs UI) have fixed paths and set no "route".
    return str(scope["path"]) if "endpoint" in scope else UNMATCHED


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # Unique, not secret: the process's PRNG (reseeded in every forked worker) spares a
    # getrandom system call a request.
    return f"{random.getrandbits(128):032x}"


_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}  # uvicorn adds an ANSI-coloured copy


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message and the extras.

    Written with orjson: python-json-logger took 21 µs a line and this 14, on every request.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


# For uvicorn's log_config: JSON lines on stderr; uvicorn's own access log is replaced by ours.
LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {
        "transcripts": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        "alembic": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
