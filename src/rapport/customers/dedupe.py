"""Probabilistic duplicate detection over a whole customer base (Fellegi–Sunter).

The steps, each over numpy arrays so that a hundred thousand customers take seconds:

1. **Blocking**: only pairs that share at least one key (same date of birth, same name,
   same postcode and house number...) are compared; a key shared by too many records
   (a common name, an empty value) is skipped rather than compared quadratically.
2. **Comparison**: each field of each pair falls into a level (exact, one typo, similar,
   different, or unknown when either side is empty), computed in C++ by rapidfuzz.
3. **Weights**: how often each level occurs among non-duplicates (``u``) is counted on
   random pairs, how often among duplicates (``m``) is estimated by expectation
   maximisation on the blocked pairs, with no labelled data. A pair's match weight is the
   sum of ``log2(m / u)`` over its fields; an exact match on a rare name counts for more
   than one on a common name (term-frequency adjustment).
4. **Decision**: pairs whose match probability passes the threshold are duplicates. The
   prior (how likely two random records are one person) is itself estimated, so the
   probability means what it says.

The ``reason`` of a pair says, in words, what agreed and what differed.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# A blocking key shared by more records than this is too common to say anything.
MAX_BLOCK: Final = 100
UNKNOWN: Final = -1


@dataclass(frozen=True)
class PersonRecord:
    """What is known of one customer, each field normalized to lower-case text."""

    id: str
    given_name: str = ""
    surname: str = ""
    email: str = ""
    phone: str = ""
    street: str = ""  # house number and street name
    street2: str = ""  # a second address line (building, unit)
    locality: str = ""  # suburb or city
    postcode: str = ""
    region: str = ""  # state or county
    birth_date: str = ""  # digits, YYYYMMDD
    id_number: str = ""  # a customer or document number the business holds


Levels = tuple[float, float, float, float]  # exact, close, similar, different


@dataclass(frozen=True)
class Comparison:
    """How one field is compared, how its levels read in a reason, and what is assumed of
    them before a workspace's own records say otherwise: how often each level occurs among
    duplicates (``m``) and among different people (``u``)."""

    name: str  # the derived column it reads
    label: str  # how a person calls it
    kind: str  # "name", "text", "code" or "category"
    m: Levels
    u: Levels
    term_frequency: bool = False


# The assumed levels are rounded from what the estimation finds on FEBRL's records (names,
# addresses, dates of birth), with fewer typos than its generator makes; email and phone
# are not there. Two customers of one workspace with one email or one phone are one
# customer from their first message, so the duplicates left to find mostly differ in both.
COMPARISONS: Final[tuple[Comparison, ...]] = (
    Comparison(
        "given_name",
        "first name",
        "name",
        m=(0.80, 0.10, 0.04, 0.06),
        u=(0.005, 0.002, 0.01, 0.983),
        term_frequency=True,
    ),
    Comparison(
        "surname",
        "surname",
        "name",
        m=(0.78, 0.12, 0.04, 0.06),
        u=(0.004, 0.001, 0.005, 0.99),
        term_frequency=True,
    ),
    Comparison("email", "email", "code", m=(0.3, 0.05, 0.05, 0.6), u=(1e-5, 1e-4, 2e-4, 0.99969)),
    Comparison("phone", "phone", "code", m=(0.3, 0.05, 0.05, 0.6), u=(1e-5, 2e-4, 5e-4, 0.99929)),
    Comparison(
        "street_number",
        "house number",
        "code",
        m=(0.85, 0.06, 0.05, 0.04),
        u=(0.013, 0.2, 0.6, 0.187),
    ),
    Comparison(
        "street_name", "street", "text", m=(0.7, 0.2, 0.02, 0.08), u=(0.001, 0.001, 0.05, 0.948)
    ),
    Comparison(
        "street2",
        "address line 2",
        "text",
        m=(0.6, 0.25, 0.03, 0.12),
        u=(0.001, 0.001, 0.005, 0.993),
    ),
    Comparison(
        "locality",
        "city",
        "text",
        m=(0.8, 0.12, 0.01, 0.07),
        u=(0.005, 0.001, 0.005, 0.989),
        term_frequency=True,
    ),
    Comparison(
        "postcode", "postcode", "code", m=(0.82, 0.12, 0.02, 0.04), u=(0.002, 0.02, 0.11, 0.868)
    ),
    Comparison(
        "region", "state", "category", m=(0.95, 1e-4, 1e-4, 0.0498), u=(0.2, 1e-4, 1e-4, 0.7998)
    ),
    Comparison(
        "birth_date",
        "date of birth",
        "code",
        m=(0.9, 0.04, 0.01, 0.05),
        u=(1e-4, 0.001, 0.014, 0.9849),
    ),
    Comparison(
        "id_number",
        "customer number",
        "code",
        m=(0.88, 0.06, 0.01, 0.05),
        u=(1e-5, 1e-4, 5e-4, 0.99939),
    ),
)
LEVELS: Final = 4  # exact, close, similar, different

# How many pairs the assumed levels weigh as: a workspace's own pairs outweigh them once
# there are more of them, so a small workspace (or a field few customers have) is judged
# by the assumptions, not by the handful of pairs it has, which may be the duplicate itself.
ASSUMED_M_PAIRS: Final = 20.0
ASSUMED_U_PAIRS: Final = 100.0
# How many records the assumed frequency of a value weighs as (the term-frequency weight).
ASSUMED_TF_RECORDS: Final = 200.0

# Pairs sharing any of these keys are compared.
BLOCKING_RULES: Final[tuple[tuple[str, ...], ...]] = (
    ("given_name", "surname"),
    ("birth_date",),
    ("id_number",),
    ("email",),
    ("phone",),
    ("postcode", "street_number"),
    ("surname", "locality"),
    ("given_name", "locality"),
    ("surname", "postcode"),
    ("given_name", "postcode"),
    ("surname", "birth_year"),
)


# The rules whose pairs train the weights: each is selective, and together they leave every
# field free in at least one of them.
TRAINING_RULES: Final[tuple[tuple[str, ...], ...]] = (
    ("birth_date",),
    ("given_name", "surname"),
    ("postcode", "street_number"),
)


@dataclass(frozen=True)
class DuplicatePair:
    left: str
    right: str
    probability: float
    weight: float
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        """The pair in a fixed order, for comparing sets of pairs."""
        return (self.left, self.right) if self.left < self.right else (self.right, self.left)


@dataclass
class Model:
    """The weights a run estimated (kept to explain pairs and for inspection)."""

    m: FloatArray  # fields x levels
    u: FloatArray
    prior: float
    iterations: int = 0
    pairs_compared: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Columns:
    """The records as columns of strings, with the derived ones blocking and comparing use."""

    values: dict[str, npt.NDArray[np.object_]]
    ids: list[str]

    @property
    def size(self) -> int:
        return len(self.ids)


def _split_street(street: str) -> tuple[str, str]:
    head, _, rest = street.strip().partition(" ")
    if head[:1].isdigit():
        return head, rest.strip()
    return "", street.strip()


def _columns(records: Sequence[PersonRecord]) -> _Columns:
    cols: dict[str, list[str]] = {c.name: [] for c in COMPARISONS}
    cols["birth_year"] = []
    for r in records:
        number, name = _split_street(r.street)
        cols["given_name"].append(r.given_name.strip().lower())
        cols["surname"].append(r.surname.strip().lower())
        cols["email"].append(r.email.strip().lower())
        cols["phone"].append("".join(ch for ch in r.phone if ch.isdigit()))
        cols["street_number"].append(number.lower())
        cols["street_name"].append(name.lower())
        cols["street2"].append(r.street2.strip().lower())
        cols["locality"].append(r.locality.strip().lower())
        cols["postcode"].append(r.postcode.strip().lower())
        cols["region"].append(r.region.strip().lower())
        birth = "".join(ch for ch in r.birth_date if ch.isdigit())
        cols["birth_date"].append(birth)
        cols["birth_year"].append(birth[:4] if len(birth) >= 4 else "")
        cols["id_number"].append(r.id_number.strip().lower())
    return _Columns(
        {k: np.array(v, dtype=object) for k, v in cols.items()}, [r.id for r in records]
    )


def _codes(column: npt.NDArray[np.object_]) -> tuple[IntArray, IntArray]:
    """Each value as an integer code (empty is -1), and how many records hold each code."""
    uniques, codes = np.unique(column, return_inverse=True)
    codes = codes.astype(np.int64)
    counts = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
    empty = np.flatnonzero(uniques == "")
    if len(empty):
        codes = np.where(codes == empty[0], -1, codes)
    return codes, counts


def _rule_pairs(cols: _Columns, rule: tuple[str, ...], max_block: int) -> IntArray:
    """The pairs (i < j) sharing this blocking key, as a sorted, distinct (n, 2) array."""
    n = cols.size
    key = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for name in rule:
        codes, counts = _codes(cols.values[name])
        valid &= codes >= 0
        key = key * (len(counts) + 1) + np.maximum(codes, 0)
    idx = np.flatnonzero(valid)
    found: list[IntArray] = [np.empty((0, 2), dtype=np.int64)]
    if len(idx) >= 2:
        order = idx[np.argsort(key[idx], kind="stable")]
        sorted_keys = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        for size in np.unique(sizes[(sizes >= 2) & (sizes <= max_block)]):
            groups = starts[sizes == size]
            members = order[groups[:, None] + np.arange(size)[None, :]]  # (groups, size)
            a, b = np.triu_indices(int(size), k=1)
            left, right = members[:, a].ravel(), members[:, b].ravel()
            found.append(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1))
    return _distinct(np.concatenate(found), n)


def _distinct(pairs: IntArray, n: int) -> IntArray:
    flat = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([flat // n, flat % n], axis=1)


def _levels(cols: _Columns, pairs: IntArray) -> npt.NDArray[np.int8]:
    """The comparison level of every field of every pair: (pairs, fields), -1 when unknown."""
    left, right = pairs[:, 0], pairs[:, 1]
    given_l, given_r = cols.values["given_name"][left], cols.values["given_name"][right]
    sur_l, sur_r = cols.values["surname"][left], cols.values["surname"][right]
    # A first name and surname written the wrong way round are the same name.
    straight = _similarity(given_l, given_r) + _similarity(sur_l, sur_r)
    crossed = _similarity(given_l, sur_r) + _similarity(sur_l, given_r)
    swap = crossed > straight + 0.5
    out = np.empty((len(pairs), len(COMPARISONS)), dtype=np.int8)
    for f, comparison in enumerate(COMPARISONS):
        a, b = cols.values[comparison.name][left], cols.values[comparison.name][right]
        if comparison.name == "given_name":
            b = np.where(swap, sur_r, given_r)
        elif comparison.name == "surname":
            b = np.where(swap, given_r, sur_r)
        out[:, f] = _compare(comparison.kind, a, b)
    return out


def _similarity(a: npt.NDArray[np.object_], b: npt.NDArray[np.object_]) -> FloatArray:
    if not len(a):
        return np.empty(0)
    scores = process.cpdist(list(a), list(b), scorer=JaroWinkler.normalized_similarity, workers=-1)
    return np.asarray(scores, dtype=np.float64)


def _edits(a: npt.NDArray[np.object_], b: npt.NDArray[np.object_]) -> IntArray:
    if not len(a):
        return np.empty(0, dtype=np.int64)
    dist = process.cpdist(list(a), list(b), scorer=DamerauLevenshtein.distance, workers=-1)
    return np.asarray(dist, dtype=np.int64)


def _compare(
    kind: str, a: npt.NDArray[np.object_], b: npt.NDArray[np.object_]
) -> npt.NDArray[np.int8]:
    unknown = (a == "") | (b == "")
    exact = a == b
    if kind == "category":
        level = np.where(exact, 0, 3)
    elif kind == "code":
        edits = _edits(a, b)
        level = np.select([exact, edits <= 1, edits <= 2], [0, 1, 2], default=3)
    else:
        sim = _similarity(a, b)
        close, similar = (0.92, 0.80) if kind == "name" else (0.90, 0.75)
        level = np.select([exact, sim >= close, sim >= similar], [0, 1, 2], default=3)
    return np.where(unknown, UNKNOWN, level).astype(np.int8)


def _frequencies(values: npt.NDArray[np.object_], assumed: float) -> FloatArray:
    """Each record's value frequency among the records that know the field (the chance a
    random record shares it), drawn towards ``assumed`` where few records know it: in a
    small workspace a name held by a duplicate pair is held by a large share of records."""
    codes, counts = _codes(values)
    known = np.count_nonzero(codes >= 0)
    freq = (counts[np.maximum(codes, 0)] + assumed * ASSUMED_TF_RECORDS) / (
        known + ASSUMED_TF_RECORDS
    )
    return np.where(codes >= 0, freq, np.nan)


def _level_counts(levels: npt.NDArray[np.int8], weights: FloatArray | None = None) -> FloatArray:
    counts = np.zeros((levels.shape[1], LEVELS))
    for f in range(levels.shape[1]):
        column = levels[:, f]
        known = column >= 0
        w = None if weights is None else weights[known]
        counts[f] = np.bincount(column[known], weights=w, minlength=LEVELS)[:LEVELS]
    return counts


def _assumed(which: str) -> FloatArray:
    return np.array([getattr(c, which) for c in COMPARISONS], dtype=np.float64)


def _known(cols: _Columns) -> FloatArray:
    """How many records know each compared field."""
    return np.array([np.count_nonzero(cols.values[c.name] != "") for c in COMPARISONS])


def _estimate_u(cols: _Columns, rng: np.random.Generator, samples: int) -> FloatArray:
    """Level frequencies among random pairs, which are almost all different people.

    A field known to few records has few distinct pairs to sample, however many samples
    are drawn (two records with a date of birth are one pair, perhaps the duplicate), so
    each field's count weighs as at most its distinct pairs against the assumed ``u``.
    """
    n = cols.size
    left = rng.integers(0, n, size=samples)
    right = rng.integers(0, n, size=samples)
    keep = left != right
    pairs = np.stack([left[keep], right[keep]], axis=1)
    counts = _level_counts(_levels(cols, pairs))
    known = _known(cols)
    drawn = counts.sum(axis=1)
    evidence = np.minimum(drawn, known * (known - 1) / 2)
    seen = (counts + 1.0) / (drawn + LEVELS)[:, None]  # Laplace: no level is impossible
    u: FloatArray = (seen * evidence[:, None] + _assumed("u") * ASSUMED_U_PAIRS) / (
        evidence[:, None] + ASSUMED_U_PAIRS
    )
    return u


def _log_ratios(levels: npt.NDArray[np.int8], m: FloatArray, u: FloatArray) -> FloatArray:
    """Each pair's summed log2(m/u) over its known fields."""
    ratio = np.log2(m / u)
    total = np.zeros(len(levels))
    for f in range(levels.shape[1]):
        column = levels[:, f]
        known = column >= 0
        total[known] += ratio[f, column[known]]
    return total


