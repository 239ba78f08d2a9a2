"""Suggested answers for the agent on a conversation: the help-center articles closest to
what the customer asked, and how colleagues answered the most similar questions before.

Past answers come from the workspace's recently resolved conversations: each one's first
customer message and the first reply an agent sent. The customer's latest message is
compared with those first messages by BM25 over stemmed words (the same analysis as the
help-center search); the best few, above a floor of shared meaning, are offered with the
reply an agent actually sent. The pool is read once a minute per workspace, so opening a
conversation costs a scoring pass over at most ``POOL`` short texts.
"""

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rapport.cache import TtlCache
from rapport.conversations import service as conversations
from rapport.conversations.models import (
    Conversation,
    Direction,
    Message,
    MessageKind,
    Status,
)
from rapport.kb import search as kb_search

POOL = 2000
K1, B = 1.2, 0.75


@dataclass(frozen=True)
class PastAnswer:
    conversation_id: str
    question: str
    answer: str
    score: float


@dataclass
class _Pool:
    items: list[tuple[str, str, str, Counter[str]]]  # conversation, question, answer, terms
    df: Counter[str]
    avg: float


# A workspace's pool, read at most once a minute (forgotten at once, in every process,
# when a customer is erased: it holds their words).
_pools: TtlCache[str, _Pool] = TtlCache(ttl=60.0, name="suggest_pools")


def forget_pool(workspace_id: str) -> None:
    _pools.forget(workspace_id)


def _first(db: Session, ids: list[str], direction: Direction) -> dict[str, str]:
    """Each conversation's first message in one direction (customer or agent), by id."""
    kinds = (MessageKind.message,)
    first = (
        select(Message.conversation_id, func.min(Message.created_at).label("at"))
        .where(
            Message.conversation_id.in_(ids),
            Message.direction == direction,
            Message.kind.in_(kinds),
            Message.sender_type.in_(("customer", "user")),
        )
        .group_by(Message.conversation_id)
        .subquery()
    )
    rows = db.execute(
        select(Message.conversation_id, Message.text).join(
            first,
            (first.c.conversation_id == Message.conversation_id)
            & (first.c.at == Message.created_at),
        )
    )
    return {cid: text for cid, text in rows if text.strip()}


def _pool(db: Session, workspace_id: str) -> _Pool:
    return _pools.get(workspace_id, lambda: _read_pool(db, workspace_id))


def _read_pool(db: Session, workspace_id: str) -> _Pool:
    ids = list(
        db.scalars(
            select(Conversation.id)
            .where(
                Conversation.workspace_id == workspace_id, Conversation.status == Status.resolved
            )
            .order_by(Conversation.resolved_at.desc())
            .limit(POOL)
        )
    )
    questions = _first(db, ids, Direction.inbound) if ids else {}
    answers = _first(db, ids, Direction.outbound) if ids else {}
    items = []
    df: Counter[str] = Counter()
    for cid in ids:
        if cid in questions and cid in answers:
            words = Counter(kb_search.terms(questions[cid]))
            if words:
                items.append((cid, questions[cid], answers[cid], words))
                df.update(set(words))
    avg = sum(sum(w.values()) for *_, w in items) / max(len(items), 1)
    return _Pool(items=items, df=df, avg=avg)


def past_answers(
    db: Session, *, workspace_id: str, text: str, exclude: str | None = None, limit: int = 3
) -> list[PastAnswer]:
    """How colleagues answered the questions most like ``text``, best first."""
    pool = _pool(db, workspace_id)
    query = set(kb_search.terms(text))
    if not query or not pool.items:
        return []
    n = len(pool.items)
    known = {t for t in query if pool.df[t]}
    idf = {t: math.log(1 + (n - pool.df[t] + 0.5) / (pool.df[t] + 0.5)) for t in known}
    scored = []
    for cid, question, answer, words in pool.items:
        if cid == exclude:
            continue
        length = sum(words.values())
        score = 0.0
        shared = set()
        for t in known:
            tf = words.get(t, 0)
            if tf:
                score += idf[t] * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / pool.avg))
                shared.add(t)
        # Half of the question's information (words no past question used count for
        # less, see kb.search.coverage), and two shared words unless it has one.
        weights = {t: idf.get(t, 0.0) for t in query}
        share = kb_search.coverage(weights, shared)
        if share >= 0.5 and len(shared) >= min(2, len(known)):
            scored.append(PastAnswer(cid, question[:300], answer[:2000], round(score, 3)))
    scored.sort(key=lambda a: -a.score)
    return scored[:limit]


def for_conversation(db: Session, *, conversation: Conversation, base_url: str) -> dict[str, Any]:
    """Articles and past answers for the customer's latest message in the conversation."""
    latest = db.scalar(conversations.customers_latest(db, conversation, Message.text))
    if not latest:
        return {"question": None, "articles": [], "answers": []}
    hits = kb_search.search_articles(
        db, conversation.workspace_id, latest, limit=3, base_url=base_url
    )
    return {
        "question": latest[:300],
        "articles": [
            {"title": h.title, "url": h.url, "excerpt": h.excerpt, "confidence": h.confidence}
            for h in hits
            if h.confidence >= 0.3
        ],
        "answers": [
            {
                "conversation_id": a.conversation_id,
                "question": a.question,
                "answer": a.answer,
                "score": a.score,
            }
            for a in past_answers(
                db,
                workspace_id=conversation.workspace_id,
                text=latest,
                exclude=conversation.id,
            )
        ],
    }
