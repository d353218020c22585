"""uvicorn's HTTP protocol (httptools) with a deadline for a request's headers.

A connection whose headers are not complete HEADER_DEADLINE_S after it opened, after its
previous answer, or after its next request began, is closed. uvicorn has no such limit:
a tester held 50 connections open for a minute dribbling header bytes, no token needed
(each one a file descriptor). Bodies have their own limits (server._body), idle
kept-alive connections uvicorn's timeout_keep_alive. `serve` passes Protocol to uvicorn
(a class at module level: its worker processes import it by name). Behind a reverse
proxy, the proxy's own header and body timeouts apply first."""

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

    def on_response_complete(self) -> None:
        # The next request's headers are due from here: a lone CRLF after an answer (which
        # cancels uvicorn's keep-alive timer and begins no message) held a connection for
        # ever, and so did the rest of a body the answer did not wait for (a 401 or 408),
        # fed a byte at a time. A pipelined request already has its headers.
        waiting = bool(self.pipeline)
        super().on_response_complete()
        if not waiting and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