def _estimate_m(
    levels: npt.NDArray[np.int8], u: FloatArray, iterations: int = 30
) -> tuple[FloatArray, FloatArray, int]:
    """Expectation maximisation of the duplicates' level frequencies, ``u`` held fixed.

    Returns ``m`` and how much evidence stands behind each of its rows (the expected
    number of duplicate pairs in which the field was known).
    """
    m = np.tile(np.array([0.85, 0.08, 0.04, 0.03]), (levels.shape[1], 1))
    prior = 0.1
    counts = np.zeros_like(m)
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 - the count is reported
        logit = np.log2(prior / (1 - prior)) + _log_ratios(levels, m, u)
        p = 1.0 / (1.0 + np.exp2(-np.clip(logit, -60, 60)))
        counts = _level_counts(levels, p)
        new_m = (counts + 0.1) / (counts + 0.1).sum(axis=1, keepdims=True)
        prior = float(np.clip(p.mean(), 1e-6, 1 - 1e-6))
        change = float(np.abs(new_m - m).max())
        m = new_m
        if change < 1e-5:
            break
    return m, counts.sum(axis=1), done


def _train_m(
    cols: _Columns, by_rule: dict[tuple[str, ...], IntArray], u: FloatArray
) -> tuple[FloatArray, int]:
    """``m`` from each training blocking rule in turn, as Splink does.

    Among pairs that share a key, the key's own fields agree by construction, which tells
    nothing about duplicates; so each rule's pairs train only the other fields, and each
    field's ``m`` is the evidence-weighted mean over the rules that trained it.
    """
    names = [c.name for c in COMPARISONS]
    total = np.zeros((len(COMPARISONS), LEVELS))
    evidence = np.zeros(len(COMPARISONS))
    iterations = 0
    for rule in TRAINING_RULES:
        pairs = by_rule.get(rule)
        if pairs is None or len(pairs) < 10:
            continue
        levels = _levels(cols, pairs)
        masked = [names.index(f) for f in rule if f in names]
        levels[:, masked] = UNKNOWN
        m, weight, done = _estimate_m(levels, u)
        weight[masked] = 0.0
        total += m * weight[:, None]
        evidence += weight
        iterations += done
    m = (total + _assumed("m") * ASSUMED_M_PAIRS) / (evidence[:, None] + ASSUMED_M_PAIRS)
    return m, iterations


