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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transcripts.errors import TranscriptsError

__all__ = ["LOGGING_CONFIG", "AccessLog", "Metrics", "ObservabilityMiddleware", "PoolCollector"]

# The request log's switch: its lines are written by AccessLog, not through its handlers.
access_logger = logging.getLogger("transcripts.access")
error_logger = logging.getLogger("transcripts")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED = "unmatched"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "transcripts_http_requests",
            "HTTP requests, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "transcripts_http_request_duration_seconds",
            "Time to answer, by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # Label children are cached: .labels() takes a lock and validates on every call,
        # a cost on every request for a set of keys that stops growing after warm-up.
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


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
                "time": datetime.now(UTC).isoformat(),
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
