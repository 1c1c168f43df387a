"""What bounds a slow or hostile client at the HTTP server, before the app sees a request: `uvicorn_options`.

uvicorn alone closes an idle keep-alive connection (timeout_keep_alive) and answers 503 beyond
limit_concurrency, but it never closes a connection that sends its request a byte at a time (it has no
header or body timeout; the keep-alive timer is only armed after a response, and every byte received
disarms it). So a few hundred slowloris connections would each stay open for good, and max_connections of
them would make the server answer 503 to everyone. `GuardedH11Protocol` adds the two missing deadlines:

- the request head (request line and headers) must be complete within `head_timeout_s` of the
  connection's first byte of that request (or of its opening): sending faster does not extend it;
- the body must be complete within `body_timeout_s` of the end of the head
  (max_request_bytes, 4 MiB, at 70 kB/s fits in 60 s).

A connection past either deadline is closed. The head is also capped in size (MAX_HEAD_BYTES: answered 431
and closed above it, however it arrives), WebSocket upgrades are refused (the service has none), and the
listen backlog is bounded. What remains is a flood of connections faster than they time out; that is for a
reverse proxy or a firewall in front (behind one, set FORWARDED_ALLOW_IPS to its address, so that the
per-address lockout of grader/api/deps.py sees the clients and not the proxy).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from grader.config import Settings

REQUEST_HEAD_TIMEOUT_S = 10.0
REQUEST_BODY_TIMEOUT_S = 60.0
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together; a login cookie and a Bearer token fit many times
LISTEN_BACKLOG = 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head and one on the body (module docstring)."""

    head_timeout_s = REQUEST_HEAD_TIMEOUT_S
    body_timeout_s = REQUEST_BODY_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._guard: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._head_bytes, self._head_tail = 0, b""
        super().connection_made(transport)
        self._arm("head", self.head_timeout_s)  # a connection that never sends anything is closed as well

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("head", self.head_timeout_s)  # the next request on a keep-alive connection begins
        if self._phase == "head" and self._head_too_large(data):
            self._refuse_head()
            return
        super().data_received(data)
        self._follow()

    def _head_too_large(self, data: bytes) -> bool:
        # h11's max_incomplete_event_size only bounds a head still incomplete after a read; a larger head that
        # arrives in one read would pass. So count the head's bytes up to its blank line, across reads.
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        before = self._head_bytes - len(self._head_tail)
        size = before + (end + 4 if end >= 0 else len(seen))
        self._head_bytes, self._head_tail = size, seen[-3:]
        return size > MAX_HEAD_BYTES

    def _refuse_head(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            message = f"the request head is larger than {MAX_HEAD_BYTES} bytes".encode()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                                 b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
                                 + str(len(message)).encode() + b"\r\n\r\n" + message)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined request may have been parsed just now

    def _follow(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase == "head":
                self._arm("body", self.body_timeout_s)
        elif state is not h11.IDLE:  # DONE, MUST_CLOSE, CLOSED, ERROR: nothing more to wait for from the client
            self._disarm()

    def _arm(self, phase: str, delay_s: float) -> None:
        self._disarm()
        self._phase = phase
        self._head_bytes, self._head_tail = 0, b""
        self._guard = self.loop.call_later(delay_s, self._expire)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
        self._guard = None
        self._phase = None

    def _expire(self) -> None:
        self._guard = None
        self._phase = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection from %s: its request was not complete in time",
                             self.client[0] if self.client else "?")
            self.transport.close()


def guarded_protocol(head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S,
                     body_timeout_s: float = REQUEST_BODY_TIMEOUT_S) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with other deadlines (tests use short ones)."""
    if head_timeout_s == REQUEST_HEAD_TIMEOUT_S and body_timeout_s == REQUEST_BODY_TIMEOUT_S:
        return GuardedH11Protocol
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s})


def uvicorn_options(settings: Settings, *, head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S,
                    body_timeout_s: float = REQUEST_BODY_TIMEOUT_S) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that bound what one client can hold.

    limit_concurrency: more than max_connections open connections (or requests in flight) are answered 503;
    timeout_keep_alive: an idle keep-alive connection is closed after http_keepalive_s;
    http: the h11 protocol with the head and body deadlines; h11_max_incomplete_event_size: the head's size cap.
    """
    return {
        "http": guarded_protocol(head_timeout_s, body_timeout_s),
        "ws": "none",
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.http_keepalive_s,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "backlog": LISTEN_BACKLOG,
    }
