"""Webhooks and bot integrations never make the server call into its own network unless
the installation allows it (RAPPORT_OUTBOUND_PRIVATE_OK)."""

import ipaddress
import socket
import ssl
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from rapport import outbound
from rapport.config import Settings
from rapport.db import Database
from rapport.jobs.worker import Worker
from tests.conftest import auth
from tests.factories import World
from tests.standin import serving
from tests.tls import self_signed


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:6379/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0:8000/",
        "http://localhost:8000/",
        "http://metadata.google.internal/",
        "ftp://files.example.com/",
        "file:///etc/passwd",
    ],
)
def test_private_and_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(outbound.Blocked):
        outbound.check_url(url, allow_private=False, resolve=False)


def test_public_addresses_pass_and_the_setting_lets_private_ones_through() -> None:
    outbound.check_url("https://93.184.215.14/hook", allow_private=False, resolve=False)
    outbound.check_url("https://hooks.example.com/x", allow_private=False, resolve=False)
    outbound.check_url("http://127.0.0.1:9/hook", allow_private=True)
    with pytest.raises(outbound.Blocked):  # not even allowed: only http(s) is ever called
        outbound.check_url("gopher://127.0.0.1/", allow_private=True)


def resolving_to(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", fake)


def test_a_name_that_resolves_to_a_private_address_is_refused_when_called(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolving_to(monkeypatch, "10.1.2.3")
    with pytest.raises(outbound.Blocked, match="resolves to 10.1.2.3"):
        outbound.check_url("https://hooks.example.com/x", allow_private=False)
    resolving_to(monkeypatch, "93.184.215.14")
    outbound.check_url("https://hooks.example.com/x", allow_private=False)


def test_the_api_refuses_private_webhooks_and_integrations(
    client: TestClient, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "outbound_private_ok", False)
    r = client.post(
        "/api/v1/webhooks",
        json={"url": "http://169.254.169.254/latest/meta-data/"},
        headers=auth(world.alice),
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "not a public address" in r.json()["detail"]
    r = client.post(
        "/api/v1/bot/integrations",
        json={"name": "orders", "url": "http://localhost:8080/orders?email={{ customer.email }}"},
        headers=auth(world.alice),
    )
    assert r.status_code == 422, r.text
    assert "local name" in r.json()["detail"]
    ok = client.post(
        "/api/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=auth(world.alice)
    )
    assert ok.status_code == 201, ok.text
    moved = client.patch(
        f"/api/v1/webhooks/{ok.json()['id']}",
        json={"url": "http://127.0.0.1:6379/"},
        headers=auth(world.alice),
    )
    assert moved.status_code == 422


def test_a_delivery_to_a_name_now_resolving_privately_fails_at_once(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "outbound_private_ok", False)
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://hooks.example.com/x", "events": ["message.received"]},
        headers=auth(world.alice),
    ).json()
    r = client.post(
        f"/api/v1/inboxes/{world.acme.inbox.id}/messages",  # type: ignore[union-attr]
        json={"external_id": "ssrf-1", "text": "hello", "from": {"email": "s@example.com"}},
        headers=auth(world.bob),
    )
    assert r.status_code == 201, r.text
    resolving_to(monkeypatch, "127.0.0.1")
    Worker(database, settings).run_until_idle(max_jobs=50)
    (delivery,) = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries", headers=auth(world.alice)
    ).json()
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert "resolves to 127.0.0.1" in delivery["error"]


def resolving_once_to(monkeypatch: pytest.MonkeyPatch, address: str) -> list[str]:
    """Names resolve to ``address`` the first time and to nothing after (an IP literal to
    itself): a second lookup of a name fails. Returns the names looked up."""
    asked: list[str] = []

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            literal = str(ipaddress.ip_address(host))
        except ValueError:
            asked.append(host)
            if len(asked) > 1:
                raise socket.gaierror("resolved once already") from None
            literal = address
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (literal, port))]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", fake)
    return asked


