"""How fast the inbox stays at scale: 1,000,000 conversations and 10,000,000 messages.

Fills a fresh database in bulk (SQLite by default, ``--database-url postgresql://...`` for
PostgreSQL), starts the real ``rapport serve`` on it, and measures over HTTP, with one agent's
token, the inbox list, opening a conversation, the unread counts and a full-text search, and
with an admin's, the health of every inbox (a week of done jobs, dead deliveries and
unreadable webhook calls filled beside the messages). Prints one table; the last line is
JSON with ``conversations``, ``messages``, ``list_p95_ms``, ``open_p95_ms``,
``unread_p95_ms``, ``search_p95_ms``, ``health_p95_ms``.

    python bench/inbox.py                       # 1M conversations, 10M messages, SQLite
    python bench/inbox.py --conversations 100000 --database-url postgresql://postgres@127.0.0.1/test
"""

import argparse
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

from rapport import migrate
from rapport.auth import service as auth
from rapport.auth.models import Role
from rapport.db import Database
from rapport.search import install as install_search_index
from rapport.workspaces import service as workspaces

WORDS = [
    "order",
    "refund",
    "delivery",
    "parcel",
    "invoice",
    "password",
    "account",
    "login",
    "payment",
    "card",
    "charge",
    "shipping",
    "address",
    "return",
    "broken",
    "late",
    "help",
    "thanks",
    "please",
    "where",
    "when",
    "cancel",
    "subscription",
    "upgrade",
    "discount",
    "coupon",
    "size",
    "color",
    "exchange",
    "warranty",
    "battery",
    "screen",
    "app",
    "crash",
]
RARE = ["espresso", "tandem", "kayak", "ukulele", "metronome", "sextant"]
CHUNK = 20_000
BENCH_PASSWORD = secrets.token_urlsafe(16)


def uid() -> str:
    return uuid.uuid4().hex


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(5, 14))
    if rng.random() < 0.001:
        words.append(rng.choice(RARE))
    return " ".join(words)