def _random_prior(scores: FloatArray, n: int, iterations: int = 50) -> float:
    """The chance that two random records are one person, by EM over all pairs.

    Pairs that were never compared (no shared key) count as different people; the
    compared ones contribute their posterior.
    """
    all_pairs = n * (n - 1) / 2
    prior = min(max(len(scores), 1) / all_pairs, 0.5)
    for _ in range(iterations):
        logit = np.log2(prior / (1 - prior)) + scores
        expected = float((1.0 / (1.0 + np.exp2(-np.clip(logit, -60, 60)))).sum())
        new = float(np.clip(expected / all_pairs, 1e-12, 0.5))
        if abs(new - prior) <= 1e-4 * prior:
            return new
        prior = new
    return prior


def _tf_adjustment(
    cols: _Columns, pairs: IntArray, levels: npt.NDArray[np.int8], u: FloatArray
) -> FloatArray:
    """Extra weight of exact matches on rare values (and less on common ones)."""
    adjust = np.zeros(len(pairs))
    for f, comparison in enumerate(COMPARISONS):
        if not comparison.term_frequency:
            continue
        freq = _frequencies(cols.values[comparison.name], u[f, 0])[pairs[:, 0]]
        exact = (levels[:, f] == 0) & ~np.isnan(freq)
        adjust[exact] += np.log2(u[f, 0] / freq[exact])
    return adjust


