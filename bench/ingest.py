"""Inbound messages per second through the API channel, against GET /healthz on the same server.

By default starts its own ``rapport serve`` on a fresh temporary SQLite database;
``--database-url postgresql://...`` uses PostgreSQL (its schema is emptied first);
``--url`` targets a running server (with ``--token``). Drives N messages at concurrency C,
then as many ``GET /healthz`` at the same concurrency, and prints one table; the last line
is JSON with ``msgs_per_s``, ``p50_ms``, ``p95_ms``, ``p99_ms``, ``healthz_per_s``, ``ratio``.

The load generator is a small keep-alive HTTP/1.1 client on raw asyncio streams, so that on
a 2-core machine the client costs the server as little as possible.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_post(host: str, path: str, token: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def messages(n: int, inbox_id: str, host: str, token: str, seed: int) -> list[bytes]:
    """N requests: a fifth from returning customers (threads continue), the rest new ones."""
    rng = random.Random(seed)
    path = f"/api/v1/inboxes/{inbox_id}/messages"
    returning: list[dict[str, str]] = []
    out = []
    for i in range(n):
        if returning and rng.random() < 0.2:
            sender = rng.choice(returning)
        else:
            tag = uuid.uuid4().hex[:12]
            if rng.random() < 0.5:
                sender = {"name": f"Customer {tag}", "email": f"{tag}@example.com"}
            else:
                sender = {
                    "name": f"Customer {tag}",
                    "phone": f"+1415{rng.randint(2000000, 9999999)}",
                }
            returning.append(sender)
        body = {
            "external_id": f"bench-{uuid.uuid4().hex}",
            "text": f"Hello, this is message {i}: where is my order #{rng.randint(1000, 99999)}?",
            "from": sender,
        }
        out.append(build_post(host, path, token, json.dumps(body).encode()))
    return out


async def drive(
    host: str, port: int, requests: list[bytes], concurrency: int, expect: int
) -> tuple[float, list[float], int]:
    """Send every request over ``concurrency`` connections; (seconds, latencies ms, errors)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        conn = Conn(host, port)
        try:
            while True:
                try:
                    raw = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                status, _ = await conn.request(raw)
                latencies.append((time.perf_counter() - t) * 1000)
                if status != expect:
                    errors += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU a process and its children (the ingest writer) have used (Linux),
    or 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
    except (OSError, IndexError, TypeError):
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(c) for c in children)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def start_server(database_url: str, port: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": database_url,
        "RAPPORT_SECRET_KEY": secrets.token_urlsafe(40),
        "RAPPORT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_ATTACHMENTS_DIR": str(tmp / "attachments"),
        "RAPPORT_LOG_LEVEL": "WARNING",
        "RAPPORT_DEMO": "0",
    }
    cli = [sys.executable, "-m", "rapport.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    password = secrets.token_urlsafe(16)
    subprocess.run(
        [
            *cli,
            "workspace",
            "create",
            "Bench",
            "--owner",
            "bench@example.com",
            "--password",
            password,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        [*cli, "token", "create", "--workspace", "Bench", "--email", "bench@example.com"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    server = subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env)
    return server, token


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{base} did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", "--messages", type=int, default=20_000)
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument(
        "--database-url", help="PostgreSQL URL for the server this starts (schema emptied)"
    )
    ap.add_argument("--url", help="a running server instead (needs --token)")
    ap.add_argument("--token")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rapport-bench-ingest-"))
    server = None
    backend = "running server"
    try:
        if args.url:
            if not args.token:
                raise SystemExit("--url needs --token")
            base, token = args.url.rstrip("/"), args.token
        else:
            url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
            backend = "PostgreSQL" if url.startswith("postgres") else "SQLite"
            if args.database_url:
                from sqlalchemy import text

                from rapport.db import Database

                db = Database(url)
                with db.engine.begin() as conn:
                    conn.execute(text("DROP SCHEMA public CASCADE"))
                    conn.execute(text("CREATE SCHEMA public"))
                db.dispose()
            server, token = start_server(url, args.port, tmp)
            base = f"http://127.0.0.1:{args.port}"
        wait_ready(base)
        headers = {"Authorization": f"Bearer {token}"}
        inbox = httpx.post(
            f"{base}/api/v1/inboxes", json={"name": "Bench API", "channel": "api"}, headers=headers
        )
        inbox.raise_for_status()
        inbox_id = inbox.json()["id"]
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        hostport = f"{host}:{port}"

        warm = messages(args.warmup, inbox_id, hostport, token, seed=1)
        asyncio.run(drive(host, port, warm, args.concurrency, 201))
        if args.database_url:
            # The planner's statistics as autovacuum keeps them once a database has been in
            # use a minute: a table never analyzed is planned as nearly empty (the ingest
            # lookups are planned the same either way; other statements may not be).
            from sqlalchemy import text

            from rapport.db import Database

            db = Database(args.database_url)
            # Outside a transaction: a rolled-back ANALYZE keeps row counts, not statistics.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
            db.dispose()
        load = messages(args.messages, inbox_id, hostport, token, seed=2)
        pid = server.pid if server is not None else None
        cpu = cpu_seconds(pid)
        secs, lat, errors = asyncio.run(drive(host, port, load, args.concurrency, 201))
        cpu = cpu_seconds(pid) - cpu
        health = [f"GET /healthz HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()] * args.messages
        asyncio.run(drive(host, port, health[: args.warmup], args.concurrency, 200))
        hcpu = cpu_seconds(pid)
        hsecs, hlat, herrors = asyncio.run(drive(host, port, health, args.concurrency, 200))
        hcpu = cpu_seconds(pid) - hcpu
    finally:
        if server is not None:
            server.terminate()
            server.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)

    rate, hrate = len(lat) / secs, len(hlat) / hsecs
    print()
    print(f"Ingest through the API channel ({backend}), {args.messages:,} messages", end="")
    print(f" at concurrency {args.concurrency}")
    # Server CPU per request (its threads and its writer process; 0 against --url): what a
    # request costs, whatever else shares the machine while the rates are measured.
    cpu_us, hcpu_us = cpu / len(lat) * 1e6, hcpu / len(hlat) * 1e6
    head = f"{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}{'cpu µs':>9}"
    print(f"{'':<22}{head}")
    for name, r, xs, errs, c in (
        ("POST .../messages", rate, lat, errors, cpu_us),
        ("GET /healthz", hrate, hlat, herrors, hcpu_us),
    ):
        cells = f"{pct(xs, 50):>10.1f}{pct(xs, 95):>10.1f}{pct(xs, 99):>10.1f}"
        print(f"{name:<22}{r:>10,.0f}{cells}{errs:>8}{c:>9,.0f}")
    print(f"ingest / healthz: {rate / hrate:.2f}")
    print(
        json.dumps(
            {
                "msgs_per_s": round(rate, 1),
                "p50_ms": round(pct(lat, 50), 2),
                "p95_ms": round(pct(lat, 95), 2),
                "p99_ms": round(pct(lat, 99), 2),
                "healthz_per_s": round(hrate, 1),
                "ratio": round(rate / hrate, 3),
                "errors": errors + herrors,
                "server_cpu_us_per_msg": round(cpu_us),
                "server_cpu_us_per_healthz": round(hcpu_us),
            }
        )
    )


if __name__ == "__main__":
    main()