def test_a_call_goes_to_the_address_that_was_checked_with_the_name_as_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with serving(HTTPServer(("127.0.0.1", 0), Handler)) as server:
        asked = resolving_once_to(monkeypatch, "127.0.0.1")
        port = server.server_address[1]
        r = outbound.request(
            "GET", f"http://hooks.example.com:{port}/x", allow_private=True, timeout=5
        )
    assert r.status_code == 204
    assert seen == [f"hooks.example.com:{port}"]
    assert asked == ["hooks.example.com"]  # one lookup: the connection used its answer


def test_a_name_rebound_to_a_private_address_after_the_check_is_not_called_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[httpx.URL, dict[str, Any]]] = []

    def spy(method: str, url: httpx.URL, **kwargs: Any) -> httpx.Response:
        sent.append((url, kwargs))
        return httpx.Response(200)

    monkeypatch.setattr(outbound.httpx, "request", spy)
    asked = resolving_once_to(monkeypatch, "93.184.215.14")  # then 127.0.0.1, say
    outbound.request("POST", "https://hooks.example.com/x?a=1", allow_private=False, content=b"{}")
    ((url, kwargs),) = sent
    assert str(url) == "https://93.184.215.14/x?a=1"
    assert kwargs["headers"]["Host"] == "hooks.example.com"
    assert kwargs["extensions"]["sni_hostname"] == "hooks.example.com"  # and the cert check
    assert asked == ["hooks.example.com"]
    resolving_once_to(monkeypatch, "10.1.2.3")
    with pytest.raises(outbound.Blocked, match="resolves to 10.1.2.3"):
        outbound.request("POST", "https://hooks.example.com/x", allow_private=False)
    assert len(sent) == 1


def test_inbox_urls_into_our_own_network_are_refused_on_save(
    client: TestClient, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "outbound_private_ok", False)
    for channel, key, url in (
        ("api", "webhook_url", "http://169.254.169.254/latest/meta-data/"),
        ("telegram", "api_base_url", "http://localhost:8081"),
    ):
        r = client.post(
            "/api/v1/inboxes",
            json={"name": "x", "channel": channel, "settings": {key: url}},
            headers=auth(world.alice),
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"{key}: ")
    r = client.patch(
        f"/api/v1/inboxes/{world.acme.inbox.id}",  # type: ignore[union-attr]
        json={"settings": {"webhook_url": "http://10.0.0.7/replies"}},
        headers=auth(world.alice),
    )
    assert r.status_code == 422, r.text


def test_a_reply_to_an_api_inbox_whose_webhook_now_resolves_privately_fails_at_once(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "outbound_private_ok", False)
    inbox = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Shop",
            "channel": "api",
            "settings": {"webhook_url": "http://replies.example.com/hook"},
        },
        headers=auth(world.alice),
    ).json()
    posted = client.post(
        f"/api/v1/inboxes/{inbox['id']}/messages",
        json={"external_id": "ssrf-2", "text": "hi", "from": {"email": "r@example.com"}},
        headers=auth(world.bob),
    ).json()
    conv = posted["conversation_id"]
    reply = client.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "hello"}, headers=auth(world.bob)
    )
    assert reply.status_code == 201, reply.text
    resolving_to(monkeypatch, "127.0.0.1")
    Worker(database, settings).run_until_idle(max_jobs=50)
    last = client.get(f"/api/v1/conversations/{conv}", headers=auth(world.bob)).json()["messages"][
        -1
    ]
    assert last["status"] == "failed"
    assert "resolves to 127.0.0.1, not a public address" in last["error"]


