"""Rate limits per credential, counted with the ``limits`` library, and the headers that
say where a client stands.

Who pays: an API key (by the SHA-256 digest the database stores, never the key itself) or
an access token's user has a budget of ``TRANSCRIPTS_RATE_LIMIT`` requests per window; a
request with no credentials (the browser widget), or with credentials that cannot be valid
(malformed, expired, badly signed), draws on its client address's budget of
``TRANSCRIPTS_RATE_LIMIT_ANONYMOUS``. Every answer under a dialect's prefix carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the
window starts over, as in the IETF httpapi draft); past the budget the answer is a 429 in
the dialect's body, with ``Retry-After``.

Where: ``RateLimits`` is a pure-ASGI middleware between ``RequestGuard`` and ``HotReads``,
so one check covers the hot transcript reads and every FastAPI route alike, and no route
gains a dependency its hot read would have to apply (``dialects/hot.py``). Its refusals are
rendered like the guard's, in the body of the dialect the path falls under.

How: a fixed window per identity, ``limits``' fixed-window strategy (one counter, one
atomic increment). Against the moving window it gives up smoothness at the window's edge
(a client can spend two budgets in a short span across it) for O(1) state per client
instead of one timestamp per request, one Redis command instead of a script over a list,
and an exact ``Reset`` and ``Retry-After``: at the window's end the whole budget is back.
The increment answers the count, so a request costs one storage call; the window's end is
asked once per window and remembered.

Storage: ``memory://`` counts in the process (``MemoryWindows``; each worker process its
own budgets); ``redis://host:port/db`` (also ``rediss://``, ``redis+unix://``) shares the
budgets between processes and replicas, through ``limits``' RedisStorage (coredis). If
Redis does not answer within ``STORAGE_TIMEOUT_SECONDS``, requests are served without
limits and without the headers (failing open: an outage of the limiter's store must not
become an outage of the API), a warning is logged once per outage,
``transcripts_rate_limit_storage_failures_total`` counts the failures, and the store is
tried again ``STORAGE_RETRY_SECONDS`` later, so that during an outage requests do not each
wait for the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.storage.redis.coredis import CoredisBridge
from limits.errors import StorageError
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transcripts.auth import TokenVerifier, credentials_from_headers
from transcripts.domain import ApiKeyCredentials
from transcripts.errors import NotAuthenticated, RateLimited, TranscriptsError
from transcripts.settings import RATE_LIMIT_REDIS_SCHEMES, Settings

__all__ = [
    "RATE_LIMITED_HEADERS",
    "STORAGE_RETRY_SECONDS",
    "STORAGE_TIMEOUT_SECONDS",
    "Budget",
    "MemoryWindows",
    "Rate",
    "RateLimiter",
    "RateLimits",
    "open_storage",
    "throttled",
]

logger = logging.getLogger("transcripts.ratelimit")

# Redis on the same network answers in well under a millisecond; past this it is down.
STORAGE_TIMEOUT_SECONDS = 0.25
# How long requests go unlimited after a failure before the store is tried again.
STORAGE_RETRY_SECONDS = 5.0
# Bounds on what a process remembers (per active client): never a working set.
WINDOWS_REMEMBERED = 65536
IDENTITIES_REMEMBERED = 4096
_NAMESPACE = "transcripts"

ErrorResponder = Callable[[Request, TranscriptsError], Any]

# The headers of a 429, for the OpenAPI document (the three RateLimit-* are on every answer).
RATE_LIMITED_HEADERS: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (at least 1).",
        "schema": {"type": "integer"},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the window (also on every other answer).",
        "schema": {"type": "integer"},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the window (also on every other answer).",
        "schema": {"type": "integer"},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window starts over (also on every other answer).",
        "schema": {"type": "integer"},
    },
}


class Rate:
    """A ``limits`` rate, such as ``600/minute`` or ``10 per second``, with what every check
    needs worked out once (``limits``' own ``key_for`` costs more than the rest of one)."""

    __slots__ = ("_head", "_tail", "item", "limit", "limit_header", "seconds")

    def __init__(self, value: str) -> None:
        """ValueError for what the ``limits`` library cannot read."""
        parsed = parse(value)
        self.item: RateLimitItem = type(parsed)(
            parsed.amount, parsed.multiples, namespace=_NAMESPACE
        )
        self.limit = self.item.amount
        self.seconds = self.item.get_expiry()
        self.limit_header = b"%d" % self.limit
        self._head, _, self._tail = self.item.key_for("\x00").partition("\x00")

    def key_for(self, identity: str) -> str:
        """What ``self.item.key_for(identity)`` answers."""
        return f"{self._head}{identity}{self._tail}"


# What a check answers: the requests left in the window (below 0 once over the limit), and
# the seconds until the window ends.
Budget = tuple[int, int]


def throttled(wait_seconds: int) -> RateLimited:
    """Django REST framework's words (Oshara's API is DRF), with the wait as Retry-After."""
    unit = "second" if wait_seconds == 1 else "seconds"
    return RateLimited(
        f"Request was throttled. Expected available in {wait_seconds} {unit}.",
        retry_after=wait_seconds,
    )


class MemoryWindows(Storage):
    """In-process counters for fixed windows: a ``limits`` async storage whose upkeep does
    not grow with the number of clients.

    ``limits``' own async MemoryStorage starts a task after every increment that walks every
    key it holds: measured in process (``bench/ratelimit_cost.py``), that added about 20 µs
    to each request with 100 clients in their window, 100 µs with 1,000 and over 1 ms with
    10,000, where this storage adds 2 to 6 µs (a hot read is about 300 µs).
    Here a window that has ended is replaced when its key is next counted, and those of
    clients gone quiet are dropped by one pass every ``SWEEP_SECONDS``. One event loop owns
    the counters and no method awaits, so nothing needs a lock.
    """

    STORAGE_SCHEME = ["async+transcripts-memory"]
    SWEEP_SECONDS = 10.0

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        clock: Callable[[], float] = time.time,
        **_: Any,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, end)
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def _window(self, key: str, now: float) -> tuple[int, float] | None:
        window = self._windows.get(key)
        return window if window is not None and window[1] > now else None

    def count(self, key: str, expiry: int, now: float, amount: int = 1) -> tuple[int, float]:
        """``incr`` without a coroutine around it: the count, and when its window ends."""
        if now >= self._next_sweep:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._next_sweep = now + self.SWEEP_SECONDS
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            window = self._windows[key] = (amount, now + expiry)
        else:
            window = self._windows[key] = (window[0] + amount, window[1])
        return window

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.count(key, expiry, self._clock(), amount)[0]

    async def get(self, key: str) -> int:
        window = self._window(key, self._clock())
        return 0 if window is None else window[0]

    async def get_expiry(self, key: str) -> float:
        now = self._clock()
        window = self._window(key, now)
        return now if window is None else window[1]

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        return count

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)


