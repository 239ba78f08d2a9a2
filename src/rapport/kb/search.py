"""Searching the knowledge base: BM25 always, and sentence embeddings with the ``ai`` extra.

A workspace's published articles of one locale are indexed in memory (a help center holds
hundreds or a few thousand articles: the index builds in milliseconds) and rebuilt when an
article changes. Lexical ranking is Okapi BM25 over stemmed words (the title counts twice);
with the extra, articles are also ranked by cosine similarity of their embedding to the
query's, and the two rankings are fused (reciprocal rank fusion), so a paraphrase that
shares no word with the article ("get my money back" for "Refunds") still finds it.

``confidence`` says how well the best evidence matches, in [0, 1]: the share of the
query's information (IDF) the article covers, or the cosine similarity, whichever is
higher. The bot answers from an article only above its threshold.
"""

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from html import unescape
from typing import Any

import numpy as np
import snowballstemmer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rapport.assistant import embeddings
from rapport.kb.models import Article, ArticleStatus, HelpCenter

K1, B = 1.2, 0.75
RRF_K = 60
_WORD = re.compile(r"\w+", re.UNICODE)
_TAG = re.compile(r"<[^>]+>")
_STOP = frozenset(
    "a an and are as at be by can do does for from had has have how i if in is it its my "
    "of on or our so than that the their them then there these this to was we were what "
    "when where which who why will with you your me im i'm".split()
)
_STEMMERS = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "sv": "swedish",
    "da": "danish",
    "no": "norwegian",
    "fi": "finnish",
    "ru": "russian",
}


@cache
def _stemmer(locale: str) -> Any:
    return snowballstemmer.stemmer(_STEMMERS.get(locale.split("-")[0].lower(), "english"))


def terms(text: str, locale: str = "en") -> list[str]:
    """Lower-cased, stemmed words, without the commonest function words."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]
    return list(_stemmer(locale).stemWords(words))


def plain_text(html: str) -> str:
    return unescape(_TAG.sub(" ", html))


@dataclass
class _Doc:
    id: str
    title: str
    slug: str
    description: str
    paragraphs: list[str]
    tf: Counter[str]
    length: int
    embedding: Any = None


@dataclass
class _Index:
    version: tuple[Any, ...]
    docs: list[_Doc] = field(default_factory=list)
    df: Counter[str] = field(default_factory=Counter)
    avg_length: float = 1.0
    matrix: Any = None  # rows of embeddings, aligned with docs (None without the extra)

    def idf(self, term: str) -> float:
        n = len(self.docs)
        return math.log(1 + (n - self.df[term] + 0.5) / (self.df[term] + 0.5))


@dataclass(frozen=True)
class ArticleHit:
    article_id: str
    title: str
    slug: str
    url: str
    excerpt: str
    score: float
    confidence: float
    lexical: float
    semantic: float | None


_indexes: dict[tuple[str, str], _Index] = {}
_lock = threading.Lock()


def _version(db: Session, workspace_id: str, locale: str) -> tuple[Any, ...]:
    row = db.execute(
        select(func.count(), func.max(Article.updated_at), func.max(Article.published_at)).where(
            Article.workspace_id == workspace_id,
            Article.locale == locale,
            Article.status == ArticleStatus.published,
        )
    ).one()
    return (int(row[0]), _iso(row[1]), _iso(row[2]), embeddings.available())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _build(db: Session, workspace_id: str, locale: str, version: tuple[Any, ...]) -> _Index:
    index = _Index(version=version)
    rows = db.scalars(
        select(Article).where(
            Article.workspace_id == workspace_id,
            Article.locale == locale,
            Article.status == ArticleStatus.published,
        )
    )
    vectors = []
    for article in rows:
        text = plain_text(article.html)
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n|(?<=[.!?])\s{2,}", text) if p.strip()]
        words = terms(article.title, locale) * 2 + terms(article.description, locale)
        words += terms(text, locale)
        doc = _Doc(
            id=article.id,
            title=article.title,
            slug=article.slug,
            description=article.description,
            paragraphs=paragraphs or [article.description],
            tf=Counter(words),
            length=len(words),
        )
        if article.embedding is not None and embeddings.available():
            doc.embedding = embeddings.from_bytes(article.embedding)
            vectors.append(doc.embedding)
        index.docs.append(doc)
        index.df.update(set(words))
    index.avg_length = sum(d.length for d in index.docs) / max(len(index.docs), 1)
    if vectors and len(vectors) == len(index.docs):
        index.matrix = np.vstack(vectors)
    return index


def _index(db: Session, workspace_id: str, locale: str) -> _Index:
    version = _version(db, workspace_id, locale)
    with _lock:
        cached = _indexes.get((workspace_id, locale))
    if cached is not None and cached.version == version:
        return cached
    built = _build(db, workspace_id, locale, version)
    with _lock:
        _indexes[(workspace_id, locale)] = built
    return built


def _bm25(index: _Index, query: list[str]) -> list[float]:
    scores = []
    for doc in index.docs:
        score = 0.0
        for term in set(query):
            tf = doc.tf.get(term, 0)
            if tf:
                norm = tf + K1 * (1 - B + B * doc.length / index.avg_length)
                score += index.idf(term) * tf * (K1 + 1) / norm
        scores.append(score)
    return scores


def coverage(idf: dict[str, float], matched: set[str]) -> float:
    """The share of a query's information found, IDF-weighted. Words the collection never
    uses ("hi", an order number) weigh half an average known word: they say little about
    which document answers, yet a question made mostly of them is not answered."""
    known_weights = {t: w for t, w in idf.items() if w > 0}
    if not known_weights:
        return 0.0
    mean = sum(known_weights.values()) / len(known_weights)
    unknown = [t for t, w in idf.items() if w <= 0]
    total = sum(known_weights.values()) + 0.5 * mean * len(unknown)
    return sum(w for t, w in known_weights.items() if t in matched) / total


def _coverage(index: _Index, doc: _Doc, query: list[str]) -> float:
    """The share of the query's information the article covers."""
    # Weight 0 marks a word absent from every article.
    idf = {t: (index.idf(t) if index.df[t] else 0.0) for t in set(query)}
    return coverage(idf, {t for t in idf if t in doc.tf})


