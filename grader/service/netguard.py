"""Where the service may send a webhook: never to its own neighbours unless an operator says so.

A callback_url comes from whoever submits; the service posts to it from inside
the hiring team's network. Without a fence it could be pointed at loopback, the
cloud metadata endpoint or any private host. So an address is refused when it is
loopback, private (RFC 1918, IPv6 unique-local), link-local (169.254/16 holds the
metadata service), shared (CGNAT 100.64/10), multicast, reserved or unspecified,
including the same addresses written as IPv4-mapped IPv6, unless it falls in one
of the operator's `webhook_allowed_networks`.

Checked twice: an IP literal is refused when the submission is accepted (a clear
400), and every name is resolved at delivery time and the request is sent to the
vetted address itself, so a name that resolves elsewhere later (DNS rebinding)
cannot slip past the check.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SHARED = ipaddress.ip_network("100.64.0.0/10")


class Refused(Exception):
    """The URL's host is (or resolves to) an address the service must not call."""


def parse_networks(cidrs: list[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _normal(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def why_refused(address: IPAddress, allowed: list[Network]) -> str | None:
    """None when the service may post to `address`, else what kind of address it is."""
    address = _normal(address)
    if any(address.version == n.version and address in n for n in allowed):
        return None
    for label, hit in (("loopback", address.is_loopback), ("unspecified", address.is_unspecified),
                       ("link-local", address.is_link_local),
                       ("private", address.is_private), ("multicast", address.is_multicast),
                       ("reserved", address.is_reserved),
                       ("shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in SHARED),
                       ("not globally routable", not address.is_global)):
        if hit:
            return label
    return None


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_accepted(url: str, allowed: list[Network]) -> None:
    """At submission time: refuse a URL whose host is a forbidden IP literal (names are checked at delivery)."""
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    if address is not None:
        reason = why_refused(address, allowed)
        if reason:
            raise Refused(f"callback_url points at a {reason} address ({address}); the service does not post to "
                          "loopback, private, link-local or metadata addresses unless an operator allows them "
                          "(GRADER_WEBHOOK_ALLOWED_NETWORKS)")


def resolve_for_delivery(url: str, allowed: list[Network]) -> tuple[str, str, str]:
    """(url with the vetted address in place of the name, Host header, TLS server name); Refused otherwise.

    Every address the name resolves to must be allowed (a name that mixes public and private
    answers is refused), and the request goes to the first one, so what was checked is what is called.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = literal_address(host)
    if address is not None:
        addresses = [address]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for a in addresses:
        reason = why_refused(a, allowed)
        if reason:
            raise Refused(f"{host} resolves to a {reason} address ({a}); refused")
    target = _normal(addresses[0])
    netloc = f"[{target}]" if target.version == 6 else str(target)
    if parts.port:
        netloc += f":{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), host_header, host