def open_storage(url: str) -> Storage:
    """The ``limits`` async storage for ``memory://`` or a Redis URL; ValueError otherwise."""
    if url == "memory://":
        return MemoryWindows()
    if url.startswith(RATE_LIMIT_REDIS_SCHEMES):
        return RedisStorage(
            f"async+{url}",
            wrap_exceptions=True,
            connect_timeout=STORAGE_TIMEOUT_SECONDS,
            stream_timeout=STORAGE_TIMEOUT_SECONDS,
        )
    raise ValueError("the rate limit storage must be memory:// or a redis:// URL")


K = TypeVar("K")
V = TypeVar("V")


class _Bounded(OrderedDict[K, V]):
    """A mapping that forgets its oldest entry when full (in O(1): a plain dict's first
    entry is found by skipping over those deleted before it)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V) -> None:
        if len(self) >= self.size and key not in self:
            self.popitem(last=False)
        self[key] = value


class RateLimiter:
    """Fixed-window counting per identity in a ``limits`` storage, failing open."""

    def __init__(
        self,
        storage: Storage,
        *,
        per_credential: Rate,
        anonymous: Rate,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.storage = storage
        self.per_credential = per_credential
        self.anonymous = anonymous
        # When each key's current window ends (wall clock), as far as this process knows. A
        # fixed window's end is set by the increment that opens it and never moves, and its
        # key cannot open again before then: an end still ahead belongs to the window the
        # storage is counting, whichever process opened it.
        self._ends: _Bounded[str, float] = _Bounded(WINDOWS_REMEMBERED)
        # Counting in the process needs neither a coroutine nor a deadline.
        self.in_process = storage if isinstance(storage, MemoryWindows) else None
        self._unavailable_until = 0.0  # time.monotonic(); 0 while the storage answers
        self._failures = Counter(
            "transcripts_rate_limit_storage_failures",
            "Rate limit checks the storage failed to answer (the request was served).",
            registry=registry,
        )
        self.refusals = Counter(
            "transcripts_rate_limited_requests",
            "Requests answered 429 for being over their rate limit.",
            registry=registry,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: CollectorRegistry | None = None
    ) -> RateLimiter | None:
        """The configured limiter; None when rate limiting is switched off."""
        if not settings.rate_limit_enabled:
            return None
        return cls(
            open_storage(settings.rate_limit_storage_url),
            per_credential=Rate(settings.rate_limit),
            anonymous=Rate(settings.rate_limit_anonymous),
            registry=registry,
        )

    def hit_in_process(self, identity: str, rate: Rate) -> Budget:
        """``hit`` for a limiter counting in the process (``in_process`` is set)."""
        assert self.in_process is not None
        now = time.time()
        count, end = self.in_process.count(rate.key_for(identity), rate.seconds, now)
        return rate.limit - count, math.ceil(end - now)

    async def hit(self, identity: str, rate: Rate) -> Budget | None:
        """Count one request of ``identity``; None if the storage did not answer."""
        if self.in_process is not None:
            return self.hit_in_process(identity, rate)
        if self._unavailable_until and time.monotonic() < self._unavailable_until:
            return None
        key = rate.key_for(identity)
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_SECONDS):
                count, end = await self._count(key, rate.seconds)
        except (StorageError, TimeoutError) as error:
            self._failed(error)
            return None
        if self._unavailable_until:
            self._unavailable_until = 0.0
            logger.warning("rate limit storage answers again: rate limits apply")
        reset = math.ceil(end - time.time())
        return rate.limit - count, reset if reset > 0 else 0

    async def _count(self, key: str, seconds: int) -> tuple[int, float]:
        """The key's count with this request, and when its window ends."""
        count = await self.storage.incr(key, seconds)
        now = time.time()
        if count > 1:
            known = self._ends.get(key)
            if known is not None and known > now:
                return count, known
            end = await self.storage.get_expiry(key)
            # Redis answers whole seconds left, and none for a key without an expiry.
            if end >= now + 1:
                self._ends.remember(key, end)
                return count, end
            # No expiry (or under a second of it left): the increment that opened the window
            # may have been cut off before setting its expiry, which would leave the client
            # refused for good. Start the window over.
            await self.storage.clear(key)
            count = await self.storage.incr(key, seconds)
        end = now + seconds  # this increment opened the window
        self._ends.remember(key, end)
        return count, end

    def _failed(self, error: Exception) -> None:
        self._failures.inc()
        if not self._unavailable_until:
            cause = error.__cause__ or error
            logger.warning(
                "rate limit storage unreachable (%s: %s): serving requests without rate"
                " limits, trying it again every %.0f s",
                type(cause).__name__,
                cause,
                STORAGE_RETRY_SECONDS,
            )
        self._unavailable_until = time.monotonic() + STORAGE_RETRY_SECONDS

    async def close(self) -> None:
        storage = self.storage
        if isinstance(storage, RedisStorage) and isinstance(storage.bridge, CoredisBridge):
            # Otherwise the pool's sockets are left for the garbage collector to find.
            storage.bridge.storage.connection_pool.disconnect()


