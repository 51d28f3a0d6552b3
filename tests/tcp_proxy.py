"""A TCP proxy on loopback that a test can cut, blackhole or slow down: a database outage
without touching the database server."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["open", "refuse", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "open"
        self.delay_seconds = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        """Drop every connection and refuse new ones, as a crashed or restarting server does."""
        self.mode = "refuse"
        self._flowing.set()
        self._close_all()

    def blackhole(self) -> None:
        """Keep connections open but forward nothing, as a network partition does."""
        self.mode = "blackhole"
        self._flowing.clear()

    def restore(self) -> None:
        self.mode = "open"
        self._flowing.set()

    async def stop(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, upstream_writer})
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                await self._flowing.wait()
                if self.mode == "refuse":
                    break
                if self.delay_seconds:
                    await asyncio.sleep(self.delay_seconds)
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)
