"""uvicorn's HTTP protocol (httptools) with a deadline for a request's headers.

A connection whose headers are not complete HEADER_DEADLINE_S after it opened, or after
its next request began, is closed. uvicorn has no such limit: a tester held 50
connections open for a minute dribbling header bytes, no token needed (each one a file
descriptor). Bodies have their own pause limit (server._body), idle kept-alive
connections uvicorn's timeout_keep_alive. `serve` passes Protocol to uvicorn (a class at
module level: its worker processes import it by name). Behind a reverse proxy, the
proxy's own header and body timeouts apply first."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_DEADLINE_S = 10.0


class Protocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(HEADER_DEADLINE_S, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
