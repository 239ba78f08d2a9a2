"""The inbox's filters and sorts at scale: each list query's plan and p50 / p95.

Fills a database like bench/inbox.py (its ``fill``), then gives the conversations the
fields the filters read: priorities, waiting times, SLA rows with due times and states.
Measures ``conversations.search`` in process (the list endpoint minus HTTP), prints the
query plan of each (SQLite) and one table; then the saved views' counts beside the inbox
(``conversations.counts``, each list above saved as a view, up to ``COUNT_LIMIT`` each,
within ``COUNT_BUDGET``), all of them as one refresh of the sidebar
counts them when nothing is kept (the cache emptied first each time), and each view's
alone. The last line is JSON, the refresh's p95 under ``saved_view_counts_p95_ms``.

    python bench/inbox_filters.py                      # 1M conversations, SQLite
    python bench/inbox_filters.py --conversations 200000
"""

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

import rapport.models  # noqa: F401  (every table on the metadata)
from rapport.auth.models import Role
from rapport.channels.models import Inbox
from rapport.conversations import service as conversations
from rapport.conversations.models import Priority, SlaState, Status
from rapport.db import Base, Database
from rapport.workspaces import service as workspaces

sys.path.insert(0, str(Path(__file__).parent))
from inbox import BENCH_PASSWORD, fill, uid  # noqa: E402