def fill(
    db: Database,
    workspace_id: str,
    inbox_ids: list[str],
    agent_ids: list[str],
    n_conv: int,
    per: int,
    seed: int,
) -> int:
    """Bulk-insert customers, conversations and messages; returns the number of messages."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    dialect = db.engine.dialect.name
    total = 0
    started = time.perf_counter()
    if dialect == "sqlite":
        # Bulk loads index afterwards: drop the full-text triggers, rebuild once at the end.
        with db.engine.begin() as conn:
            for trigger in (
                "messages_fts_ai",
                "messages_fts_ad",
                "messages_fts_au",
                "customers_fts_ai",
                "customers_fts_ad",
                "customers_fts_au",
            ):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
    conv_cols = (
        "id, workspace_id, customer_id, inbox_id, subject, status, priority, assignee_id, "
        "team_id, snoozed_until, first_response_at, resolved_at, last_activity_at, "
        "last_inbound_at, messages_count, created_at, assigned_at"
    )
    msg_cols = (
        "id, workspace_id, conversation_id, inbox_id, direction, kind, sender_type, sender_id, "
        "text, html, external_id, status, error, meta, created_at"
    )
    cust_cols = (
        "id, workspace_id, name, email, phone, attributes, first_seen_at, last_seen_at, "
        "created_at, updated_at"
    )
    for base in range(0, n_conv, CHUNK):
        customers, convs, msgs = [], [], []
        for _ in range(min(CHUNK, n_conv - base)):
            cid, conv_id = uid(), uid()
            created = now - timedelta(minutes=rng.randint(0, 2 * 365 * 24 * 60))
            roll = rng.random()
            status = "open" if roll < 0.07 else "pending" if roll < 0.10 else "resolved"
            assignee = rng.choice(agent_ids) if rng.random() < 0.8 else None
            last = created + timedelta(minutes=per * 7)
            customers.append(
                (
                    cid,
                    workspace_id,
                    f"Customer {base}",
                    f"c{cid[:12]}@example.com",
                    None,
                    "{}",
                    created,
                    last,
                    created,
                    created,
                )
            )
            convs.append(
                (
                    conv_id,
                    workspace_id,
                    cid,
                    rng.choice(inbox_ids),
                    "",
                    status,
                    "none",
                    assignee,
                    None,
                    None,
                    created + timedelta(minutes=5),
                    last if status == "resolved" else None,
                    last,
                    last,
                    per,
                    created,
                    created if assignee else None,
                )
            )
            for k in range(per):
                at = created + timedelta(minutes=7 * k)
                inbound = k % 2 == 0
                msgs.append(
                    (
                        uid(),
                        workspace_id,
                        conv_id,
                        convs[-1][3],
                        "inbound" if inbound else "outbound",
                        "message",
                        "customer" if inbound else "user",
                        cid if inbound else assignee,
                        sentence(rng),
                        None,
                        None,
                        "received" if inbound else "sent",
                        None,
                        "{}",
                        at,
                    )
                )
        with db.engine.begin() as conn:
            if dialect == "postgresql":
                raw = conn.connection.dbapi_connection
                assert raw is not None
                with raw.cursor() as cur:  # type: ignore[attr-defined]
                    for table, cols, rows in (
                        ("customers", cust_cols, customers),
                        ("conversations", conv_cols, convs),
                        ("messages", msg_cols, msgs),
                    ):
                        with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                            for row in rows:
                                copy.write_row(row)
            else:
                raw = conn.connection.dbapi_connection
                fmt = _sqlite_rows
                for table, cols, rows in (
                    ("customers", cust_cols, customers),
                    ("conversations", conv_cols, convs),
                    ("messages", msg_cols, msgs),
                ):
                    marks = ", ".join("?" * len(cols.split(",")))
                    raw.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", fmt(rows))  # type: ignore[union-attr]  # noqa: S608
        total += len(msgs)
        done = base + len(convs)
        rate = done / (time.perf_counter() - started)
        print(
            f"\r  filled {done:,} conversations, {total:,} messages ({rate:,.0f} conv/s)",
            end="",
            file=sys.stderr,
            flush=True,
        )
    print(file=sys.stderr)
    with db.engine.begin() as conn:
        install_search_index(conn)  # recreates the triggers and rebuilds the index
        conn.execute(text("ANALYZE"))
    return total


def fill_health(db: Database, workspace_id: str, inbox_ids: list[str], seed: int) -> None:
    """What an inbox's health reads beside its conversations: a week of the workspace's done
    jobs (ten a conversation of the last week, as ingest queues them), dead deliveries of
    some of its messages, and unreadable webhook calls, in the last day and before."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        recent = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT id FROM messages WHERE created_at > :since ORDER BY created_at DESC "
                    "LIMIT 2000"
                ),
                {"since": now - timedelta(days=7)},
            )
        ]
        week = conn.execute(
            text("SELECT count(*) FROM conversations WHERE created_at > :since"),
            {"since": now - timedelta(days=7)},
        ).scalar_one()
        jobs = [
            {
                "id": uid(),
                "name": rng.choice(["enrich", "route", "automation", "deliver"]),
                "ws": workspace_id,
                "args": json.dumps({"message_id": rng.choice(recent) if recent else uid()}),
                "state": "done",
                "at": now - timedelta(minutes=rng.randint(0, 7 * 24 * 60)),
            }
            for _ in range(int(week) * 10)
        ]
        jobs += [
            {
                "id": uid(),
                "name": "deliver",
                "ws": workspace_id,
                "args": json.dumps({"message_id": m}),
                "state": "dead",
                "at": now - timedelta(minutes=rng.randint(0, 30 * 24 * 60)),
            }
            for m in recent[:1000]
        ]
        for start in range(0, len(jobs), CHUNK):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, name, workspace_id, args, state, attempts, "
                    "max_attempts, run_at, created_at, finished_at) VALUES (:id, :name, :ws, "
                    ":args, :state, 1, 8, :at, :at, :at)"
                ),
                [
                    dict(
                        j, at=j["at"].strftime("%Y-%m-%d %H:%M:%S.%f") if db.is_sqlite else j["at"]
                    )
                    for j in jobs[start : start + CHUNK]
                ],
            )
        calls = [
            {
                "id": uid(),
                "ws": workspace_id,
                "inbox": rng.choice(inbox_ids),
                "at": now - timedelta(minutes=rng.randint(0, 30 * 24 * 60)),
            }
            for _ in range(5000)
        ]
        conn.execute(
            text(
                "INSERT INTO unparsed_payloads (id, workspace_id, inbox_id, body, error, "
                "created_at) VALUES (:id, :ws, :inbox, '{}', 'KeyError: from', :at)"
            ),
            [
                dict(c, at=c["at"].strftime("%Y-%m-%d %H:%M:%S.%f") if db.is_sqlite else c["at"])
                for c in calls
            ],
        )
        conn.execute(text("ANALYZE"))


