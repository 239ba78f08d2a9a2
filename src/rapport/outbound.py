"""Which addresses Rapport may call on a workspace admin's say-so (webhooks, bot
integrations).

An admin types a URL and Rapport's server calls it: without a check, that is a way to make
the server probe its own network (a database's port, a cloud's metadata service at
169.254.169.254). By default such URLs are refused: a host that is, or resolves to, a
loopback, private, link-local or otherwise non-public address. ``RAPPORT_OUTBOUND_PRIVATE_OK=1``
allows them, for an installation whose webhooks go to services on its own network.

The check runs when the URL is saved (literal addresses and ``localhost``) and again before
every call (the name resolved then), since what a name resolves to can change; a name that
resolves to a public address at the check and a private one at the connection a moment
later (DNS rebinding) is not caught.
"""

import ipaddress
import socket
from urllib.parse import urlsplit


class Blocked(ValueError):
    """The URL points where Rapport does not call."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool, resolve: bool = True) -> None:
    """Raise ``Blocked`` when ``url`` is not http(s) or its host is not public."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise Blocked("the URL must be http:// or https:// with a host")
    if allow_private:
        return
    hint = "(set RAPPORT_OUTBOUND_PRIVATE_OK=1 to allow addresses on your own network)"
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not _public(literal):
            raise Blocked(f"{host} is not a public address {hint}")
        return
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise Blocked(f"{host} is a local name {hint}")
    if not resolve:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return  # does not resolve: the call itself fails, and says so
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if not _public(ip):
            raise Blocked(f"{host} resolves to {ip}, not a public address {hint}")
