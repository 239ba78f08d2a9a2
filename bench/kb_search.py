"""How fast article search answers: BM25 alone, and fused with MiniLM when installed.

Builds a fresh SQLite database (from the models) with one workspace and ``--articles``
published articles of generated text, then times ``search_articles`` in-process on
three-word queries. The first query of each kind (building the in-memory index) is
reported apart. The generated text draws on 50 words, so every query word is in most
articles: the worst case for BM25. Prints one table; the last line is JSON.

    python bench/kb_search.py --articles 1000 --queries 200
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import rapport.models  # noqa: F401  (every table on the metadata)
from rapport.assistant import embeddings
from rapport.db import Base, Database
from rapport.kb import search, service
from rapport.kb.models import Article, ArticleStatus
from rapport.workspaces import service as workspaces

WORDS = (
    "order refund parcel delivery address password account invoice card charge app login "
    "shipping return warranty discount coupon subscription cancel upgrade plan email phone "
    "tracking courier warehouse payment bank transfer receipt size colour exchange store "
    "opening hours gift voucher loyalty points profile privacy data delete export language"
).split()


def build(db_path: Path, n: int, rng: random.Random) -> str:
    database = Database(f"sqlite:///{db_path}")
    Base.metadata.create_all(database.engine)
    with database.session() as db:
        ws, _ = workspaces.create(
            db, name="Bench", owner_email="bench@example.com", owner_password="x" * 12
        )
        service.configure_help_center(db, workspace_id=ws.id, changes={"slug": "bench"})
        rows = []
        for i in range(n):
            body = ". ".join(
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
                for _ in range(rng.randint(4, 12))
            )
            row = Article(
                workspace_id=ws.id,
                locale="en",
                slug=f"a-{i}",
                title=" ".join(rng.choice(WORDS) for _ in range(4)),
                body=body,
                html=service.render(body),
                status=ArticleStatus.published,
            )
            rows.append(row)
            db.add(row)
        db.flush()
        if embeddings.available():
            vectors = embeddings.encode([search.embedding_text(r) for r in rows])
            for row, vector in zip(rows, vectors, strict=True):
                row.embedding = embeddings.to_bytes(vector)
        ws_id = ws.id
    database.dispose()
    return ws_id


def timed(database: Database, ws_id: str, queries: list[str]) -> list[float]:
    out = []
    with database.session(write=False) as db:
        for q in queries:
            start = time.perf_counter()
            search.search_articles(db, ws_id, q)
            out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    semantic = embeddings.available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kb.db"
        ws_id = build(path, args.articles, rng)
        database = Database(f"sqlite:///{path}")
        queries = [" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(args.queries)]
        embeddings.set_disabled(True)
        first = timed(database, ws_id, queries[:1])[0]
        rows.append(("BM25", first, timed(database, ws_id, queries)))
        embeddings.set_disabled(False)
        if semantic:
            first = timed(database, ws_id, queries[:1])[0]
            rows.append(("BM25 + MiniLM (RRF)", first, timed(database, ws_id, queries)))
        database.dispose()
    print(f"Article search, {args.articles:,} published articles, {args.queries} queries")
    print(f"{'kind':<22}{'first ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    result: dict[str, float | int] = {"articles": args.articles}
    for name, first_ms, values in rows:
        p50, p95, p99 = pct(values, 50), pct(values, 95), pct(values, 99)
        print(f"{name:<22}{first_ms:>10.1f}{p50:>10.2f}{p95:>10.2f}{p99:>10.2f}")
        key = "hybrid" if "MiniLM" in name else "bm25"
        result.update({f"{key}_p50_ms": round(p50, 2), f"{key}_p99_ms": round(p99, 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
