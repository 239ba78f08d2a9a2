"""Triage of every inbound message: language, sentiment, spam, priority and category.

Computed once, when the message is handed to ingest (in the caller's thread, so the single
writer stays lean), and stored on the message as ``meta["triage"]``; automation conditions
read it as ``message.language``, ``message.sentiment``, ``message.spam``... and agents see it.

- **Language**: py3langid (its model ships in the package), with its confidence; texts too
  short to tell are ``None``.
- **Sentiment**: VADER's lexicon (shipped in the package) for English, negative / neutral /
  positive with its compound score in [-1, 1]; other languages are ``None`` rather than a
  guess, until a workspace trains its own model.
- **Spam**: signals a person can read (many links, link shorteners, the usual bait
  phrases, text that is mostly symbols), each named in ``spam_signals``.
- **Priority**: urgent and high words (an outage, fraud, a lawyer...) and strong anger;
  ``None`` when nothing says so.
- **Category** (and a learnt priority) per workspace, from a classifier trained on its own
  labelled conversations (``train`` job); ``None`` until there are enough examples.
"""

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.assistant.classify import TextClassifier
from rapport.cache import Once, TtlCache
from rapport.crypto import SecretBox

NEGATIVE_BELOW: Final = -0.35
POSITIVE_ABOVE: Final = 0.35

# Matched against the lowered text: a case-insensitive pattern costs twice the scan.
_URL = re.compile(r"https?://\S+|www\.\S+")
_SHORTENERS = re.compile(r"\b(bit\.ly|tinyurl\.com|t\.co|goo\.gl|ow\.ly|is\.gd|cutt\.ly)/")
_BAIT = re.compile(
    r"\b(viagra|casino|crypto ?currency|bitcoin investment|forex signals|seo services|"
    r"backlinks?|guest post|loan offer|you have won|claim your prize|click here to claim|"
    r"work from home and earn|adult dating|weight loss pills)\b"
)
_URGENT = re.compile(
    r"\b(outage|is down|site down|everything is down|data breach|hacked|security incident|"
    r"fraud|stolen|chargeback|lawyer|legal action|sue you|emergency)\b"
)
_HIGH = re.compile(
    r"\b(urgent|urgently|asap|immediately|right now|can(?:no|')t (?:log ?in|sign ?in|access)|"
    r"locked out|double charged|charged twice|refund now|cancel my account)\b"
)


@Once
def _language_model() -> Any:
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    # Probabilities normalized to [0, 1], so a weak guess can be told from a sure one.
    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


@Once
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def warm_up() -> None:
    """Load the models now (about a second) rather than on the first message."""
    _language_model()
    _vader()


def detect_language(text: str) -> tuple[str | None, float]:
    """An ISO 639-1 code and its probability; ``None`` for text too short to tell."""
    letters = sum(map(str.isalpha, text))
    if letters < 8:
        return None, 0.0
    code, probability = _language_model().classify(text[:2000])
    return (str(code), float(probability)) if probability >= 0.5 else (None, float(probability))


def sentiment(text: str, language: str | None = "en") -> tuple[str | None, float]:
    """negative / neutral / positive with VADER's compound score (English only)."""
    if not text.strip() or (language not in (None, "en")):
        return None, 0.0
    score = float(_vader().polarity_scores(text[:5000])["compound"])
    if score <= NEGATIVE_BELOW:
        return "negative", score
    if score >= POSITIVE_ABOVE:
        return "positive", score
    return "neutral", score


def spam_signals(text: str) -> list[str]:
    """The reasons a message looks like spam (two or more make it spam)."""
    signals = []
    lowered = text.lower()
    links = _URL.findall(lowered)
    if len(links) >= 3:
        signals.append(f"{len(links)} links")
    if _SHORTENERS.search(lowered):
        signals.append("a link shortener")
    bait = _BAIT.findall(lowered)
    if bait:
        signals.append(f"bait words ({', '.join(sorted(set(bait))[:3])})")
    visible = [ch for ch in text if not ch.isspace()]
    if len(visible) >= 20 and sum(map(str.isalpha, visible)) / len(visible) < 0.4:
        signals.append("mostly symbols")
    if len(bait) >= 2:
        signals.append("repeated bait")
    return signals


def priority(text: str, sentiment_score: float) -> str | None:
    lowered = text.lower()
    if _URGENT.search(lowered):
        return "urgent"
    if _HIGH.search(lowered) or sentiment_score <= -0.75:
        return "high"
    return None


def triage(text: str) -> dict[str, Any]:
    """Everything that can be told from the text alone."""
    language, confidence = detect_language(text)
    mood, score = sentiment(text, language)
    signals = spam_signals(text)
    return {
        "language": language,
        "language_confidence": round(confidence, 3),
        "sentiment": mood,
        "sentiment_score": round(score, 3),
        "spam": len(signals) >= 2,
        "spam_signals": signals,
        "priority": priority(text, score),
        "category": None,
    }


# --- per workspace: a category (and priority) learnt from its labelled conversations -----

MIN_EXAMPLES: Final = 20
# A workspace's trained classifiers, re-read at most once a minute.
# Read for every inbound message: while a retraining's forget is held, kept a fifth of a
# second (the writer read them once per message for seconds after each retraining).
_models: TtlCache[str, dict[str, TextClassifier]] = TtlCache(
    ttl=60.0, name="triage_models", held_ttl=0.2
)


def with_workspace_models(
    db: Session, workspace_id: str, text: str, found: dict[str, Any], box: SecretBox
) -> dict[str, Any]:
    """``found`` completed by the workspace's own classifiers, when it has trained some."""
    return apply_models(workspace_models(workspace_id, lambda: nullcontext(db), box), text, found)


def apply_models(
    models: dict[str, TextClassifier], text: str, found: dict[str, Any]
) -> dict[str, Any]:
    out = dict(found)
    for kind, model in models.items():
        (prediction,) = model.predict([text])
        if not prediction.out_of_scope and prediction.confidence >= 0.5:
            if kind == "category" or out.get(kind) is None:
                out[kind] = prediction.label
            out[f"{kind}_confidence"] = round(prediction.confidence, 3)
    return out


def cached_models(workspace_id: str) -> dict[str, TextClassifier] | None:
    """The workspace's classifiers if read in the last minute (``None``: not known now)."""
    return _models.peek(workspace_id)


def workspace_models(
    workspace_id: str,
    open_session: Callable[[], AbstractContextManager[Session]],
    box: SecretBox,
) -> dict[str, TextClassifier]:
    """The workspace's trained classifiers, re-read at most once a minute. One that Rapport
    did not sign with the current secret key is left out (the nightly training replaces it)."""
    from rapport.assistant.models import TriageModel

    def load() -> dict[str, TextClassifier]:
        with open_session() as db:
            loaded = {
                row.kind: TextClassifier.trusted(
                    row.model, box, kind="triage", workspace_id=workspace_id
                )
                for row in db.scalars(
                    select(TriageModel).where(TriageModel.workspace_id == workspace_id)
                )
            }
        return {kind: model for kind, model in loaded.items() if model is not None}

    return _models.get(workspace_id, load)


def forget_cached(workspace_id: str) -> None:
    _models.forget(workspace_id)
