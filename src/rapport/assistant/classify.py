"""Text classifiers the assistant stands on: intents (with out-of-scope) and sentiment.

Two members, each with its own calibrated probabilities, averaged:

- **lexical** (always): word 1-3 and character 2-5 n-gram TF-IDF with a linear SVM;
- **embeddings** (with the ``ai`` extra): logistic regression on the all-MiniLM-L6-v2
  sentence embeddings, which know that "money back" is a refund.

Each member's scores become probabilities by a softmax at a temperature fitted on
out-of-fold scores (the one that minimises log-loss), so a confidence of 0.8 is right
about 80 % of the time and two members' confidences can be averaged; the members' weight
is also chosen out of fold. "Out of scope" is a trained ``oos`` class or a top
probability below a threshold chosen out of fold: the lowest that still catches
``OOS_RECALL`` of the ``oos`` examples, so in-scope questions lose as little as possible.

A model trained with the extra still predicts where the embeddings cannot load (or are
switched off): the lexical member alone, with its own threshold, answers then.
"""

import logging
import pickle
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rapport.assistant import embeddings
from rapport.crypto import SecretBox

if TYPE_CHECKING:
    # scikit-learn is imported where a model is trained (or unpickled), not with this module:
    # it takes a second or two, and every process imports this one (the CLI, the ingest
    # writer through triage), most of them never touching a trained model.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

OOS = "oos"
# Share of the training ``oos`` examples (out of fold) the threshold must catch. Out of
# fold the models are trained on less data and are less sure, so the same threshold
# catches less on new text: on CLINC150's validation split 0.85 here gives 0.76 (default
# install) and 0.79 (ai extra), where 0.8 gave 0.68 and 0.77 for 1 point more in scope.
OOS_RECALL = 0.85
# Below this many examples of the rarest class there is nothing to calibrate on: the
# default temperatures serve (and no out-of-scope threshold is tuned).
MIN_PER_CLASS_TO_CALIBRATE = 3
# How many examples' worth of belief the default temperature carries (see _fit_temperature).
PRIOR_WEIGHT = 20.0
Floats = npt.NDArray[np.float64]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    out_of_scope: bool
    # The likeliest in-scope labels with their confidence, best first (to ask "A or B?").
    alternatives: tuple[tuple[str, float], ...] = ()


def _lexical_features() -> "FeatureUnion":
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion(
        [
            (
                "words",
                TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, min_df=1, lowercase=True),
            ),
            (
                "chars",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2
                ),
            ),
        ]
    )


