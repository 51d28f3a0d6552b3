"""The HTTP/1.1 protocol ``transcripts serve`` runs: uvicorn's httptools protocol, bounded.

uvicorn's httptools protocol has no limit of its own on what a client may make it hold:
it buffers a request head of any size until the blank line that ends it (four 100 MB
heads at once took its resident memory from 95 to 577 MiB, ``bench/flood.py``), waits
forever for a head that never ends, and accepts
connections until the process runs out of file descriptors. ``GuardedHttpToolsProtocol``
adds the bounds a server facing clients needs, enforced as bytes and connections arrive,
before the application sees anything:

- **Head size.** Bytes are counted while a head is awaited, that is while no request's
  body is arriving, each head from its own first byte. Past ``MAX_HEAD_BYTES`` (16 KiB,
  what uvicorn's h11 parser allows) the connection gets a 431 and is closed, the rest
  unread; a pipelined head's 431 comes after the answers to the requests before it. A head
  between the application's own limit (``MAX_HEADER_BYTES``, 8 KiB of names and values)
  and this cap still reaches ``RequestGuard``, which answers the finer-grained 431s. A read
  that ends a head within its budget (the usual one) costs a comparison and a suffix test;
  any other (a head in pieces, pipelined heads, a read past the cap) is cut after each
  blank line, so that the parser is fed no byte of a head past its cap, nor counts one
  head's bytes against another's. The one exception: a head in the same read as the end of
  a *body* before it is counted from the next read on (so by at most one read).
- **Head time.** A connection whose request head is not complete ``header_timeout_seconds``
  after it was opened, or after its previous response, is closed (slowloris). If part of a
  request arrived, the client is told so with a 408 first; an idle connection is closed
  silently, as after uvicorn's keep-alive timeout, because a 408 there would race the
  request the client may be sending at that very moment (and browsers retry a request
  that meets one). The deadline is kept lazily: one timer per connection that re-arms
  itself, so a request costs a clock read, not a timer.
- **Body time.** A request's body must arrive within ``body_timeout_seconds`` of its head,
  plus a second for every ``body_min_rate_bytes`` received (Apache's mod_reqtimeout rule):
  a steady upload of any size goes through, a body trickled a few bytes at a time cannot
  hold a request slot (and the route's database work waiting on it) for ever. Past the
  deadline the client gets a 408 and the connection is closed. Time the client cannot be
  blamed for is not counted: while the route has not asked for the body yet (a client
  waiting on ``Expect: 100-continue``) and while uvicorn has stopped reading because the
  route has not consumed what came. Only requests that may carry a body are watched (not
  ``GET`` or ``HEAD``, whose routes never wait for one), so the hot read pays nothing.
- **Connections.** When a connection arrives while ``max_connections`` are open, those that
  have waited longest for a request head (idle keep-alive connections, heads sent slowly)
  are closed to make room, as nginx reuses its idle connections; so a flood of slow
  connections cannot keep out a client that sends its request at once. If every open
  connection is being answered, the new one is closed before anything is read from it: an
  answer would cost the file descriptors and memory the cap protects, and a load balancer
  retries a refused connection elsewhere. The cap is lowered to what the process's
  file-descriptor limit leaves room for.
- **Requests in flight.** A request whose head completes while ``max_requests_in_flight``
  are being answered gets a 503 with ``Retry-After``, at once, instead of queueing behind
  the database pool; uvicorn's ``limit_concurrency`` does the same in plain text (and
  counts idle keep-alive connections too, which would refuse requests while slow clients
  merely hold connections open). Open live transcript streams are not counted.
- **Unread bodies.** A response given before the request's body arrived whole (a 413
  after 1 MiB of a chunked upload, a 404 to a POST) closes the connection, with
  ``Connection: close``, as h11 and nginx do: uvicorn would otherwise read and discard the
  rest of the body, however long, to reuse the connection.

Every refusal is written in the dialect of the request's path, by the ``render_refusal``
callable given to the protocol (the application's error renderers), and closes the
connection. They happen outside the application, so they appear in neither its request
log nor its metrics; a throttled warning in the log counts them.

uvicorn's protocol is extended through the methods it calls on itself: ``data_received``,
``_start_asgi_task`` and ``on_response_complete`` on every request, ``connection_made`` and
``connection_lost``; ``tests/test_server.py`` drives a real ``transcripts serve``, so that a
uvicorn upgrade that changes them fails there. On a keep-alive GET they add about 7,500
instructions to uvicorn's 140,000 (``bench/protocol_cost.py``, ``bench/PROTOCOL_COST.md``),
some 1% of a 10-turn read; on a POST, with its body deadline, about 40,000.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from transcripts import live
from transcripts.app import DIALECTS
from transcripts.dialects import dialect_for_path
from transcripts.errors import (
    HeadersTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TranscriptsError,
)
from transcripts.limits import MAX_HEAD_BYTES
from transcripts.settings import Settings

__all__ = [
    "ConnectionLimits",
    "GuardedHttpToolsProtocol",
    "RefusalRenderer",
    "guarded_protocol",
    "render_refusal_in_dialect",
]

logger = logging.getLogger("transcripts.server")

RefusalRenderer = Callable[[str, TranscriptsError], Response]

# File descriptors kept for everything but client connections: the database pool, log and
# recording files, the listening socket, and margin.
_RESERVED_FDS = 64
# Methods whose requests are not expected to carry a body. Their responses are not watched
# for an unread body as they start (a coroutine more per request on the hot read); should
# one carry a body anyway, the connection is still closed once the response is complete.
_BODILESS = frozenset({"GET", "HEAD"})
_OVERLOADED = "The server is at capacity; retry shortly."
_SLOW_BODY = "The request body did not arrive in time."


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int
    header_timeout_seconds: float
    max_connections: int
    max_requests_in_flight: int
    body_timeout_seconds: float = 20.0
    body_min_rate_bytes: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        pool = settings.db_pool_size + settings.db_max_overflow
        return cls(
            max_head_bytes=MAX_HEAD_BYTES,
            header_timeout_seconds=settings.header_timeout_seconds,
            max_connections=_within_fd_limit(settings.max_connections, reserved=pool),
            max_requests_in_flight=settings.max_requests_in_flight,
            body_timeout_seconds=settings.body_timeout_seconds,
            body_min_rate_bytes=settings.body_min_rate_bytes,
        )


def _within_fd_limit(wanted: int, reserved: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = max(1, soft - reserved - _RESERVED_FDS)
    if wanted > room:
        logger.warning(
            "max_connections lowered from %d to %d: the file-descriptor limit is %d",
            wanted,
            room,
            soft,
        )
        return room
    return wanted


def render_refusal_in_dialect(path: str, error: TranscriptsError) -> Response:
    """The error body of the path's dialect, as the application itself chooses it."""
    return dialect_for_path(DIALECTS, path).render_error(error)


