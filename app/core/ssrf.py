"""The SSRF guard for URLs a client gives us (webhooks): what may be called.

A URL is checked in two steps, when a job is submitted and again before
every delivery attempt. Its text first: http or https, no userinfo, and a
host that is a name, a canonical dotted-quad or a bracketed IPv6 address
(``2130706433``, ``0x7f.1``, ``017700000001`` and ``127.1`` all mean
127.0.0.1 to some parser, so any other numeric spelling is refused). Then
its host is resolved once and every address is checked; the caller connects
to the address that was checked, never to the name again, so a DNS answer
that changes between check and connect cannot move the request.

The address rules are tables, not Python's ``is_private``/``is_global``
flags: those changed between Python versions and call ``::ffff:127.0.0.1``
neither loopback nor private on some of them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = {"http": 80, "https": 443}

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: IPv4 ranges no webhook may reach, with the reason given to the client
FORBIDDEN_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved (IETF protocol assignments)"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay anycast)"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),  # includes the broadcast address
)

#: IPv6 ranges refused outright; anything outside 2000::/3 is refused too
FORBIDDEN_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("64:ff9b:1::/48"), "reserved (local-use NAT64)"),
    (_V6("100::/64"), "reserved (discard-only)"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("3fff::/20"), "reserved (documentation)"),
    (_V6("5f00::/16"), "reserved (segment routing)"),
    (_V6("fc00::/7"), "private (unique local)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "private (site-local)"),
    (_V6("ff00::/8"), "multicast"),
)
GLOBAL_UNICAST_V6 = _V6("2000::/3")
MAPPED_V6 = _V6("::ffff:0:0/96")
NAT64_V6 = _V6("64:ff9b::/96")

# a canonical dotted quad: four decimal numbers 0-255 without leading zeros
_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DOTTED_QUAD = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")
# a label a URL parser may read as a number: decimal, octal (leading 0) or hex
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|\d+)$")


class ForbiddenUrl(ValueError):
    """A URL the service will not call.

    ``permanent`` when the URL's text is the reason (a retry cannot help);
    otherwise what its host resolves to now is, and that may change.
    """

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class Unresolvable(Exception):
    """The host has no address now (no such name, or the lookup timed out)."""


@dataclass(frozen=True)
class Target:
    """A checked URL, in the parts an HTTP client needs."""

    scheme: str
    #: the host as written (lowercase; IPv6 without brackets): Host and SNI
    host: str
    port: int
    #: path and query
    path: str
    #: the host's address when the URL names one
    literal: IPAddress | None


@dataclass(frozen=True)
class Pinned:
    """A target and the checked addresses to connect to instead of its name."""

    target: Target
    addresses: tuple[str, ...]


# -- text ------------------------------------------------------------------------


def parse_url(url: str) -> Target:
    """The parts of ``url``, or ForbiddenUrl naming what is wrong with its text."""
    if not isinstance(url, str) or not url:
        raise ForbiddenUrl("the URL is empty")
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        raise ForbiddenUrl("the URL contains spaces, control characters or '\\'")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ForbiddenUrl(f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ForbiddenUrl(
            f"scheme {parts.scheme or '(none)'!r} is refused; use http or https"
        )
    if "@" in parts.netloc:
        raise ForbiddenUrl("userinfo (user:password@) is refused in a webhook URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise ForbiddenUrl("the URL has no host")
    literal = _literal(host, bracketed=parts.netloc.startswith("["))
    if literal is None:
        host = _ascii_name(host)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if port == 0:
        raise ForbiddenUrl("port 0 is refused")
    port = SCHEMES[scheme] if port is None else port
    return Target(scheme, host, port, path, literal)


def _literal(host: str, *, bracketed: bool) -> IPAddress | None:
    """The address a literal host names; refuses every non-canonical spelling."""
    if bracketed:
        if "%" in host:
            raise ForbiddenUrl("IPv6 zone identifiers are refused")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ForbiddenUrl(f"{host!r} is not an IPv6 address") from exc
    if _DOTTED_QUAD.match(host):
        return ipaddress.IPv4Address(host)
    # WHATWG and inet_aton read a host whose last label is a number as IPv4
    last = host.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.match(last):
        raise ForbiddenUrl(
            f"host {host!r} is a numeric spelling of an address; "
            "write IPv4 addresses as four decimal numbers (a.b.c.d)"
        )
    return None


def _ascii_name(host: str) -> str:
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ForbiddenUrl(f"host {host!r} is not a valid name") from exc
    if not re.fullmatch(r"[a-z0-9._-]+", name):
        raise ForbiddenUrl(f"host {host!r} is not a valid name")
    return name


# -- addresses ---------------------------------------------------------------------


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be called (e.g. ``"loopback"``), or None."""
    if isinstance(address, ipaddress.IPv4Address):
        for network, reason in FORBIDDEN_V4:
            if address in network:
                return reason
        return None

    # IPv6 forms that carry an IPv4 address are as good as the one they carry
    embedded = _embedded_v4(address)
    if embedded is not None:
        form, inner = embedded
        reason = forbidden_reason(inner)
        return f"{form} of {inner}, {reason}" if reason else None
    for network, reason in FORBIDDEN_V6:
        if address in network:
            return reason
    if address not in GLOBAL_UNICAST_V6:
        return "reserved (not global unicast)"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> tuple[str, IPAddress] | None:
    if address.ipv4_mapped is not None:
        return "IPv4-mapped form", address.ipv4_mapped
    if address in NAT64_V6:
        return "NAT64 form", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4 form", address.sixtofour
    if address.teredo is not None:
        server, client = address.teredo
        # a Teredo address names two IPv4 hosts; the worse one decides
        return "Teredo form", client if forbidden_reason(client) else server
    return None