VIEW_COUNTS = "each list above as a saved view, one statement each"


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conversations", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rapport-bench-filters-"))
    db = Database(f"sqlite:///{tmp / 'inbox.db'}")
    Base.metadata.create_all(db.engine)
    with db.session() as s:
        ws, _ = workspaces.create(
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
            )[1].id
            for i in range(20)
        ]
        inboxes = [
            Inbox(workspace_id=ws.id, name=f"Inbox {i}", channel=ch, public_token=uid())
            for i, ch in enumerate(("api", "email", "whatsapp", "webchat", "api"))
        ]
        s.add_all(inboxes)
        s.flush()
        workspace_id, inbox_ids = ws.id, [i.id for i in inboxes]
    fill(db, workspace_id, inbox_ids, agents, args.conversations, 1, seed=7)
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        # ~2% urgent, ~5% high; the open ones wait; SLA rows on open and pending ones.
        conn.execute(
            text(
                "UPDATE conversations SET priority = CASE abs(random()) % 100 "
                "WHEN 0 THEN 'urgent' WHEN 1 THEN 'urgent' WHEN 2 THEN 'high' WHEN 3 THEN 'high' "
                "WHEN 4 THEN 'high' WHEN 5 THEN 'high' WHEN 6 THEN 'high' ELSE 'none' END"
            )
        )
        conn.execute(
            text("UPDATE conversations SET waiting_since = last_inbound_at WHERE status = 'open'")
        )
        policy = uid()
        conn.execute(
            text(
                "INSERT INTO sla_policies (id, workspace_id, name, position, priorities, "
                "inbox_ids, labels, warn_before_minutes, created_at) "
                "VALUES (:id, :ws, 'Std', 0, '[]', '[]', '[]', 15, :now)"
            ),
            {"id": policy, "ws": workspace_id, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO conversation_slas (conversation_id, workspace_id, policy_id, "
                "next_due_at, state, announced, breaches, resolution_used_seconds) "
                "SELECT id, workspace_id, :policy, "
                "datetime(last_activity_at, '+' || (abs(random()) % 600) || ' minutes'), "
                "CASE abs(random()) % 20 WHEN 0 THEN 'breached' WHEN 1 THEN 'warning' "
                "ELSE 'ok' END, '[]', 0, 0 FROM conversations WHERE status != 'resolved'"
            ),
            {"policy": policy},
        )
        conn.execute(text("ANALYZE"))
    week_ago = now - timedelta(days=7)
    rng = random.Random(5)
    ops: dict[str, Callable[[], dict[str, Any]]] = {
        "newest (all)": lambda: {},
        "status open": lambda: {"status": Status.open},
        "channel whatsapp": lambda: {"channel": "whatsapp"},
        "inbox": lambda: {"inbox_id": rng.choice(inbox_ids)},
        "priority urgent": lambda: {"priority": Priority.urgent},
        "sla breached": lambda: {"sla_state": SlaState.breached},
        "last 7 days": lambda: {"active_from": week_ago},
        "sort oldest waiting": lambda: {"sort": conversations.Sort.waiting},
        "sort sla due": lambda: {"sort": conversations.Sort.sla_due},
        "open + urgent + sla due": lambda: {
            "status": Status.open,
            "priority": Priority.urgent,
            "sort": conversations.Sort.sla_due,
        },
        "mine + oldest waiting": lambda: {
            "assignee_id": rng.choice(agents),
            "sort": conversations.Sort.waiting,
        },
    }
    results: dict[str, list[float]] = {}
    plans: dict[str, str] = {}
    captured: list[str] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "conversations" in statement:
            captured.append(statement)

    with db.session(write=False) as s:
        for name, params in ops.items():
            event.listen(db.engine, "before_cursor_execute", grab)
            conversations.search(s, workspace_id=workspace_id, limit=50, **params())
            event.remove(db.engine, "before_cursor_execute", grab)
            conn = s.connection()
            sql = captured[-1]
            # Parameters do not change the plan's shape; bind dummies of the right kinds.
            raw = conn.connection.dbapi_connection
            n = sql.count("?")
            p = [workspace_id] + ["x"] * (n - 1)
            plan = raw.execute(f"EXPLAIN QUERY PLAN {sql}", p).fetchall()  # type: ignore[union-attr]
            plans[name] = "; ".join(str(r[-1]) for r in plan)
            times = []
            for _ in range(args.requests):
                kw = params()
                t = time.perf_counter()
                rows, nxt = conversations.search(s, workspace_id=workspace_id, limit=50, **kw)
                if nxt:
                    conversations.search(s, workspace_id=workspace_id, limit=50, cursor=nxt, **kw)
                times.append((time.perf_counter() - t) * 1000 / 2)
            results[name] = times
        # The sidebar's counts with each of these lists saved as a view (saved_views.counts),
        # nothing kept: each view counted up to conversations.COUNT_LIMIT, within
        # conversations.COUNT_BUDGET.
        views = {name: params() for name, params in ops.items()}
        captured.clear()
        event.listen(db.engine, "before_cursor_execute", grab)
        conversations.counts(s, workspace_id=workspace_id, each=views)
        event.remove(db.engine, "before_cursor_execute", grab)
        raw = s.connection().connection.dbapi_connection
        plan = [
            step
            for sql in captured
            if "count(" in sql
            for step in raw.execute(  # type: ignore[union-attr]
                f"EXPLAIN QUERY PLAN {sql}", [workspace_id] + ["x"] * (sql.count("?") - 1)
            ).fetchall()
        ]
        used = sorted(
            {str(r[-1]).split(" USING ")[1].split(" (")[0] for r in plan if " USING " in str(r[-1])}
        )
        scans = [str(r[-1]) for r in plan if str(r[-1]).startswith("SCAN conversations")]
        counted = f"{VIEW_COUNTS}: " + "; ".join(scans or [f"indexes {', '.join(used)}"])
        times = []
        for _ in range(args.requests):
            conversations._COUNTS.drop(None)
            t = time.perf_counter()
            conversations.counts(s, workspace_id=workspace_id, each=views)
            times.append((time.perf_counter() - t) * 1000)
        alone: dict[str, list[float]] = {name: [] for name in views}
        for _ in range(max(5, args.requests // 10)):
            for name, filters in views.items():
                t = time.perf_counter()
                conversations._count(s, workspace_id, filters)
                alone[name].append((time.perf_counter() - t) * 1000)
        conversations._COUNTS.drop(None)
        counts = conversations.counts(s, workspace_id=workspace_id, each=views)
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"Inbox filters and sorts (SQLite): {args.conversations:,} conversations")
    print(f"{'list query':<26}{'p50 ms':>9}{'p95 ms':>9}  plan")
    for name, ms in results.items():
        print(f"{name:<26}{pct(ms, 50):>9.1f}{pct(ms, 95):>9.1f}  {plans[name]}")
    print(f"{'saved view counts (all)':<26}{pct(times, 50):>9.1f}{pct(times, 95):>9.1f}  {counted}")
    print(f"{'one view counted':<26}{'p50 ms':>9}{'p95 ms':>9}  count (None: over the budget)")
    for name, ms in alone.items():
        print(f"  {name:<24}{pct(ms, 50):>9.1f}{pct(ms, 95):>9.1f}  {counts[name]}")
    print(
        json.dumps(
            {
                "conversations": args.conversations,
                "worst_p95_ms": round(max(pct(t, 95) for t in results.values()), 1),
                **{k: round(pct(v, 95), 1) for k, v in results.items()},
                "saved_view_counts_p95_ms": round(pct(times, 95), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
