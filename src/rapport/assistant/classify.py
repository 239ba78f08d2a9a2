"""Text classifiers the assistant stands on: intents (with out-of-scope) and sentiment.

The default install uses word and character n-gram TF-IDF with a linear SVM (fast to
train, about a millisecond to predict). Confidence is a softmax over the SVM's margins;
"out of scope" is either a trained ``oos`` class or a margin below a threshold chosen on
held-out training data to balance in-scope accuracy against out-of-scope recall.
"""

import pickle
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

OOS = "oos"


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    out_of_scope: bool
    # The likeliest in-scope labels with their confidence, best first (to ask "A or B?").
    alternatives: tuple[tuple[str, float], ...] = ()


def _features() -> FeatureUnion:
    return FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
                ),
            ),
        ]
    )


class TextClassifier:
    """Train on (text, label) pairs; predict a label with a confidence."""

    def __init__(self, *, c: float = 0.5, temperature: float = 8.0) -> None:
        self.c = c
        self.temperature = temperature
        self.threshold: float | None = None
        self.features = _features()
        self.model = LinearSVC(C=c)

    def _fit(self, texts: list[str], labels: list[str]) -> None:
        x = self.features.fit_transform(texts)
        self.model.fit(x, labels)

    def fit(
        self, texts: list[str], labels: list[str], *, tune_oos: bool = True
    ) -> "TextClassifier":
        """Train; when ``oos`` examples exist, pick the margin threshold on held-out data."""
        if tune_oos and OOS in labels and len(set(labels)) > 2:
            tr_x, va_x, tr_y, va_y = train_test_split(
                texts, labels, test_size=0.2, random_state=7, stratify=labels
            )
            self._fit(tr_x, tr_y)
            self.threshold = self._best_threshold(va_x, va_y)
        self._fit(texts, labels)
        return self

    def _scores(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.decision_function(self.features.transform(texts)))

    def _best_threshold(self, texts: list[str], labels: list[str]) -> float:
        scores = self._scores(texts)
        classes = list(self.model.classes_)
        best, best_value = 0.0, -1.0
        top = scores.max(axis=1)
        picked = [classes[i] for i in scores.argmax(axis=1)]
        gold = np.array(labels)
        for t in np.linspace(-1.0, 0.5, 61):
            pred = np.where((top < t) | (np.array(picked) == OOS), OOS, picked)
            ins = gold != OOS
            in_acc = float((pred[ins] == gold[ins]).mean()) if ins.any() else 0.0
            oos_rec = float((pred[~ins] == OOS).mean()) if (~ins).any() else 0.0
            # Answering in-scope questions right matters more than catching every stray one:
            # a missed out-of-scope question still reaches a human after a failed answer.
            value = in_acc + 0.3 * oos_rec
            if value > best_value:
                best, best_value = float(t), value
        return best

    def predict(self, texts: list[str]) -> list[Prediction]:
        scores = self._scores(texts)
        if scores.ndim == 1:  # two classes: one margin
            scores = np.stack([-scores, scores], axis=1)
        classes = list(self.model.classes_)
        z = scores * self.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        out = []
        for row, p in zip(scores, probs, strict=True):
            i = int(row.argmax())
            label = classes[i]
            oos = label == OOS or (self.threshold is not None and float(row[i]) < self.threshold)
            ranked = [j for j in np.argsort(-p)[:4] if classes[j] != OOS][:3]
            top = tuple((str(classes[j]), float(p[j])) for j in ranked)
            out.append(Prediction(OOS if oos else label, float(p[i]), oos, top))
        return out

    def dumps(self) -> bytes:
        """Bytes to keep per workspace (trusted: written and read only by Rapport)."""
        return pickle.dumps(self)

    @staticmethod
    def loads(data: bytes) -> "TextClassifier":
        model = pickle.loads(data)  # noqa: S301 - our own bytes from our own database
        assert isinstance(model, TextClassifier)
        return model
