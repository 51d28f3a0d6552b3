"""Live transcripts: who is following which session, and what wakes them.

``LiveHub`` is owned by the application's lifespan. It learns that a session changed from
the database layer (``transcripts.db.live``): a LISTEN connection on PostgreSQL (one per
process, whichever replica wrote), the committed units of work on SQLite (one process).
A notice only says "session S has turns up to seq N" (or "is finalized"); each follower
then reads from the database what it has not sent yet, so a notice that is lost or
repeated costs a read, never a turn.

``follow`` is a stream's whole life, dialect-neutral: stored turns after the cursor first,
then each change as it is announced, then ``Finalized``. Bounds: each follower's queue of
notices holds ``stream_queue_size``; a follower that lets it fill (its client does not read,
so the stream is stuck sending) is dropped, and the writer, which only enqueues, never
waits. The queue is kept as what a follower does with it: it takes every waiting notice
at once and needs only the newest seq, so it is a count and a maximum, and waiting for it
is one ``asyncio.Event`` (no task per wait: an idle stream costs what it holds). A caller
holds at most ``stream_max_per_caller`` streams per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import suppress
from dataclasses import dataclass

from transcripts.db.engine import Database, is_unavailable
from transcripts.db.live import FINALIZED, InProcessNotices, LiveReads, PostgresListener
from transcripts.domain import LiveSession, LiveTurn
from transcripts.errors import RateLimited
from transcripts.settings import Settings

__all__ = [
    "Dropped",
    "Finalized",
    "Follower",
    "Heartbeat",
    "Idle",
    "LiveHub",
    "ShuttingDown",
    "follow",
    "open_streams",
]

logger = logging.getLogger(__name__)

# Turns read per statement while catching up: a long transcript goes out in pieces.
BATCH = 500
# How long a stream waits before reading again when the database cannot answer.
READ_RETRY_SECONDS = 0.5
# A hint for a client refused for having too many streams open.
TOO_MANY_RETRY_AFTER_SECONDS = 5


# Streams open in this process, every hub's: the server leaves them out of its count of
# requests in flight (transcripts.server).
_open = 0


def open_streams() -> int:
    return _open


@dataclass(frozen=True, slots=True)
class Finalized:
    session: LiveSession


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing happened for ``stream_idle_seconds``: the stream ends."""


@dataclass(frozen=True, slots=True)
class ShuttingDown:
    """The process is stopping: the stream ends, and the client should come back."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """The session is gone (deleted while followed)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing to send for a while: a comment keeps proxies from closing the connection."""


HEARTBEAT = Heartbeat()

Event = LiveTurn | Finalized | Idle | ShuttingDown | Dropped | Heartbeat


@dataclass(eq=False, slots=True)
class Follower:
    """One open stream: its session, what it has sent, and its queue of notices.

    It is also the stream's stop signal (``set``/``is_set``): set by the hub (the lifespan)
    or by sse-starlette on the server's exit signal, which comes first under uvicorn (it
    drains connections before the lifespan ends); sse-starlette only calls ``set()``."""

    session_id: str
    caller: Hashable
    capacity: int
    sent: int = 0
    # The queue: how many notices wait, and the newest seq among them.
    waiting: int = 0
    newest: int = 0
    stopped: bool = False
    # Ends the stream at once (set by the response): it fell behind.
    on_drop: Callable[[], None] | None = None
    dropped: bool = False
    # While the stream waits: what wakes it (a future, not an Event: an Event's deque of
    # waiters alone is about 600 bytes, per stream, for good).
    _waiter: asyncio.Future[None] | None = None

    def offer(self, seq: int) -> bool:
        """Queue a notice; False when the queue is full."""
        if self.waiting >= self.capacity:
            return False
        self.waiting += 1
        self.newest = max(self.newest, seq)
        self._wake()
        return True

    def set(self) -> None:
        self.stopped = True
        self._wake()

    def is_set(self) -> bool:
        return self.stopped

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def woken(self, deadline: float) -> bool:
        """Wait until woken (True) or until the loop's time ``deadline`` (False)."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            self._waiter = None