def _excerpt(doc: _Doc, query: list[str], locale: str, length: int = 280) -> str:
    wanted = set(query)
    best = max(
        doc.paragraphs,
        key=lambda p: len(wanted & set(terms(p, locale))),
        default=doc.description,
    )
    text = " ".join(best.split())
    return text if len(text) <= length else text[: length - 1].rsplit(" ", 1)[0] + "…"


def public_url(base_url: str, slug: str, article: str, locale: str, default_locale: str) -> str:
    suffix = "" if locale == default_locale else f"?locale={locale}"
    return f"{base_url.rstrip('/')}/help/{slug}/articles/{article}{suffix}"


def search_articles(
    db: Session,
    workspace_id: str,
    query: str,
    *,
    locale: str | None = None,
    limit: int = 5,
    base_url: str = "",
) -> list[ArticleHit]:
    """The published articles that best answer ``query``, best first."""
    center = db.get(HelpCenter, workspace_id)
    default_locale = center.default_locale if center else "en"
    locale = locale or default_locale
    index = _index(db, workspace_id, locale)
    if not index.docs or not query.strip():
        return []
    words = terms(query, locale)
    lexical = _bm25(index, words) if words else [0.0] * len(index.docs)
    semantic: list[float] | None = None
    if index.matrix is not None and embeddings.available():
        try:
            (vector,) = embeddings.encode([query])
            semantic = [float(x) for x in index.matrix @ vector]
        except Exception:  # the extra is broken: keywords still answer (logged once)
            semantic = None
    rank_lex = _ranks(lexical)
    rank_sem = _ranks(semantic) if semantic is not None else None
    scored = []
    for i, doc in enumerate(index.docs):
        fused = 1 / (RRF_K + rank_lex[i]) if lexical[i] > 0 else 0.0
        if rank_sem is not None and semantic is not None:
            fused += 1 / (RRF_K + rank_sem[i])
        confidence = _coverage(index, doc, words)
        if semantic is not None:
            confidence = max(confidence, semantic[i])
        if lexical[i] <= 0 and (semantic is None or semantic[i] < 0.25):
            continue
        scored.append((fused, confidence, i))
    scored.sort(key=lambda s: (-s[0], -s[1]))
    slug = center.slug if center and center.enabled else ""  # a switched-off one: no link
    hits = []
    for fused, confidence, i in scored[:limit]:
        doc = index.docs[i]
        hits.append(
            ArticleHit(
                article_id=doc.id,
                title=doc.title,
                slug=doc.slug,
                url=public_url(base_url, slug, doc.slug, locale, default_locale) if slug else "",
                excerpt=_excerpt(doc, words, locale),
                score=round(fused, 6),
                confidence=round(min(max(confidence, 0.0), 1.0), 3),
                lexical=round(lexical[i], 3),
                semantic=round(semantic[i], 3) if semantic is not None else None,
            )
        )
    return hits


def _ranks(values: list[float]) -> list[int]:
    """1 for the highest value, 2 for the next..."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def embedding_text(article: Article) -> str:
    """What an article's embedding is made of: title, description and text."""
    return f"{article.title}. {article.description}. {plain_text(article.html)}"[:4000]


def embed_text(text: str) -> bytes | None:
    """The stored form of a text's embedding (None without the ``ai`` extra)."""
    if not embeddings.available():
        return None
    (vector,) = embeddings.encode([text])
    return embeddings.to_bytes(vector)