def parse_allow_list(text: str) -> frozenset[tuple[str, int]]:
    """``"127.0.0.1:8080, [::1]:9000"`` as {(host, port)}; hosts in canonical form."""
    pairs: set[tuple[str, int]] = set()
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        host = host.strip("[]").lower()
        with contextlib.suppress(ValueError):
            host = str(ipaddress.ip_address(host))
        pairs.add((host, int(port)))
    return frozenset(pairs)


# -- resolution --------------------------------------------------------------------


def lookup(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (tests swap it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# getaddrinfo has no timeout: it runs here, and the caller waits only so long
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def resolve(
    target: Target, allow: Iterable[tuple[str, int]], *, timeout: float
) -> Pinned:
    """Look ``target``'s host up once and check every address it has.

    Raises ForbiddenUrl (not permanent) when any address is forbidden and
    not allowed by ``allow`` (``(host or address, port)`` pairs), and
    Unresolvable when there is no address within ``timeout`` seconds.
    """
    allowed = set(allow)
    if target.literal is not None:
        addresses = [str(target.literal)]
    else:
        future = _resolver.submit(lookup, target.host, target.port)
        try:
            addresses = future.result(timeout=max(timeout, 0.001))
        except FutureTimeout as exc:
            raise Unresolvable(
                f"looking up {target.host} took over {timeout:g} s"
            ) from exc
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"{target.host} does not resolve: {exc}") from exc
    if not addresses:
        raise Unresolvable(f"{target.host} has no address")

    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = forbidden_reason(address)
        if reason is None:
            continue
        if (str(address), target.port) in allowed or (
            target.host,
            target.port,
        ) in allowed:
            continue
        where = (
            f"{target.host} is {reason}"
            if target.literal is not None
            else f"{target.host} resolves to {address}, {reason}"
        )
        raise ForbiddenUrl(
            f"{where}; webhooks may only call public addresses", permanent=False
        )
    return Pinned(target, tuple(addresses))


def check(
    url: str, allow: Iterable[tuple[str, int]], *, timeout: float = 5.0
) -> Target:
    """The submission check: the text, and the addresses if the host resolves now.

    A name that does not resolve yet is accepted; every attempt checks again.
    """
    target = parse_url(url)
    with contextlib.suppress(Unresolvable):
        resolve(target, allow, timeout=timeout)
    return target