class LiveHub:
    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self.reads = LiveReads(database)
        self._by_session: dict[str, set[Follower]] = {}
        self._by_caller: dict[Hashable, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._in_process: InProcessNotices | None = None
        self._listener: PostgresListener | None = None
        if database.backend == "postgresql":
            self._listener = PostgresListener(
                settings.database_url,
                self.publish,
                self.wake_all,
                connect_timeout=settings.db_connect_timeout_seconds,
            )
        else:
            self._in_process = InProcessNotices(database, self.publish)

    @property
    def followers(self) -> int:
        return sum(len(followers) for followers in self._by_session.values())

    async def start(self) -> None:
        if self._listener is not None:
            self._task = asyncio.create_task(self._listener.run(), name="live-listener")

    @property
    def listening(self) -> bool:
        """Whether notices can arrive: the LISTEN connection is up (always, on SQLite)."""
        return self._listener is None or self._listener.connected.is_set()

    async def stop(self) -> None:
        for followers in list(self._by_session.values()):
            for follower in list(followers):
                follower.set()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._in_process is not None:
            self._in_process.close()

    def subscribe(self, session_id: str, caller: Hashable) -> Follower:
        """A new follower of the session; 429 past the caller's limit of open streams."""
        limit = self._settings.stream_max_per_caller
        if self._by_caller.get(caller, 0) >= limit:
            raise RateLimited(
                f"Too many open streams: at most {limit} per caller.",
                retry_after=TOO_MANY_RETRY_AFTER_SECONDS,
            )
        follower = Follower(session_id, caller, self._settings.stream_queue_size)
        self._by_session.setdefault(session_id, set()).add(follower)
        self._by_caller[caller] = self._by_caller.get(caller, 0) + 1
        global _open
        _open += 1
        return follower

    def unsubscribe(self, follower: Follower) -> None:
        followers = self._by_session.get(follower.session_id)
        if followers is None or follower not in followers:
            return
        followers.discard(follower)
        global _open
        _open -= 1
        if not followers:
            del self._by_session[follower.session_id]
        left = self._by_caller[follower.caller] - 1
        if left:
            self._by_caller[follower.caller] = left
        else:
            del self._by_caller[follower.caller]

    def publish(self, session_id: str, seq: int) -> None:
        """A session changed up to ``seq``: wake its followers that have not sent it.
        Never waits; a follower whose queue is full is dropped."""
        for follower in list(self._by_session.get(session_id, ())):
            if seq <= follower.sent:
                continue
            if not follower.offer(seq):
                self._drop(follower)

    def wake_all(self) -> None:
        """After notices may have been lost (the listening connection was down): every
        follower reads again from what it last sent."""
        for followers in list(self._by_session.values()):
            for follower in list(followers):
                if not follower.offer(FINALIZED):
                    self._drop(follower)

    def _drop(self, follower: Follower) -> None:
        if follower.dropped:
            return
        follower.dropped = True
        logger.info("live: dropped a stream of session %s that fell behind", follower.session_id)
        self.unsubscribe(follower)
        if follower.on_drop is not None:
            follower.on_drop()


async def follow(
    hub: LiveHub, follower: Follower, session_pk: int, after: int, settings: Settings
) -> AsyncIterator[Event]:
    """The stream of one session for ``follower``, from after seq ``after``.

    The follower is subscribed before the first read, so nothing announced after that read
    can be missed; the session's row is read before its turns, so once it says finalized
    the turns read next are all there will ever be. ``Heartbeat`` comes whenever
    ``stream_heartbeat_seconds`` pass with nothing else to send (here, not in a task of
    sse-starlette's: one task less per stream).
    """
    follower.sent = after
    loop = asyncio.get_running_loop()
    idle_until = loop.time() + settings.stream_idle_seconds
    try:
        while True:
            try:
                session = await hub.reads.session(session_pk)
                turns = [] if session is None else await _turns_after(hub, session_pk, follower)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database is away (a restart, a failover): the stream waits for it, and
                # reads again from what it last sent once it answers.
                logger.warning(
                    "live: cannot read session %s (%s)", follower.session_id, type(exc).__name__
                )
                await follower.woken(loop.time() + READ_RETRY_SECONDS)
                if follower.stopped:
                    yield ShuttingDown()
                    return
                continue
            if session is None:
                yield Dropped()
                return
            for turn in turns:
                follower.sent = turn.seq
                yield turn
            if turns:
                idle_until = loop.time() + settings.stream_idle_seconds
            if session.finalized_at is not None and len(turns) < BATCH:
                yield Finalized(session)
                return
            if len(turns) == BATCH:
                continue  # more to catch up on
            while True:
                if follower.stopped:
                    yield ShuttingDown()
                    return
                if follower.waiting:
                    # Every notice waiting, at once: one read covers them all.
                    follower.waiting = 0
                    if follower.newest > follower.sent:
                        break
                    continue
                now = loop.time()
                if now >= idle_until:
                    yield Idle()
                    return
                beat = now + settings.stream_heartbeat_seconds
                if not await follower.woken(min(beat, idle_until)) and beat <= idle_until:
                    yield HEARTBEAT
    finally:
        hub.unsubscribe(follower)


async def _turns_after(hub: LiveHub, session_pk: int, follower: Follower) -> list[LiveTurn]:
    return await hub.reads.turns_after(session_pk, follower.sent, BATCH)
