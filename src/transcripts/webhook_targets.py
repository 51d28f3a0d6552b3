"""Where a webhook may be sent: SSRF rules, checked on resolved addresses, not on URL text.

A name is resolved and every address it resolves to is checked before anything connects;
the attempt then connects to a checked address (the name only travels as the Host header
and TLS server name), so a DNS answer that changes between the check and the connection
(rebinding) cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

__all__ = ["ResolvedTarget", "TargetRefused", "check_url", "resolve_target"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 ranges that carry an IPv4 address inside: the IPv4 address is what gets reached.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The URL may not be a webhook target; the message says why (safe to show)."""


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    url: SplitResult
    hostname: str
    port: int
    addresses: tuple[str, ...]


def check_url(url: str, *, allow_private: bool) -> SplitResult:
    """The URL's own rules: https (http too with private targets allowed), a host, no
    credentials. Raises TargetRefused."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not one)
    except ValueError:
        raise TargetRefused("Must be an absolute https URL.") from None
    schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme not in schemes or not parts.hostname:
        raise TargetRefused("Must be an absolute https URL.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("Must not carry credentials.")
    if parts.fragment:
        raise TargetRefused("Must not carry a fragment.")
    return parts


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is on the public internet, looking through IPv6 forms that
    embed an IPv4 address (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[IPAddress] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if embedded:
            return all(is_public(inner) for inner in embedded)
    return address.is_global and not address.is_multicast


async def resolve_target(url: str, *, allow_private: bool) -> ResolvedTarget:
    """Check the URL, resolve its host and check every address. Raises TargetRefused."""
    parts = check_url(url, allow_private=allow_private)
    hostname = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(hostname)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                hostname, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            raise TargetRefused("The host name does not resolve.") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise TargetRefused("The host name does not resolve.")
    if not allow_private:
        for address in addresses:
            # Scope ids (fe80::1%eth0) are not part of the address.
            if not is_public(ipaddress.ip_address(address.split("%", 1)[0])):
                raise TargetRefused("Must resolve to public addresses only.")
    return ResolvedTarget(url=parts, hostname=hostname, port=port, addresses=tuple(addresses))
