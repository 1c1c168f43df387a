"""What bounds a slow or hostile client at the HTTP server, before the app sees a request: `uvicorn_options`.

uvicorn alone closes an idle keep-alive connection (timeout_keep_alive) and answers 503 beyond
limit_concurrency, but it never closes a connection that sends its request a byte at a time (it has no
header or body timeout; the keep-alive timer is only armed after a response, and every byte received
disarms it). So a few hundred slowloris connections would each stay open for good, and max_connections of
them would make the server answer 503 to everyone. `GuardedH11Protocol` adds what is missing:

- the request head (request line and headers) must be complete within `head_timeout_s` of the
  connection's first byte of that request (or of its opening, or of the end of the previous request's body):
  sending faster does not extend it;
- the body must keep moving: at least BODY_MIN_BYTES (1 KiB) in every `body_timeout_s` (10 s) window, or
  the rest of the body, and all of it within BODY_MAX_S (10 minutes) of the end of the head. A slow but
  steady upload (4 MiB at 7 kB/s) is read to the end; a stalled one is answered 408 and closed;
- one peer address (an IPv6 /64) may hold at most `per_peer_connections` connections at once
  (`per_peer_limit`: a tenth of max_connections, at least 8); above that a new connection is answered 503
  and closed, so one host cannot take every connection the server accepts and deny everyone else.

A connection past the head deadline is closed (answered 408 if it had sent part of a head). The head is also
capped in size (MAX_HEAD_BYTES: answered 431 and closed above it, however it arrives), WebSocket upgrades are
refused (the service has none), and the listen backlog is bounded. What remains is a flood of connections from
many addresses, faster than they time out; that is for a reverse proxy or a firewall in front (behind one,
set FORWARDED_ALLOW_IPS to its address, so that the per-address lockout of grader/api/deps.py sees the
clients and not the proxy; the per-peer connection cap here counts the proxy's connections as one peer's, so
raise max_connections with it).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from grader.config import Settings

REQUEST_HEAD_TIMEOUT_S = 10.0
REQUEST_BODY_TIMEOUT_S = 10.0  # the body's progress window: BODY_MIN_BYTES in each, or the rest of the body
BODY_MIN_BYTES = 1024
BODY_MAX_S = 600.0  # the whole body, however steadily it arrives
MIN_PER_PEER_CONNECTIONS = 8
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together; a login cookie and a Bearer token fit many times
LISTEN_BACKLOG = 1024


def per_peer_limit(max_connections: int) -> int:
    """The connections one peer address may hold at once: a tenth of max_connections, at least 8 (a browser
    opens up to 6 per host, and a NAT puts several people behind one address)."""
    return max(MIN_PER_PEER_CONNECTIONS, max_connections // 10)


def peer_key(host: str) -> str:
    """The address a connection is counted under: the peer's IPv4 address, or its IPv6 /64 (one host usually
    holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _trusted_proxies(config: Any) -> Any:
    """The peers uvicorn takes X-Forwarded-For from (FORWARDED_ALLOW_IPS), or an empty set without proxy_headers."""
    if not getattr(config, "proxy_headers", False):
        return frozenset()
    allowed = getattr(config, "forwarded_allow_ips", None) or "127.0.0.1,::1"
    try:
        from uvicorn.middleware.proxy_headers import _TrustedHosts  # the very test uvicorn's middleware uses
        return _TrustedHosts(allowed)
    except (ImportError, ValueError, TypeError):  # another uvicorn: the exact addresses listed
        listed = allowed if isinstance(allowed, list) else allowed.split(",")
        return frozenset(item.strip() for item in listed)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request head, a minimum progress of the body, and a cap
    on the connections of one peer (module docstring)."""

    head_timeout_s = REQUEST_HEAD_TIMEOUT_S
    body_timeout_s = REQUEST_BODY_TIMEOUT_S
    body_min_bytes = BODY_MIN_BYTES
    body_max_s = BODY_MAX_S
    per_peer_connections: int | None = None  # None: no cap (uvicorn_options sets it from max_connections)
    # Open connections per peer key, shared by every protocol instance (and subclass) of this process. The
    # trusted proxies (FORWARDED_ALLOW_IPS) are not capped: all of a reverse proxy's clients come from it.
    _peers: ClassVar[dict[str, int]] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._guard: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._head_bytes, self._head_tail = 0, b""
        self._body_bytes, self._body_started_s = 0, 0.0
        self._peer: str | None = None
        super().connection_made(transport)
        if self._over_peer_limit():
            return
        self._arm("head", self.head_timeout_s)  # a connection that never sends anything is closed as well

    def _over_peer_limit(self) -> bool:
        cap = self.per_peer_connections
        host = self.client[0] if self.client else None
        if cap is None or host is None or host in _trusted_proxies(self.config):
            return False
        key = peer_key(host)
        peers = GuardedH11Protocol._peers
        if peers.get(key, 0) >= cap:
            self.logger.info("refusing a connection from %s: it holds %d connections already", key, cap)
            message = f"too many connections from {key}: at most {cap} at once".encode()
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"connection: close\r\nretry-after: 5\r\ncontent-length: "
                                 + str(len(message)).encode() + b"\r\n\r\n" + message)
            self.transport.close()
            return True
        peers[key] = peers.get(key, 0) + 1
        self._peer = key
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            peers = GuardedH11Protocol._peers
            left = peers.get(self._peer, 1) - 1
            if left > 0:
                peers[self._peer] = left
            else:
                peers.pop(self._peer, None)
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self._phase != "head":
            # The next request on a keep-alive connection begins (also after a body the app did not wait for:
            # answered early, its end took h11 back to IDLE within one read, unseen by _follow).
            self._arm("head", self.head_timeout_s)
        if self._phase == "head" and self._head_too_large(data):
            self._refuse_head()
            return
        if self._phase == "body":
            self._body_bytes += len(data)
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
        self._answer_and_close(431, "Request Header Fields Too Large",
                               f"the request head is larger than {MAX_HEAD_BYTES} bytes")

    def _answer_and_close(self, status: int, reason: str, message: str) -> None:
        if not self.transport.is_closing():
            body = message.encode()
            self.transport.write(f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: text/plain; "
                                 b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()  # a pipelined request may have been parsed just now

    def _follow(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":  # "head", or None for a pipelined request parsed after a response
                self._arm("body", self.body_timeout_s)
                self._body_bytes, self._body_started_s = 0, self.loop.time()
        elif state is h11.IDLE:
            if self._phase == "body":  # the body ended (and h11 moved on) while nobody was reading it
                self._arm("head", self.head_timeout_s)
        else:  # DONE, MUST_CLOSE, CLOSED, ERROR: nothing more to wait for from the client
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
        phase, self._guard = self._phase, None
        if phase == "body" and self._body_bytes >= self.body_min_bytes \
                and self.loop.time() - self._body_started_s < self.body_max_s:
            self._body_bytes = 0  # moving at the minimum rate: another window
            self._guard = self.loop.call_later(min(self.body_timeout_s, self._body_started_s + self.body_max_s
                                                   - self.loop.time()), self._expire)
            return
        self._phase = None
        if self.transport.is_closing():
            return
        self.logger.info("closing a connection from %s: its request was not complete in time",
                         self.client[0] if self.client else "?")
        # 408 when no answer has begun on this connection (h11's SEND_RESPONSE: a request is in, none sent) or a
        # head had begun; a connection that never sent a byte, or whose answer was given already, is just closed.
        started_head = phase == "head" and (self._head_bytes > 0 or self.conn.their_state is not h11.IDLE)
        if self.conn.our_state is h11.SEND_RESPONSE or started_head:
            self._answer_and_close(408, "Request Timeout", "the request was not complete in time")
        else:
            self.transport.close()


def guarded_protocol(head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S, body_timeout_s: float = REQUEST_BODY_TIMEOUT_S,
                     per_peer_connections: int | None = None, *, body_min_bytes: int = BODY_MIN_BYTES,
                     body_max_s: float = BODY_MAX_S) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with these limits (the defaults: no per-peer cap; tests use short deadlines)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s,
                 "per_peer_connections": per_peer_connections, "body_min_bytes": body_min_bytes,
                 "body_max_s": body_max_s})


def uvicorn_options(settings: Settings, *, head_timeout_s: float = REQUEST_HEAD_TIMEOUT_S,
                    body_timeout_s: float = REQUEST_BODY_TIMEOUT_S, body_min_bytes: int = BODY_MIN_BYTES,
                    body_max_s: float = BODY_MAX_S) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that bound what one client can hold.

    limit_concurrency: more than max_connections open connections (or requests in flight) are answered 503;
    timeout_keep_alive: an idle keep-alive connection is closed after http_keepalive_s;
    http: the h11 protocol with the head deadline, the body's minimum progress and the per-peer cap
    (`per_peer_limit(max_connections)`); h11_max_incomplete_event_size: the head's size cap.
    """
    return {
        "http": guarded_protocol(head_timeout_s, body_timeout_s, per_peer_limit(settings.max_connections),
                                 body_min_bytes=body_min_bytes, body_max_s=body_max_s),
        "ws": "none",
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.http_keepalive_s,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "backlog": LISTEN_BACKLOG,
    }
