"""The origins the widget's CORS preflights are granted to, held for a few seconds.

A preflight carries no credentials and no body, so anyone may send them as fast as they
like; answered from the database, each one read every active character's list of origins
(an amplification: one small unauthenticated request, one scan). Here every origin of every
active character is one set, loaded by one statement and kept ``WIDGET_ORIGINS_TTL_SECONDS``:
however many preflights arrive, a process reads the list at most once per period, and
concurrent preflights that find it stale wait on the same load. A character created or
changed through this process drops the set at once, so its new origins are granted on the
next preflight; other processes see the change within the period.

Only the preflight is answered from here: a stale grant lets a browser send the real
request, which its route still refuses (403) unless *its* character allows the origin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["WidgetOrigins"]

Loader = Callable[[], Awaitable[frozenset[str]]]


class WidgetOrigins:
    def __init__(self, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._origins: frozenset[str] = frozenset()
        self._fresh_until = float("-inf")
        self._loading: asyncio.Future[frozenset[str]] | None = None
        # Bumped by each invalidation: a load that began before one is not kept as fresh.
        self._generation = 0

    async def allows(self, origin: str, load: Loader) -> bool:
        """Whether some active character allows ``origin`` (compared lowercased)."""
        if self._clock() < self._fresh_until:
            return origin.lower() in self._origins
        return origin.lower() in await self._load(load)

    def invalidate(self) -> None:
        """Forget the set: a character's origins or its state changed."""
        self._generation += 1
        self._fresh_until = float("-inf")
        self._loading = None

    async def _load(self, load: Loader) -> frozenset[str]:
        loading = self._loading
        if loading is None:
            loading = self._loading = asyncio.ensure_future(self._run(load, self._generation))
        # Shielded: a preflight whose client went away does not cancel the others' load.
        return await asyncio.shield(loading)

    async def _run(self, load: Loader, generation: int) -> frozenset[str]:
        try:
            origins = await load()
        finally:
            if self._generation == generation:
                self._loading = None
        if self._generation == generation:
            self._origins = origins
            self._fresh_until = self._clock() + self._ttl
        return origins