def guarded_protocol(
    settings: Settings, render_refusal: RefusalRenderer = render_refusal_in_dialect
) -> Callable[..., GuardedHttpToolsProtocol]:
    """What uvicorn's ``http=`` takes: it calls it as it would a protocol class.

    A partial of module-level objects, so that it pickles into ``--workers`` processes.
    """
    return functools.partial(
        GuardedHttpToolsProtocol,
        limits=ConnectionLimits.from_settings(settings),
        render_refusal=render_refusal,
    )


class _Throttled:
    """One warning at most every ``interval`` seconds for a kind of refusal, with a count."""

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self.interval = interval
        self.count = 0
        self.last = -interval

    def __call__(self, count: int = 1) -> None:
        if not count:
            return
        self.count += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            logger.warning(self.message, self.count)
            self.count = 0
            self.last = now


_warn_made_room = _Throttled("%d connection(s) waiting for a head closed: max_connections open")
_warn_over_connections = _Throttled("%d connection(s) closed unread: max_connections busy")
_warn_over_head = _Throttled("%d request head(s) refused (431): over the byte cap")
_warn_timed_out = _Throttled("%d connection(s) closed: request head not complete in time")
_warn_slow_body = _Throttled("%d request(s) refused (408): body not complete in time")
_warn_overloaded = _Throttled("%d request(s) refused (503): max_requests_in_flight reached")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # The request path (a keep-alive read) passes through three overrides here:
    # data_received, _start_asgi_task and on_response_complete. Each calls uvicorn's method
    # by its class, not through super(), which on Python 3.11 builds an object per call;
    # the state they keep is a few integers and one clock read (bench/protocol_cost.py).

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
        render_refusal: RefusalRenderer,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.render_refusal = render_refusal
        self.max_head_bytes = limits.max_head_bytes
        self.max_requests_in_flight = limits.max_requests_in_flight
        # What the awaited head may still take. A head is awaited while no request's body
        # is arriving: before the first request, and after each request's last byte.
        self.head_budget = limits.max_head_bytes
        # When the awaited head's time began: the connection, or the latest response.
        self.head_since = 0.0
        self.head_timer: asyncio.TimerHandle | None = None
        # The body being watched (see the module's docstring): when its time began, and the
        # bytes received since. None while no request with a body is in flight.
        self.body_since: float | None = None
        self.body_received = 0
        # A refusal of a pipelined head, waiting for the answers to the requests before it.
        self.refusal_due: TranscriptsError | None = None

    # -------------------------------------------------------------- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            _warn_over_connections()
            self.connections.discard(self)
            transport.close()
            return
        self.head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._check_time)

    def _make_room(self) -> bool:
        """Close the connections that have waited longest for a request head, as nginx
        reuses its idle connections: a batch of them, so that the search over every open
        connection is not made again for each connection of a flood."""
        cap = self.limits.max_connections
        waiting = [
            protocol
            for protocol in self.connections
            if isinstance(protocol, GuardedHttpToolsProtocol)
            and protocol is not self
            and protocol.awaits_head()
        ]
        batch = len(self.connections) - cap + cap // 32
        oldest = heapq.nsmallest(batch, waiting, key=attrgetter("head_since"))
        for protocol in oldest:
            protocol.give_up_on_head()
        _warn_made_room(len(oldest))
        return len(self.connections) <= cap

    def awaits_head(self) -> bool:
        cycle = self.cycle
        waiting = cycle is None or cycle.response_complete
        return waiting and not self.transport.is_closing()

    def give_up_on_head(self) -> None:
        """Close, with a 408 if part of a request arrived; an idle connection silently."""
        # Out of the count at once: it no longer holds a place a new connection could take.
        self.connections.discard(self)
        if self.head_budget < self.max_head_bytes:
            self._refuse(RequestTimeout())
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:  # else it would keep this protocol alive until due
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is None or not cycle.more_body:  # a head is awaited
            if len(data) > self.head_budget or not data.endswith(b"\r\n\r\n"):
                self._feed_heads(data)
                return
            # The usual read: the rest of a head, within its budget, and nothing after it
            # (a read that ends a head in head state ends every head it holds).
            HttpToolsProtocol.data_received(self, data)
            self.head_budget = self.max_head_bytes
            return
        self.body_received += len(data)
        HttpToolsProtocol.data_received(self, data)

    def _feed_heads(self, data: bytes) -> None:
        """Any other read: fed to the parser a head at a time, cut after each blank line,
        so that each head is counted from its own first byte (pipelined heads in one read
        included) and the parser is fed no byte of a head past the cap."""
        while data:
            cycle = self.cycle
            if cycle is not None and cycle.more_body:
                # A body: the rest of the read is its (a head after it in the same read is
                # counted from the next read on).
                self.body_received += len(data)
                HttpToolsProtocol.data_received(self, data)
                return
            budget = self.head_budget
            end = data.find(b"\r\n\r\n", 0, budget)
            if end < 0 and len(data) <= budget:  # a head's beginning, within its budget
                self.head_budget = budget - len(data)
                HttpToolsProtocol.data_received(self, data)
                return
            piece = data[: end + 4] if end >= 0 else data[:budget]
            data = data[len(piece) :]
            self.head_budget = budget - len(piece)
            if piece:
                HttpToolsProtocol.data_received(self, piece)
                if self.transport.is_closing():  # the parser refused it (400)
                    return
            if self.cycle is not cycle:  # a head ended: the next one has the whole budget
                self.head_budget = self.max_head_bytes
            elif end < 0:  # no head ended within the budget
                _warn_over_head()
                self._refuse_in_turn(
                    HeadersTooLarge(f"The request head exceeds {self.max_head_bytes} bytes.")
                )
                return

    def _refuse_in_turn(self, error: TranscriptsError) -> None:
        """Refuse the head being received once the requests before it are answered: a
        pipelining client reads its answers in the order of its requests."""
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.pipeline:
            self._refuse(error)
            return
        # Nothing more is read, or fed to the parser, meanwhile.
        self.refusal_due = error
        self.flow.pause_reading()

    # -------------------------------------------------------------- requests

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # An open live stream waits for turns, holding no database connection: it is bounded
        # by max_connections and STREAM_MAX_PER_CALLER, not by the requests being answered.
        if len(self.tasks) - live.open_streams() >= self.max_requests_in_flight:
            _warn_overloaded()
            app = self._answer_overloaded
        elif cycle.scope["method"] not in _BODILESS:
            cycle.send = _closing_if_body_unread(cycle)  # type: ignore[method-assign,assignment]
            self._watch_body()
        HttpToolsProtocol._start_asgi_task(self, cycle, app)

    def _watch_body(self) -> None:
        self.body_since = self.loop.time()
        self.body_received = 0
        # The timer may be set for the head timeout, later than this body's first deadline.
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._check_time)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            # Answered before its body arrived: reading the rest only to discard it is
            # work a client can ask for without end.
            self.transport.close()
        self.body_since = None
        HttpToolsProtocol.on_response_complete(self)
        self.head_since = self.loop.time()
        if self.refusal_due is not None:
            self._refuse_in_turn(self.refusal_due)

    async def _answer_overloaded(self, scope: Any, receive: Any, send: Any) -> None:
        response = self.render_refusal(scope["path"], ServiceUnavailable(_OVERLOADED))
        response.headers["retry-after"] = "1"
        response.headers["connection"] = "close"
        await response(scope, receive, send)

    # -------------------------------------------------------------- refusals

    def _check_time(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        timeout = self.limits.header_timeout_seconds
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete
        if in_flight and cycle.more_body and self.body_since is not None:
            self._check_body_time(cycle)
            return
        waited = 0.0 if in_flight else self.loop.time() - self.head_since
        if waited < timeout:
            # Not yet, or a request is being answered: look again when it could be due.
            self.head_timer = self.loop.call_later(timeout - waited, self._check_time)
            return
        _warn_timed_out()
        self.give_up_on_head()

    def _check_body_time(self, cycle: RequestResponseCycle) -> None:
        limits = self.limits
        now = self.loop.time()
        if cycle.waiting_for_100_continue or self.flow.read_paused:
            # The route has not asked for the body, or has not taken what came: the client
            # is not the one keeping it waiting. Its time starts over from here.
            self.body_since, self.body_received = now, 0
        assert self.body_since is not None
        due = (
            self.body_since
            + limits.body_timeout_seconds
            + self.body_received / limits.body_min_rate_bytes
        )
        if now < due:
            self.head_timer = self.loop.call_later(due - now, self._check_time)
            return
        _warn_slow_body()
        if cycle.response_started:
            self.transport.close()
        else:
            self._refuse(RequestTimeout(_SLOW_BODY))

    def _refuse(self, error: TranscriptsError) -> None:
        """Answer ``error`` in the dialect of the path received so far, and close."""
        url: bytes = getattr(self, "url", b"")
        response = self.render_refusal(url.split(b"?", 1)[0].decode("latin-1"), error)
        content = [STATUS_LINE[response.status_code]]
        for name, value in [*self.server_state.default_headers, *response.raw_headers]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"connection: close\r\n\r\n", bytes(response.body)])
        self.transport.write(b"".join(content))
        self.transport.close()


def _closing_if_body_unread(cycle: RequestResponseCycle) -> Callable[[Any], Any]:
    """``cycle.send``, which marks the connection for closing when a response starts before
    the request's body arrived whole (uvicorn then adds ``Connection: close``)."""
    send = cycle.send

    async def closing_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            # Its one job done: unhooked from the cycle, so that the cycle and this closure
            # do not hold each other, and reference counting frees them as the request ends
            # (a cycle between them left every request's scope and body to the collector).
            vars(cycle).pop("send", None)
            if cycle.more_body:
                cycle.keep_alive = False
        await send(message)

    return closing_send