def _sqlite_rows(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    # SQLAlchemy's SQLite DateTime text format, so the ORM reads these rows back as it wrote.
    return [
        tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in r)
        for r in rows
    ]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--conversations", type=int, default=1_000_000)
    ap.add_argument("--messages-per-conversation", type=int, default=10)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--requests", type=int, default=200, help="requests per measured operation")
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (the database is emptied)")
    ap.add_argument("--port", type=int, default=8766)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rapport-bench-inbox-"))
    url = args.database_url or f"sqlite:///{tmp / 'inbox.db'}"
    db = Database(url)
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate.upgrade(url)
    with db.session() as s:
        ws, owner = workspaces.create(
            s, name="Bench", owner_email="owner@bench.test", owner_password=BENCH_PASSWORD
        )
        agents = [
            workspaces.add_member(
                s,
                workspace_id=ws.id,
                email=f"agent{i}@bench.test",
                role=Role.agent,
                password=BENCH_PASSWORD,
                actor_role=Role.owner,
            )[1]
            for i in range(args.agents)
        ]
        token, _ = auth.create_token(
            s, user_id=agents[0].id, workspace_id=ws.id, name="bench", role=Role.agent
        )
        admin_token, _ = auth.create_token(
            s, user_id=owner.id, workspace_id=ws.id, name="bench", role=Role.owner
        )
        from rapport.channels.models import Inbox

        inboxes = [
            Inbox(workspace_id=ws.id, name=f"Inbox {i}", channel="api", public_token=uid())
            for i in range(5)
        ]
        s.add_all(inboxes)
        s.flush()
        workspace_id, inbox_ids, agent_ids = ws.id, [i.id for i in inboxes], [a.id for a in agents]
    print(
        f"filling {args.conversations:,} conversations x {args.messages_per_conversation} "
        f"messages ({db.engine.dialect.name})",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    messages = fill(
        db,
        workspace_id,
        inbox_ids,
        agent_ids,
        args.conversations,
        args.messages_per_conversation,
        seed=7,
    )
    fill_health(db, workspace_id, inbox_ids, seed=11)
    fill_s = time.perf_counter() - t0
    with db.engine.connect() as conn:
        sample = [
            r[0]
            for r in conn.execute(
                text("SELECT id FROM conversations ORDER BY random() LIMIT :n"),
                {"n": args.requests},
            )
        ]
    db.dispose()

    env = {
        **os.environ,
        "RAPPORT_DATABASE_URL": url,
        "RAPPORT_SECRET_KEY": secrets.token_urlsafe(40),
        "RAPPORT_DEMO": "0",
        "RAPPORT_PUBLIC_URL": f"http://127.0.0.1:{args.port}",
        "RAPPORT_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rapport.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--no-worker",
        ],
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{args.port}"
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        for _ in range(200):
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        rng = random.Random(3)
        ops = {
            "inbox list (open, newest)": lambda i: client.get(
                "/api/v1/conversations", params={"status": "open", "limit": 25}
            ),
            "inbox list (mine)": lambda i: client.get(
                "/api/v1/conversations", params={"assignee": "me", "limit": 25}
            ),
            "open a conversation": lambda i: client.get(
                f"/api/v1/conversations/{sample[i % len(sample)]}"
            ),
            "unread counts": lambda i: client.get("/api/v1/unread-counts"),
            "search (words)": lambda i: client.get(
                "/api/v1/search", params={"q": rng.choice(RARE)}
            ),
            "inbox health (admin, all)": lambda i: client.get(
                "/api/v1/inboxes/health", headers={"Authorization": f"Bearer {admin_token}"}
            ),
        }
        results: dict[str, list[float]] = {}
        for name, op in ops.items():
            op(0)  # warm
            times = []
            for i in range(args.requests):
                t = time.perf_counter()
                r = op(i)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:200]}")
            results[name] = times
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"Inbox at scale ({'PostgreSQL' if 'postgres' in url else 'SQLite'}): "
        f"{args.conversations:,} conversations, {messages:,} messages, filled in {fill_s:,.0f} s"
    )
    print(f"{'operation':<28}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, times in results.items():
        print(f"{name:<28}{pct(times, 50):>10.1f}{pct(times, 95):>10.1f}{max(times):>10.1f}")
    figures = {
        "conversations": args.conversations,
        "messages": messages,
        "list_p95_ms": round(
            max(
                pct(results["inbox list (open, newest)"], 95), pct(results["inbox list (mine)"], 95)
            ),
            1,
        ),
        "open_p95_ms": round(pct(results["open a conversation"], 95), 1),
        "unread_p95_ms": round(pct(results["unread counts"], 95), 1),
        "search_p95_ms": round(pct(results["search (words)"], 95), 1),
        "health_p95_ms": round(pct(results["inbox health (admin, all)"], 95), 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