class RateLimits:
    """The pure-ASGI middleware: every request under one of ``prefixes`` is counted."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        prefixes: Iterable[str],
        token_verifier: TokenVerifier,
        render_error: ErrorResponder,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.verifier = token_verifier
        self.render_error = render_error
        self._exact = frozenset(prefixes)
        self._under = tuple(prefix + "/" for prefix in self._exact)
        # A client sends the same credential with every request: the identity a valid-looking
        # one stands for is remembered, keyed by the header as received, not worked out
        # again each time (hashing a key costs more than counting it).
        self._identities: _Bounded[tuple[bytes, bytes], str] = _Bounded(IDENTITIES_REMEMBERED)

    def _identity(self, scope: Scope) -> tuple[str, Rate]:
        # X-API-Key wins over Authorization, and the first of each counts, as for the reads.
        credential = None
        for header in scope["headers"]:
            name = header[0]
            if name == b"x-api-key":
                credential = header
                break
            if name == b"authorization" and credential is None:
                credential = header
        if credential is not None:
            identity: str | None = self._identities.get(credential)
            if identity is None:
                identity = self._credential_identity(*credential)
                if identity is not None:
                    self._identities.remember(credential, identity)
            if identity is not None:
                return identity, self.limiter.per_credential
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}", self.limiter.anonymous

    def _credential_identity(self, name: bytes, value: bytes) -> str | None:
        sent = value.decode("latin-1")
        api_key, authorization = (sent, None) if name == b"x-api-key" else (None, sent)
        try:
            credentials = credentials_from_headers(api_key, authorization, self.verifier)
        except NotAuthenticated:
            return None  # cannot be valid: the sender's address pays, as without credentials
        if isinstance(credentials, ApiKeyCredentials):
            return f"key:{credentials.key_hash}"
        return f"user:{credentials.user_id}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not (path.startswith(self._under) or path in self._exact):
            await self.app(scope, receive, send)
            return
        identity, rate = self._identity(scope)
        limiter = self.limiter
        if limiter.in_process is not None:
            budget: Budget | None = limiter.hit_in_process(identity, rate)
        else:
            budget = await limiter.hit(identity, rate)
        if budget is None:
            await self.app(scope, receive, send)
            return
        remaining, reset = budget
        headers = [
            (b"ratelimit-limit", rate.limit_header),
            (b"ratelimit-remaining", b"%d" % remaining if remaining > 0 else b"0"),
            (b"ratelimit-reset", b"%d" % reset),
        ]
        if remaining < 0:
            limiter.refusals.inc()
            response = self.render_error(Request(scope), throttled(reset if reset > 1 else 1))
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