def test_a_download_follows_redirects_checking_each_hop_and_keeping_credentials_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider's file URL often redirects (Twilio's to storage, say): each hop is checked
    like the first, and the account's credentials never go to another origin."""
    seen: list[tuple[int, str, str]] = []
    ports: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            port = self.server.server_address[1]
            seen.append((port, self.path, self.headers.get("Authorization", "")))
            hops = {
                "/start": "/same-origin",
                "/same-origin": f"http://127.0.0.1:{ports['cdn']}/file",
                "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            }
            if self.path in hops:
                self.send_response(302)
                self.send_header("Location", hops[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"data")

        def log_message(self, *args: Any) -> None:
            pass

    # Loopback stands in for the internet here; the metadata address stays what it is.
    public = outbound._public
    monkeypatch.setattr(outbound, "_public", lambda ip: str(ip) == "127.0.0.1" or public(ip))
    with (
        serving(HTTPServer(("127.0.0.1", 0), Handler)) as api_server,
        serving(HTTPServer(("127.0.0.1", 0), Handler)) as cdn_server,
    ):
        ports["api"], ports["cdn"] = api_server.server_port, cdn_server.server_port
        api = f"http://127.0.0.1:{ports['api']}"
        with outbound.stream(
            "GET", f"{api}/start", allow_private=False, headers={"Authorization": "Basic x"}
        ) as r:
            assert r.read() == b"data"
        assert seen == [
            (ports["api"], "/start", "Basic x"),
            (ports["api"], "/same-origin", "Basic x"),  # same origin: still theirs
            (ports["cdn"], "/file", ""),  # another origin: not
        ]
        with pytest.raises(outbound.Blocked, match="169.254.169.254"):
            with outbound.stream("GET", f"{api}/to-metadata", allow_private=False):
                pass


def test_a_name_that_does_not_resolve_is_not_left_to_the_client_to_look_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resolver that fails the check's lookup could answer a private address to the
    HTTP client's own: the call never happens."""
    sent: list[Any] = []
    monkeypatch.setattr(outbound.httpx, "request", lambda *a, **k: sent.append(a))

    def failing(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror("SERVFAIL")

    monkeypatch.setattr(outbound.socket, "getaddrinfo", failing)
    with pytest.raises(httpx.ConnectError, match="does not resolve"):
        outbound.request("GET", "https://files.example.com/f", allow_private=False)
    assert sent == []


def test_a_download_never_falls_back_from_https_to_plain_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolving_to(monkeypatch, "93.184.215.14")
    fetched: list[str] = []

    class Redirect:
        def __init__(self, method: str, url: httpx.URL, **kwargs: Any) -> None:
            fetched.append(str(url))
            request = httpx.Request(method, url)
            self.response = httpx.Response(
                302, headers={"Location": "http://cdn.example.com/f"}, request=request
            )

        def __enter__(self) -> httpx.Response:
            return self.response

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(outbound.httpx, "stream", Redirect)
    with pytest.raises(outbound.Blocked, match="https to plain http"):
        with outbound.stream("GET", "https://files.example.com/f", allow_private=False):
            pass
    assert fetched == ["https://93.184.215.14/f"]  # the first hop only


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 (RFC 6052) of 169.254.169.254
        "http://[64:ff9b::a00:7]/",  # NAT64 of 10.0.0.7
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "http://[::ffff:0:a00:7]/",  # IPv4-translated (SIIT) 10.0.0.7
    ],
)
def test_ipv6_forms_carrying_a_private_ipv4_address_are_refused(url: str) -> None:
    # On a host behind a NAT64 gateway these reach the IPv4 address they carry.
    with pytest.raises(outbound.Blocked):
        outbound.check_url(url, allow_private=False, resolve=False)


def test_ipv6_forms_carrying_a_public_ipv4_address_are_allowed() -> None:
    outbound.check_url("http://[64:ff9b::808:808]/", allow_private=False, resolve=False)


def test_calls_share_one_certificate_check_which_still_refuses_a_certificate_nobody_signed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # httpx made a TLS context for every call, reading the whole certificate bundle again:
    # 10-20 ms of CPU each webhook delivery, provider send or download.
    made: list[object] = []
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args or kwargs)
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    outbound._tls_context.cache_clear()  # as in a process making its first call

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    secure = HTTPServer(("127.0.0.1", 0), Handler)
    secure.socket = self_signed(tmp_path).wrap_socket(secure.socket, server_side=True)
    with serving(HTTPServer(("127.0.0.1", 0), Handler)) as plain, serving(secure) as tls:
        for _ in range(3):
            r = outbound.request(
                "GET", f"http://127.0.0.1:{plain.server_address[1]}/", allow_private=True
            )
            assert r.status_code == 204
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            outbound.request(
                "GET", f"https://127.0.0.1:{tls.server_address[1]}/", allow_private=True
            )
    assert len(made) == 1
