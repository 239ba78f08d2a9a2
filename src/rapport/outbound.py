"""Which addresses Rapport may call on a workspace admin's say-so (webhooks, bot
integrations, a provider's API address) or a provider's (the files customers send).

An admin types a URL and Rapport's server calls it: without a check, that is a way to make
the server probe its own network (a database's port, a cloud's metadata service at
169.254.169.254). By default such URLs are refused: a host that is, or resolves to, a
loopback, private, link-local or otherwise non-public address. ``RAPPORT_OUTBOUND_PRIVATE_OK=1``
allows them, for an installation whose webhooks go to services on its own network.

The check runs when the URL is saved (literal addresses and ``localhost``) and again at
every call, by ``request``: it resolves the name once, checks every address it gets, and
connects to the address it checked (the name still in the Host header and, over TLS, in
SNI and the certificate check). A name that answers a public address to the check and a
private one a moment later (DNS rebinding) therefore reaches nothing it should not.
"""

import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from rapport.cache import Once
from rapport.problems import Invalid


class Blocked(ValueError):
    """The URL points where Rapport does not call. Its text names the host (a customer's
    own, in a payload); ``reason`` says why in a word, for the logs."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_HINT = "(set RAPPORT_OUTBOUND_PRIVATE_OK=1 to allow addresses on your own network)"


# IPv6 prefixes whose addresses carry an IPv4 one a gateway reaches: NAT64's (RFC 6052)
# and IPv4-translated (SIIT, RFC 2765) in their last 32 bits.
_CARRY_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))


def _public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        carried = ip.ipv4_mapped or ip.sixtofour  # ::ffff:a.b.c.d, 6to4's 2002::/16
        if carried is None and any(ip in net for net in _CARRY_IPV4):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None:
            return _public(carried)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool, resolve: bool = True) -> None:
    """Raise ``Blocked`` when ``url`` is not http(s) or its host is not public."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # an unclosed IPv6 bracket, a port that is not a number
        raise Blocked(f"the URL cannot be read: {exc}", reason="unreadable") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise Blocked("the URL must be http:// or https:// with a host", reason="not_http")
    if allow_private:
        return
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if not _public(literal):
            raise Blocked(f"{host} is not a public address {_HINT}", reason="private_address")
        return
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise Blocked(f"{host} is a local name {_HINT}", reason="local_name")
    if resolve:
        _resolve(host, port or 443, allow_private=False)


def check_saved(url: str, *, allow_private: bool, what: str = "") -> None:
    """``check_url`` for a URL an admin is saving (the host as typed; the name is resolved
    at each call): an ``Invalid`` problem, its detail prefixed with ``what``, if it fails."""
    try:
        check_url(url, allow_private=allow_private, resolve=False)
    except Blocked as exc:
        raise Invalid(f"{what}: {exc}" if what else str(exc)) from exc


def _resolve(host: str, port: int, *, allow_private: bool) -> str | None:
    """The address to connect to for ``host`` (None if it does not resolve); ``Blocked``
    if any address it resolves to is not public, unless private ones are allowed."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return None  # the call itself fails, and says so
    addresses = [str(sockaddr[0]) for *_, sockaddr in infos]
    if not allow_private:
        for address in addresses:
            if not _public(ipaddress.ip_address(address)):
                raise Blocked(
                    f"{host} resolves to {address}, not a public address {_HINT}",
                    reason="resolves_private",
                )
    return addresses[0] if addresses else None


@Once
def _tls_context() -> ssl.SSLContext:
    """The certificate check every call shares: made once a process (the trusted
    certificates read, as httpx reads them, from ``SSL_CERT_FILE``/``SSL_CERT_DIR`` or
    certifi's bundle). httpx made one for each call, reading the whole bundle again: 10-20
    ms of CPU a webhook delivery, provider send or file download."""
    return httpx.create_ssl_context()


def request(method: str, url: str, *, allow_private: bool, **kwargs: Any) -> httpx.Response:
    """Call ``url`` (an httpx request, ``kwargs`` passed on) once it passes ``check_url``,
    at the very address that passed it; ``Blocked`` otherwise."""
    target, pinned = _pinned(url, allow_private, kwargs)
    return httpx.request(method, target, **pinned)


@contextmanager
def stream(
    method: str, url: str, *, allow_private: bool, max_redirects: int = 5, **kwargs: Any
) -> Iterator[httpx.Response]:
    """``request`` for a response read as it arrives (a file to download), following
    redirects itself: each hop is checked and pinned like the first, credentials
    (``headers["Authorization"]``, ``auth``) go no further than the origin they were given
    for, and https never falls back to plain http. ``Blocked`` if a hop points where
    Rapport does not call."""
    for _ in range(max_redirects + 1):
        target, pinned = _pinned(url, allow_private, kwargs)
        with httpx.stream(method, target, follow_redirects=False, **pinned) as response:
            if not response.has_redirect_location:
                yield response
                return
            hop = httpx.URL(url).join(response.headers["location"])
        if httpx.URL(url).scheme == "https" and hop.scheme != "https":
            raise Blocked("a redirect from https to plain http", reason="https_downgrade")
        if _origin(hop) != _origin(httpx.URL(url)):
            headers = {
                k: v
                for k, v in (kwargs.get("headers") or {}).items()
                if k.lower() != "authorization"
            }
            kwargs = {**kwargs, "headers": headers, "auth": None}
        url = str(hop)
    raise httpx.TooManyRedirects(f"more than {max_redirects} redirects", request=response.request)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _pinned(
    url: str, allow_private: bool, kwargs: dict[str, Any]
) -> tuple[httpx.URL, dict[str, Any]]:
    """The URL to connect to (the checked address in place of the name) and the request's
    arguments with the name as Host and, over TLS, as SNI."""
    check_url(url, allow_private=allow_private, resolve=False)
    kwargs = {"verify": _tls_context(), **kwargs}
    target = httpx.URL(url)
    host = target.raw_host.decode("ascii")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        address = _resolve(host, target.port or 443, allow_private=allow_private)
        if address is None:
            # Never left to the HTTP client to look up again: a second answer could be a
            # private address nobody checked.
            raise httpx.ConnectError(f"{host} does not resolve") from None
        kwargs = {
            **kwargs,
            "headers": {**(kwargs.get("headers") or {}), "Host": target.netloc.decode()},
        }
        if target.scheme == "https":
            kwargs["extensions"] = {**kwargs.get("extensions", {}), "sni_hostname": host}
        target = target.copy_with(host=address)
    return target, kwargs