@dataclass
class Result:
    pairs: list[DuplicatePair]
    model: Model


def find_duplicates(
    records: Iterable[PersonRecord],
    *,
    threshold: float = 0.9,
    max_block: int = MAX_BLOCK,
    seed: int = 0,
) -> Result:
    """Score every plausible pair of records; return those above ``threshold`` and clusters."""
    rows = list(records)
    cols = _columns(rows)
    model = Model(
        m=np.zeros((len(COMPARISONS), LEVELS)), u=np.zeros((len(COMPARISONS), LEVELS)), prior=0.0
    )
    if cols.size < 2:
        return Result([], model)
    rng = np.random.default_rng(seed)
    by_rule = {rule: _rule_pairs(cols, rule, max_block) for rule in BLOCKING_RULES}
    pairs = _distinct(np.concatenate(list(by_rule.values())), cols.size)
    model.pairs_compared = len(pairs)
    if not len(pairs):
        return Result([], model)
    u = _estimate_u(cols, rng, samples=min(max(20 * cols.size, 50_000), 1_000_000))
    m, iterations = _train_m(cols, by_rule, u)
    levels = _levels(cols, pairs)
    scores = _log_ratios(levels, m, u) + _tf_adjustment(cols, pairs, levels, u)
    prior = _random_prior(scores, cols.size)
    model.m, model.u, model.prior, model.iterations = m, u, prior, iterations
    weight = np.log2(prior / (1 - prior)) + scores
    probability = 1.0 / (1.0 + np.exp2(-np.clip(weight, -60, 60)))
    chosen = np.flatnonzero(probability >= threshold)
    found = [
        DuplicatePair(
            left=cols.ids[pairs[i, 0]],
            right=cols.ids[pairs[i, 1]],
            probability=float(probability[i]),
            weight=float(weight[i]),
            reason=explain(levels[i], m, u),
        )
        for i in chosen
    ]
    return Result(found, model)


_WORDS: Final = {
    0: "same {label}",
    1: "{label} differs by one letter",
    2: "{label} is similar",
    3: "{label} differs",
}


def explain(levels: npt.NDArray[np.int8], m: FloatArray, u: FloatArray) -> str:
    """What agreed (strongest evidence first), then what did not, in words."""
    ratio = np.log2(m / u)
    same: list[tuple[float, str]] = []
    other: list[tuple[float, str]] = []
    for f, comparison in enumerate(COMPARISONS):
        level = int(levels[f])
        if level < 0:
            continue
        words = _WORDS[level]
        if level == 1 and comparison.kind in ("name", "text"):
            words = "{label} nearly the same"
        (same if level == 0 else other).append(
            (float(ratio[f, level]), words.format(label=comparison.label))
        )
    agreeing = ", ".join(w for _, w in sorted(same, reverse=True)[:4])
    differing = ", ".join(w for _, w in sorted(other, reverse=True)[:3])
    text = "; ".join(part for part in (agreeing, differing) if part)
    return text[:1].upper() + text[1:] if text else "Nothing known to compare"