def _characters() -> "TfidfVectorizer":
    """Features for examples too few or too short for ``_lexical_features`` (two intents
    taught "hi" and "ok" share no character n-gram; "!!!" has no word): characters and
    their runs, every one kept."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)


def _softmax(z: Floats) -> Floats:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Floats = e / e.sum(axis=1, keepdims=True)
    return out


def _fit_temperature(scores: Floats, gold: npt.NDArray[np.intp], default: float) -> float:
    """The softmax temperature that minimises log-loss of out-of-fold scores.

    Pulled towards ``default`` as if by ``PRIOR_WEIGHT`` examples: a few examples are
    often all classified right out of fold, and log-loss alone would then take the
    temperature as high as it may go, making every later guess look certain.
    """
    rows = np.arange(len(gold))

    def loss(log_t: float) -> float:
        p = _softmax(scores * np.exp(log_t))
        nll = float(-np.log(p[rows, gold] + 1e-12).sum())
        return float(nll + PRIOR_WEIGHT * (log_t - np.log(default)) ** 2) / len(gold)

    # A grid in log space, then a finer one around the best: the loss is smooth and has
    # one minimum.
    grid = np.linspace(np.log(0.05), np.log(50.0), 41)
    best = min(grid, key=loss)
    step = grid[1] - grid[0]
    best = min(np.linspace(best - step, best + step, 21), key=loss)
    return float(np.exp(best))


@dataclass
class _Member:
    """One classifier over one kind of features, with its softmax temperature."""

    kind: str  # "lexical" or "embeddings"
    temperature: float
    c: float = 1.0
    model: Any = None

    def _new_model(self) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        if self.kind == "lexical":
            return LinearSVC(C=self.c)
        # Multinomial logistic regression on 384 dense dimensions: seconds where a linear
        # SVM's dual solver takes minutes, and as accurate (Banking77: 0.924 vs 0.923).
        return LogisticRegression(C=10.0, max_iter=1000)

    def fit(self, x: Any, labels: list[str]) -> "_Member":
        from sklearn.exceptions import ConvergenceWarning

        self.model = self._new_model()
        with warnings.catch_warnings():
            # A handful of examples per class may stop short of full convergence; the
            # fit is still the best available and the suite treats warnings as errors.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(x, labels)
        # The stored model is mostly this dense classes x n-grams matrix (Banking77: 77 x
        # 71,155): single precision halves the blob and changes no prediction measurably.
        self.model.coef_ = self.model.coef_.astype(np.float32)
        return self

    def scores(self, x: Any) -> Floats:
        if self.kind == "lexical":
            # x @ coef.T with the weights in single precision: both in float32, and the
            # weights laid out column-major (coef.T contiguous), or every call converts the
            # whole matrix first (Banking77: 10-25 ms a prediction instead of 0.1).
            if not self.model.coef_.flags.f_contiguous:
                self.model.coef_ = np.asfortranarray(self.model.coef_, dtype=np.float32)
            x = x.astype(np.float32)
        s = np.asarray(self.model.decision_function(x), dtype=np.float64)
        if s.ndim == 1:  # two classes: one score for the second
            s = np.stack([-s / 2, s / 2], axis=1)
        return s

    def probabilities(self, x: Any) -> Floats:
        return _softmax(self.scores(x) * self.temperature)


class TextClassifier:
    """Train on (text, label) pairs; predict a label with a confidence."""

    def __init__(
        self, *, c: float = 1.0, temperature: float = 8.0, use_embeddings: bool = True
    ) -> None:
        self.c = c
        # False keeps the model lexical even with the ai extra (about a millisecond a
        # prediction instead of an embedding's 15-40 ms on one torch thread).
        self.use_embeddings = use_embeddings
        # Used before calibration (too few examples to fit one) for the lexical member.
        self.temperature = temperature
        self.classes: list[str] = []
        self.features: FeatureUnion | TfidfVectorizer = _lexical_features()
        self.members: dict[str, _Member] = {}
        # Weight of the lexical member when both are there; the embeddings get the rest.
        self.lexical_weight = 0.5
        # Per set of members ("lexical", "lexical+embeddings"): the out-of-scope threshold.
        self.thresholds: dict[str, float] = {}

    # --- training ----------------------------------------------------------------------

    def fit(
        self, texts: list[str], labels: list[str], *, tune_oos: bool = True
    ) -> "TextClassifier":
        """Train; calibrate confidences and, when ``oos`` examples exist, the threshold."""
        texts = list(texts)
        gold_labels = np.asarray(labels)
        self.classes = sorted(set(labels))
        self.thresholds = {}
        try:
            lexical = self.features.fit_transform(texts)
        except ValueError:  # "empty vocabulary", "no terms remain": a fit failed for it
            self.features = _characters()
            lexical = self.features.fit_transform(texts)
        inputs: dict[str, Any] = {"lexical": lexical}
        vectors = self._embed(texts) if self.use_embeddings else None
        if vectors is not None:
            inputs["embeddings"] = vectors
        self.members = {
            "lexical": _Member("lexical", self.temperature, self.c),
            **({"embeddings": _Member("embeddings", 1.0)} if "embeddings" in inputs else {}),
        }
        counts = np.unique(gold_labels, return_counts=True)[1]
        if len(self.classes) >= 2 and counts.min() >= MIN_PER_CLASS_TO_CALIBRATE:
            self._calibrate(inputs, gold_labels, tune_oos=tune_oos)
        for kind, member in self.members.items():
            member.fit(inputs[kind], labels)
            assert list(member.model.classes_) == self.classes
        return self

    def _calibrate(self, inputs: dict[str, Any], gold: npt.NDArray[Any], *, tune_oos: bool) -> None:
        """Out-of-fold scores: each member's temperature, their weight, the oos threshold."""
        from sklearn.model_selection import StratifiedKFold

        n_folds = int(
            min(5 if len(gold) < 5000 else 3, np.unique(gold, return_counts=True)[1].min())
        )
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=7)
        gold_index = np.searchsorted(np.asarray(self.classes), gold)
        oof: dict[str, Floats] = {}
        for kind, member in self.members.items():
            scores = np.zeros((len(gold), len(self.classes)))
            for train, held in folds.split(np.zeros(len(gold)), gold):
                probe = _Member(kind, member.temperature, member.c).fit(
                    inputs[kind][train], list(gold[train])
                )
                scores[held] = probe.scores(inputs[kind][held])
            member.temperature = _fit_temperature(scores, gold_index, member.temperature)
            oof[kind] = _softmax(scores * member.temperature)
        combined = {"lexical": oof["lexical"]}
        if "embeddings" in oof:
            best = -1.0
            # Even weights first: with a few examples every weight often scores the same.
            for w in (0.5, 0.4, 0.6, 0.3, 0.7):
                p = w * oof["lexical"] + (1 - w) * oof["embeddings"]
                accuracy = float((p.argmax(axis=1) == gold_index).mean())
                if accuracy > best + 1e-9:
                    best, self.lexical_weight = accuracy, w
            combined["lexical+embeddings"] = (
                self.lexical_weight * oof["lexical"] + (1 - self.lexical_weight) * oof["embeddings"]
            )
        if tune_oos and OOS in self.classes and len(self.classes) > 2:
            for name, p in combined.items():
                self.thresholds[name] = self._oos_threshold(p, gold)

    def _oos_threshold(self, p: Floats, gold: npt.NDArray[Any]) -> float:
        """The lowest top probability that still sends ``OOS_RECALL`` of oos to oos."""
        oos_index = self.classes.index(OOS)
        top = p.max(axis=1)
        picked_oos = p.argmax(axis=1) == oos_index
        is_oos = gold == OOS
        for t in np.linspace(0.0, 1.0, 201):
            caught = picked_oos[is_oos] | (top[is_oos] < t)
            if caught.mean() >= OOS_RECALL:
                return float(t)
        return 1.0

    # --- predicting --------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> Floats | None:
        if not embeddings.available():
            return None
        try:
            return np.asarray(embeddings.encode(texts), dtype=np.float64)
        except Exception:
            # The extra is installed but its model does not load: embeddings.py has said
            # so once and switched itself off; the lexical member answers alone.
            log.warning("classifier without embeddings", extra={"event": "classify.no_ai"})
            return None

    @property
    def uses_embeddings(self) -> bool:
        return "embeddings" in self.members

    def probabilities(self, texts: list[str]) -> tuple[Floats, str]:
        """Calibrated probabilities over ``classes`` and which members gave them."""
        p = self.members["lexical"].probabilities(self.features.transform(texts))
        vectors = self._embed(texts) if self.uses_embeddings else None
        if vectors is None:
            return p, "lexical"
        q = self.members["embeddings"].probabilities(vectors)
        return self.lexical_weight * p + (1 - self.lexical_weight) * q, "lexical+embeddings"

    def predict(self, texts: list[str]) -> list[Prediction]:
        probs, used = self.probabilities(texts)
        threshold = self.thresholds.get(used)
        out = []
        for p in probs:
            i = int(p.argmax())
            label = self.classes[i]
            oos = label == OOS or (threshold is not None and float(p[i]) < threshold)
            ranked = [j for j in np.argsort(-p)[:4] if self.classes[j] != OOS][:3]
            top = tuple((self.classes[j], float(p[j])) for j in ranked)
            out.append(Prediction(OOS if oos else label, float(p[i]), oos, top))
        return out

    def describe(self) -> str:
        """Which members this model uses, for the eval commands and logs."""
        if self.uses_embeddings:
            return (
                f"TF-IDF word 1-3 + char 2-5 linear SVM (weight {self.lexical_weight:.1f}) "
                f"+ {embeddings.MODEL_NAME} embeddings with logistic regression; "
                "calibrated probabilities averaged (ai extra)"
            )
        return "TF-IDF word 1-3 + char 2-5 linear SVM, calibrated (default install; no ai extra)"

    def dumps(self, box: SecretBox) -> bytes:
        """Bytes to keep per workspace: a pickle, signed, since unpickling runs code."""
        return box.sign(pickle.dumps(self))

    @staticmethod
    def loads(data: bytes, box: SecretBox) -> "TextClassifier":
        """The model ``dumps`` stored. ``ValueError`` unless Rapport signed it with the
        current secret key: whoever can write to the database must not get to run code."""
        model = pickle.loads(box.verified(data))  # noqa: S301 - signed by us, checked
        assert isinstance(model, TextClassifier)
        if not hasattr(model, "members"):
            model._upgrade()
        return model

    @staticmethod
    def trusted(
        data: bytes, box: SecretBox, *, kind: str, workspace_id: str
    ) -> "TextClassifier | None":
        """``loads``, or ``None`` (and a warning) for a model Rapport did not sign with the
        current key: not used until its next training replaces it."""
        try:
            return TextClassifier.loads(data, box)
        except ValueError:
            log.warning(
                "a %s model is not signed with this secret key: not used",
                kind,
                extra={"event": f"{kind}.model_unsigned", "workspace_id": workspace_id},
            )
            return None

    def _upgrade(self) -> None:
        """A model stored by the first version (one SVM, a threshold on its margins) until
        the nightly or next training replaces it: its SVM becomes the lexical member at
        its old temperature; the margin threshold has no probability equivalent and is
        dropped (a trained ``oos`` class still answers out of scope)."""
        old = self.__dict__
        svm = old.pop("model")
        old.pop("threshold", None)
        self.use_embeddings = False
        self.classes = [str(c) for c in svm.classes_]
        # The first version spread a two-class margin s as (-s, s); members use (-s/2, s/2).
        scale = 2.0 if len(self.classes) == 2 else 1.0
        self.members = {"lexical": _Member("lexical", self.temperature * scale, self.c, svm)}
        self.lexical_weight = 1.0
        self.thresholds = {}
